package announcer

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/keep-vip/keep-vip/rpc/limits"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// DefaultRefreshInterval is used when the config leaves refresh_interval_ms
// at 0: often enough that a switch or host that missed the first
// announcement learns the VIP's new owner soon, rarely enough to be noise.
const DefaultRefreshInterval = 10 * time.Second

// MinRefreshInterval keeps a typo from flooding the segment with broadcasts.
const MinRefreshInterval = 10 * time.Millisecond

// The burst on acquire and its bounds are the contract's (rpc/limits),
// shared with the supervisor's config.
const (
	DefaultBurstCount    = limits.DefaultBurstCount
	DefaultBurstInterval = limits.DefaultBurstInterval
	MaxBurstCount        = limits.MaxBurstCount
	MinBurstInterval     = limits.MinBurstInterval
	MaxBurstInterval     = limits.MaxBurstInterval
)

// config is a validated pb.AnnouncerConfig.
type config struct {
	ifname  string
	vips    []netip.Addr
	refresh time.Duration
	// burst announcements go out on acquire (the first at once), spacing
	// apart, before the refresh takes over.
	burst   int
	spacing time.Duration
	// bgp is nil when BGP mode is off; bgpRaw is the message it came from.
	bgp    *bgpConfig
	bgpRaw *pb.BgpConfig
}

// has4 and has6 tell whether any VIP is IPv4 (announced by ARP) or IPv6
// (announced by neighbour advertisements).
func (c config) has4() bool { return slices.ContainsFunc(c.vips, netip.Addr.Is4) }
func (c config) has6() bool { return slices.ContainsFunc(c.vips, netip.Addr.Is6) }

// parseConfig checks everything that can be checked without the kernel;
// whether the interface exists is Configure's business.
func parseConfig(c *pb.AnnouncerConfig) (config, error) {
	if c == nil {
		return config{}, errors.New("no announcer config")
	}
	out := config{ifname: c.GetInterface()}
	if out.ifname == "" {
		return config{}, errors.New("no interface")
	}
	if len(c.GetVips()) == 0 {
		return config{}, fmt.Errorf("interface %s: no vips", out.ifname)
	}
	seen := make(map[netip.Addr]bool, len(c.GetVips()))
	for _, s := range c.GetVips() {
		vip, err := limits.ParseVIP(s)
		if err != nil {
			return config{}, fmt.Errorf("vip %w", err)
		}
		if seen[vip] {
			return config{}, fmt.Errorf("vip %s: listed twice", vip)
		}
		seen[vip] = true
		out.vips = append(out.vips, vip)
	}
	switch ms := c.GetRefreshIntervalMs(); {
	case ms == 0:
		out.refresh = DefaultRefreshInterval
	case ms < 0 || time.Duration(ms)*time.Millisecond < MinRefreshInterval:
		return config{}, fmt.Errorf("refresh_interval_ms %d: below the minimum of %s", ms, MinRefreshInterval)
	default:
		out.refresh = time.Duration(ms) * time.Millisecond
	}
	switch n := c.GetBurstCount(); {
	case n == 0:
		out.burst = DefaultBurstCount
	case n < 0 || n > MaxBurstCount:
		return config{}, fmt.Errorf("burst_count %d: must be between 1 and %d", n, MaxBurstCount)
	default:
		out.burst = int(n)
	}
	switch ms := c.GetBurstIntervalMs(); {
	case ms == 0:
		out.spacing = DefaultBurstInterval
	case ms < 0 || time.Duration(ms)*time.Millisecond < MinBurstInterval || time.Duration(ms)*time.Millisecond > MaxBurstInterval:
		return config{}, fmt.Errorf("burst_interval_ms %d: must be between %s and %s", ms, MinBurstInterval, MaxBurstInterval)
	default:
		out.spacing = time.Duration(ms) * time.Millisecond
	}
	bgp, err := parseBGP(c.GetBgp(), out.vips)
	if err != nil {
		return config{}, err
	}
	if bgp != nil {
		out.bgp, out.bgpRaw = bgp, c.GetBgp()
	}
	return out, nil
}
