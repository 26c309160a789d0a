package announcer

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
)

// speaker owns the interface's two announcement sockets, the ARP one for
// IPv4 VIPs and the NDP one for IPv6 VIPs, and opens each when it is first
// needed, and again after a send failed or the interface was recreated
// (a new index): a socket bound to an interface that is gone stays broken.
//
// Sockets are opened in the announcer's network namespace whatever thread
// the refresh runs on. Sends need no namespace: the ARP socket is bound to
// the interface index, and the NDP socket gives the kernel the index in
// every packet's control message.
type speaker struct {
	ns *netnsRef

	mu  sync.Mutex
	ifi *net.Interface
	arp *arpSender
	ndp *ndpSender
}

// reset closes the sockets and makes ifi the interface of the next ones.
func (s *speaker) reset(ifi *net.Interface) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.closeLocked()
	s.ifi = ifi
	return err
}

// interfaceIndex is the index of the interface the sockets are for, 0 when
// there is none.
func (s *speaker) interfaceIndex() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ifi == nil {
		return 0
	}
	return s.ifi.Index
}

// open4 and open6 open a socket now, so Configure can report a problem at
// once; announce opens whatever is missing anyway.
func (s *speaker) open4() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.arpLocked()
	return err
}

func (s *speaker) open6() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.ndpLocked(netip.Addr{})
	return err
}

func (s *speaker) arpLocked() (*arpSender, error) {
	if s.arp != nil {
		return s.arp, nil
	}
	if s.ifi == nil {
		return nil, fmt.Errorf("open arp socket: no interface")
	}
	err := s.ns.do(func() (err error) {
		s.arp, err = newARPSender(s.ifi)
		return err
	})
	return s.arp, err
}

// ndpLocked opens the NDP socket if need be; vip is its source should the
// interface have no usable link-local address (see ndpSender).
func (s *speaker) ndpLocked(vip netip.Addr) (*ndpSender, error) {
	if s.ndp != nil {
		return s.ndp, nil
	}
	if s.ifi == nil {
		return nil, fmt.Errorf("open ndp socket: no interface")
	}
	err := s.ns.do(func() (err error) {
		s.ndp, err = newNDPSender(s.ifi, vip)
		return err
	})
	return s.ndp, err
}

// announce sends one round of announcements for vip: a gratuitous ARP
// request and reply for IPv4, an unsolicited neighbour advertisement for
// IPv6. It returns how many packets went out. A socket that failed to send
// is closed, to be opened afresh by the next round.
func (s *speaker) announce(vip netip.Addr) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if vip.Is4() {
		arp, err := s.arpLocked()
		if err != nil {
			return 0, err
		}
		n, err := arp.gratuitous(vip)
		if err != nil {
			_ = arp.close()
			s.arp = nil
		}
		return n, err
	}
	nd, err := s.ndpLocked(vip)
	if err != nil {
		return 0, err
	}
	n, err := nd.advertise(vip)
	if err != nil {
		_ = nd.close()
		s.ndp = nil
	}
	return n, err
}

func (s *speaker) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeLocked()
}

func (s *speaker) closeLocked() error {
	var err4, err6 error
	if s.arp != nil {
		err4 = s.arp.close()
		s.arp = nil
	}
	if s.ndp != nil {
		err6 = s.ndp.close()
		s.ndp = nil
	}
	if err4 != nil {
		return err4
	}
	return err6
}
