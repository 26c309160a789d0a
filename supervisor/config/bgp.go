package config

import (
	"fmt"
	"math"
	"net/netip"
	"time"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// BGP is the announcer's BGP mode: the holder advertises each VIP as a
// host route to the peers (routers). The announcer validates it (over the
// Validate RPC, like the rest of its part); the supervisor only decodes
// the keys and fills in the router id.
type BGP struct {
	ASN int64 `koanf:"asn"`
	// RouterID defaults to this member's address when that is IPv4.
	RouterID    string    `koanf:"routerid"`
	Peers       []BGPPeer `koanf:"peers"`
	Communities []string  `koanf:"communities"`
}

// BGPPeer is one router.
type BGPPeer struct {
	Address  string        `koanf:"address"`
	ASN      int64         `koanf:"asn"`
	Password string        `koanf:"password"`
	HoldTime time.Duration `koanf:"holdtime"`
	Multihop int64         `koanf:"multihop"`
	Port     int64         `koanf:"port"`
}

// proto is the section as the announcer gets it for member local; nil
// when the file has no bgp section.
func (b BGP) proto(local Member) *pb.BgpConfig {
	if b.ASN == 0 && b.RouterID == "" && len(b.Peers) == 0 && len(b.Communities) == 0 {
		return nil
	}
	out := &pb.BgpConfig{Asn: uint32(b.ASN), RouterId: b.RouterID, Communities: b.Communities}
	if out.RouterId == "" {
		if ap, err := netip.ParseAddrPort(local.Address); err == nil && ap.Addr().Unmap().Is4() {
			out.RouterId = ap.Addr().Unmap().String()
		}
	}
	for _, p := range b.Peers {
		out.Peers = append(out.Peers, &pb.BgpPeer{
			Address: p.Address, Asn: uint32(p.ASN), Password: p.Password,
			HoldTimeMs: p.HoldTime.Milliseconds(), MultihopTtl: uint32(p.Multihop), Port: uint32(p.Port),
		})
	}
	return out
}

// AnnouncerConfigFor is AnnouncerConfig with the bgp section, for member
// local: what a running announcer is configured with. A scrub, which only
// takes VIPs off the interface, speaks to no router and uses
// AnnouncerConfig.
func (c *Config) AnnouncerConfigFor(local Member) *pb.AnnouncerConfig {
	out := c.AnnouncerConfig()
	out.Bgp = c.BGP.proto(local)
	return out
}

// validateBGP checks only that the numbers fit the announcer's message
// (32 bits, not negative): what they mean is the announcer's to check.
func (c *Config) validateBGP(bad func(string, ...any)) {
	fits := func(key string, v int64) {
		if v < 0 || v > math.MaxUint32 {
			bad("%s: %d is out of range (0 to %d)", key, v, uint32(math.MaxUint32))
		}
	}
	fits("bgp.asn", c.BGP.ASN)
	for i, p := range c.BGP.Peers {
		key := fmt.Sprintf("bgp.peers[%d]", i)
		fits(key+".asn", p.ASN)
		fits(key+".multihop", p.Multihop)
		fits(key+".port", p.Port)
		if p.HoldTime < 0 {
			bad("%s.holdTime: %s is negative", key, p.HoldTime)
		}
	}
}
