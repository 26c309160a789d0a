package announcer

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
)

// ErrNoLinkLocal is wrapped by the error of opening the NDP socket on an
// interface without a usable IPv6 link-local address.
var ErrNoLinkLocal = errors.New("no usable IPv6 link-local address")

// ndpSender sends unsolicited neighbour advertisements for IPv6 VIPs out of
// one interface: the IPv6 counterpart of arpSender.
//
// The socket is bound to the interface's IPv6 link-local address, the usual
// source of neighbour discovery messages. An interface with IPv6 disabled
// has none, and one whose link just came up has it tentative (unusable)
// until duplicate address detection is done, about a second: then the
// socket is bound to the VIP being announced instead, which this package
// adds without DAD, so the burst on acquire is not lost. Any address of the
// interface is a valid source of an unsolicited advertisement (RFC 4861
// 7.2.4), and receivers check none.
type ndpSender struct {
	ifname string
	hw     net.HardwareAddr
	src    netip.Addr

	mu   sync.Mutex // guards conn against a send racing close
	conn *ndp.Conn
}

// newNDPSender opens the socket, bound to the link-local address or else
// to fallback (if valid). It reads the interface's addresses and opens the
// socket in the calling thread's network namespace.
func newNDPSender(ifi *net.Interface, fallback netip.Addr) (*ndpSender, error) {
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("open ndp socket on %s: no ethernet address", ifi.Name)
	}
	conn, src, err := ndp.Listen(ifi, ndp.LinkLocal)
	if err != nil && fallback.Is6() {
		var ferr error
		if conn, src, ferr = ndp.Listen(ifi, ndp.Addr(fallback.String())); ferr != nil {
			err = fmt.Errorf("%w; nor from %s: %v", err, fallback, ferr)
		} else {
			err = nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open ndp socket on %s: %w: neighbour advertisements are sent from the interface's IPv6 link-local address; is IPv6 enabled on %s, its link up and duplicate address detection done? (%v)",
			ifi.Name, ErrNoLinkLocal, ifi.Name, err)
	}
	// The socket only sends. Blocking every ICMPv6 type keeps the segment's
	// ICMPv6 traffic from piling up in a receive queue no one reads.
	var block ipv6.ICMPFilter
	block.SetAll(true)
	if err := conn.SetICMPFilter(&block); err != nil {
		conn.Close()
		return nil, fmt.Errorf("open ndp socket on %s: set icmp filter: %w", ifi.Name, err)
	}
	return &ndpSender{ifname: ifi.Name, hw: ifi.HardwareAddr, src: src.WithZone(""), conn: conn}, nil
}

// advertise sends one unsolicited neighbour advertisement for vip to
// all-nodes (ff02::1): override set, so hosts replace the link-layer
// address they have for vip; solicited clear, as RFC 4861 7.2.6 wants of an
// unsolicited one (hosts drop a multicast advertisement with it set); the
// target link-layer address option carries our MAC. Like a gratuitous ARP
// it updates existing neighbour entries and creates none. It returns how
// many packets went out.
func (s *ndpSender) advertise(vip netip.Addr) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return 0, fmt.Errorf("send neighbour advertisement for %s on %s: socket closed", vip, s.ifname)
	}
	na := &ndp.NeighborAdvertisement{
		Override:      true,
		TargetAddress: vip,
		Options: []ndp.Option{
			&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: s.hw},
		},
	}
	if err := s.conn.WriteTo(na, nil, netip.IPv6LinkLocalAllNodes()); err != nil {
		return 0, fmt.Errorf("send neighbour advertisement for %s from %s on %s: %w", vip, s.src, s.ifname, err)
	}
	return 1, nil
}

func (s *ndpSender) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	if err != nil {
		return fmt.Errorf("close ndp socket on %s: %w", s.ifname, err)
	}
	return nil
}
