package config

import (
	"net/netip"
	"time"

	"github.com/keep-vip/keep-vip/rpc/limits"
)

// Defaults and bounds of the announce keys, the announcer's own.
const (
	DefaultBurstCount    = limits.DefaultBurstCount
	DefaultBurstInterval = limits.DefaultBurstInterval
	maxBurstCount        = limits.MaxBurstCount
	minBurstInterval     = limits.MinBurstInterval
	maxBurstInterval     = limits.MaxBurstInterval
)

// Announce tunes how the holder tells the segment about the VIPs: on
// acquire, burstCount gratuitous ARPs (IPv4) or unsolicited neighbour
// advertisements (IPv6) per VIP, burstInterval apart; then one every
// ChecksInterval while it holds them.
type Announce struct {
	BurstCount    int           `koanf:"burstcount"`
	BurstInterval time.Duration `koanf:"burstinterval"`
}

// VIPList is every VIP, vip first and then vips in order, each once: they
// all move together with leadership. Addresses that do not parse are left
// out (Validate reports them).
func (c *Config) VIPList() []netip.Addr {
	var out []netip.Addr
	seen := map[netip.Addr]bool{}
	for _, s := range append([]string{c.VIP}, c.VIPs...) {
		a, err := limits.ParseVIP(s)
		if err != nil || seen[a] {
			continue
		}
		seen[a] = true
		out = append(out, a)
	}
	return out
}

// fillVIP makes vip the first of vips when only vips is given, so vip is
// always the first VIP: what logs and the original metric labels show. A
// first entry that is not a valid VIP is left for Validate to report under
// its own key.
func (c *Config) fillVIP() {
	if c.VIP != "" || len(c.VIPs) == 0 {
		return
	}
	if _, err := limits.ParseVIP(c.VIPs[0]); err == nil {
		c.VIP = c.VIPs[0]
	}
}

// validateVIPs checks vip and every vips[i]. One of the two keys must give
// an address; an address in both, or twice in vips, counts once.
func (c *Config) validateVIPs(bad func(string, ...any)) {
	if c.VIP == "" && len(c.VIPs) == 0 {
		bad("vip: missing; give the virtual IP address, e.g. 172.16.0.100 (or several under vips)")
	}
	if c.VIP != "" {
		if _, err := limits.ParseVIP(c.VIP); err != nil {
			bad("vip: %v", err)
		}
	}
	for i, s := range c.VIPs {
		if _, err := limits.ParseVIP(s); err != nil {
			bad("vips[%d]: %v", i, err)
		}
	}
}

func (c *Config) validateAnnounce(bad func(string, ...any)) {
	if n := c.Announce.BurstCount; n < 1 || n > maxBurstCount {
		bad("announce.burstCount: %d must be between 1 and %d", n, maxBurstCount)
	}
	if d := c.Announce.BurstInterval; d < minBurstInterval || d > maxBurstInterval {
		bad("announce.burstInterval: %s must be between %s and %s", d, minBurstInterval, maxBurstInterval)
	}
}
