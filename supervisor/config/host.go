package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/rs/zerolog"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// PluginPaths maps each plugin kind to the binary the config names, or "".
func (c *Config) PluginPaths() map[string]string {
	return map[string]string{
		"elector":   c.Plugins.Elector,
		"announcer": c.Plugins.Announcer,
		"checker":   c.Plugins.Checker,
		"balancer":  c.Plugins.Balancer,
	}
}

// LocalMember finds this host's member: the one named by id, else the one
// whose address is on a local interface. localAddrs is nil for this host.
func (c *Config) LocalMember(localAddrs []netip.Addr) (Member, error) {
	if c.ID != "" {
		for _, m := range c.Members {
			if m.ID == c.ID {
				return m, nil
			}
		}
		return Member{}, fmt.Errorf("id: %q is not the id of any member", c.ID)
	}
	if localAddrs == nil {
		var err error
		if localAddrs, err = HostAddrs(); err != nil {
			return Member{}, err
		}
	}
	local := map[netip.Addr]bool{}
	for _, a := range localAddrs {
		local[a.Unmap()] = true
	}
	var found []Member
	for _, m := range c.Members {
		ap, err := netip.ParseAddrPort(m.Address)
		if err == nil && local[ap.Addr().Unmap()] {
			found = append(found, m)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return Member{}, errors.New("members: no member's address is on this host; set id to choose one")
	default:
		ids := make([]string, len(found))
		for i, m := range found {
			ids[i] = m.ID
		}
		return Member{}, fmt.Errorf("members: %s all have addresses on this host; set id to choose one", strings.Join(ids, ", "))
	}
}

// HostAddrs lists the addresses on this host's interfaces.
func HostAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list local addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr())
		}
	}
	return out, nil
}

// CheckHost checks what depends on this host: the interface exists and one
// member is this host. It is what `validate --host` adds to Validate.
func (c *Config) CheckHost() (Member, error) {
	var errs []error
	if _, err := net.InterfaceByName(c.Interface); err != nil {
		errs = append(errs, fmt.Errorf("interface: %q is not an interface on this host", c.Interface))
	}
	m, err := c.LocalMember(nil)
	if err != nil {
		errs = append(errs, err)
	}
	if err := c.checkRaftTLS(); err != nil {
		errs = append(errs, err)
	}
	return m, errors.Join(errs...)
}

// LogLevel is the parsed log.level.
func (c *Config) LogLevel() zerolog.Level {
	l, _ := parseLevel(c.Log.Level)
	return l
}

func parseLevel(s string) (zerolog.Level, error) {
	switch strings.ToLower(s) {
	case "trace", "debug", "info", "warn", "error":
		return zerolog.ParseLevel(strings.ToLower(s))
	}
	return zerolog.NoLevel, fmt.Errorf("unknown level %q", s)
}

// AnnouncerConfig is the announcer plugin's part of the config.
func (c *Config) AnnouncerConfig() *pb.AnnouncerConfig {
	out := &pb.AnnouncerConfig{
		Interface:         c.Interface,
		RefreshIntervalMs: c.ChecksInterval.Milliseconds(),
		BurstCount:        int32(c.Announce.BurstCount),
		BurstIntervalMs:   c.Announce.BurstInterval.Milliseconds(),
	}
	for _, vip := range c.VIPList() {
		out.Vips = append(out.Vips, vip.String())
	}
	return out
}
