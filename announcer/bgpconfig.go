package announcer

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// BGP defaults and bounds.
const (
	// DefaultBGPHoldTime is short on purpose: a holder that crashed cannot
	// withdraw its route, and the router drops it when the hold timer
	// expires. The term-ordered MED makes the router prefer the new holder
	// before that; the hold time bounds how long the dead route lingers.
	DefaultBGPHoldTime = 9 * time.Second
	// MinBGPHoldTime is RFC 4271's smallest hold time other than zero.
	MinBGPHoldTime = 3 * time.Second
	MaxBGPHoldTime = 65535 * time.Second
	// bgpConnectRetry is how soon a session that failed is tried again.
	bgpConnectRetry = 3 * time.Second
	// maxMD5Password is the longest TCP MD5 key Linux takes.
	maxMD5Password = 80
	// asTrans is RFC 6793's AS_TRANS, reserved; 4294967295 is reserved too.
	asTrans = 23456
	maxASN  = 4294967294
)

// bgpConfig is a validated pb.BgpConfig.
type bgpConfig struct {
	asn         uint32
	routerID    netip.Addr
	peers       []bgpPeer
	communities []uint32
}

// bgpPeer is one router to advertise the VIPs of its address family to.
type bgpPeer struct {
	addr     netip.Addr
	asn      uint32
	password string
	hold     time.Duration
	multihop uint32
	port     uint32
	// local is the session's source address (bindSources); invalid: the
	// kernel's choice at connect time.
	local netip.Addr
}

// parseBGP checks c against vips; nil config and nil error when BGP is
// not configured (no message, or an empty one).
func parseBGP(c *pb.BgpConfig, vips []netip.Addr) (*bgpConfig, error) {
	if c == nil || (c.GetAsn() == 0 && c.GetRouterId() == "" && len(c.GetPeers()) == 0 && len(c.GetCommunities()) == 0) {
		return nil, nil
	}
	out := &bgpConfig{asn: c.GetAsn()}
	if err := checkASN(out.asn); err != nil {
		return nil, fmt.Errorf("bgp.asn %d: %w", out.asn, err)
	}
	id, err := netip.ParseAddr(c.GetRouterId())
	switch {
	case c.GetRouterId() == "":
		return nil, errors.New("bgp.routerID: missing; give an IPv4 address unique to this member")
	case err != nil || !id.Unmap().Is4() || id.IsUnspecified():
		return nil, fmt.Errorf("bgp.routerID %q: must be an IPv4 address other than 0.0.0.0", c.GetRouterId())
	}
	out.routerID = id.Unmap()
	if len(c.GetPeers()) == 0 {
		return nil, errors.New("bgp.peers: none; give at least one router to advertise the VIPs to")
	}
	seen := map[netip.Addr]bool{}
	for i, p := range c.GetPeers() {
		peer, err := parseBGPPeer(p)
		if err != nil {
			return nil, fmt.Errorf("bgp.peers[%d].%w", i, err)
		}
		if seen[peer.addr] {
			return nil, fmt.Errorf("bgp.peers[%d].address %s: listed twice", i, peer.addr)
		}
		seen[peer.addr] = true
		out.peers = append(out.peers, peer)
	}
	for _, vip := range vips {
		if len(out.peersFor(vip)) == 0 {
			return nil, fmt.Errorf("bgp.peers: no %s peer to advertise vip %s to", family(vip), vip)
		}
	}
	for i, s := range c.GetCommunities() {
		v, err := parseCommunity(s)
		if err != nil {
			return nil, fmt.Errorf("bgp.communities[%d] %q: %w", i, s, err)
		}
		out.communities = append(out.communities, v)
	}
	return out, nil
}

func parseBGPPeer(p *pb.BgpPeer) (bgpPeer, error) {
	addr, err := netip.ParseAddr(p.GetAddress())
	switch {
	case p.GetAddress() == "":
		return bgpPeer{}, errors.New("address: missing")
	case err != nil || addr.Zone() != "":
		return bgpPeer{}, fmt.Errorf("address %q: not an IP address", p.GetAddress())
	case addr.IsUnspecified() || addr.IsMulticast() || addr.IsLinkLocalUnicast():
		return bgpPeer{}, fmt.Errorf("address %s: not a unicast address a session can go to", addr)
	}
	out := bgpPeer{addr: addr.Unmap(), asn: p.GetAsn(), password: p.GetPassword(), multihop: p.GetMultihopTtl(), port: p.GetPort()}
	if err := checkASN(out.asn); err != nil {
		return bgpPeer{}, fmt.Errorf("asn %d: %w", out.asn, err)
	}
	if len(out.password) > maxMD5Password {
		return bgpPeer{}, fmt.Errorf("password: longer than %d bytes", maxMD5Password)
	}
	switch ms := p.GetHoldTimeMs(); {
	case ms == 0:
		out.hold = DefaultBGPHoldTime
	case ms%1000 != 0 || time.Duration(ms)*time.Millisecond < MinBGPHoldTime || time.Duration(ms)*time.Millisecond > MaxBGPHoldTime:
		return bgpPeer{}, fmt.Errorf("holdTime %s: must be whole seconds between %s and %s", time.Duration(ms)*time.Millisecond, MinBGPHoldTime, MaxBGPHoldTime)
	default:
		out.hold = time.Duration(ms) * time.Millisecond
	}
	if out.multihop > 255 {
		return bgpPeer{}, fmt.Errorf("multihop %d: a TTL is at most 255", out.multihop)
	}
	if out.port > 65535 {
		return bgpPeer{}, fmt.Errorf("port %d: not a TCP port", out.port)
	}
	return out, nil
}

func checkASN(asn uint32) error {
	switch {
	case asn == 0 || asn > maxASN:
		return fmt.Errorf("must be between 1 and %d", uint32(maxASN))
	case asn == asTrans:
		return errors.New("is AS_TRANS, reserved")
	}
	return nil
}

// parseCommunity reads a standard community, "AS:value".
func parseCommunity(s string) (uint32, error) {
	hi, lo, ok := strings.Cut(s, ":")
	if !ok {
		return 0, errors.New(`not a community; write it "AS:value"`)
	}
	h, err1 := strconv.ParseUint(hi, 10, 16)
	l, err2 := strconv.ParseUint(lo, 10, 16)
	if err1 != nil || err2 != nil {
		return 0, errors.New("both halves must be numbers from 0 to 65535")
	}
	return uint32(h)<<16 | uint32(l), nil
}

// peersFor lists the peers vip is advertised to: those of its family.
func (c *bgpConfig) peersFor(vip netip.Addr) []bgpPeer {
	var out []bgpPeer
	for _, p := range c.peers {
		if p.addr.Is4() == vip.Is4() {
			out = append(out, p)
		}
	}
	return out
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}
