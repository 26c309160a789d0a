package announcer

import (
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
)

// arpSender sends gratuitous ARP for VIPs out of one interface.
//
// It uses a raw packet socket rather than arp.Dial, which insists on the
// interface having an IPv4 address of its own: a VIP interface need not.
type arpSender struct {
	ifname string
	hw     net.HardwareAddr

	mu   sync.Mutex // guards conn against a send racing close
	conn *packet.Conn
}

func newARPSender(ifi *net.Interface) (*arpSender, error) {
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("open arp socket on %s: no ethernet address", ifi.Name)
	}
	// The socket only sends. Dropping everything in the kernel keeps the
	// segment's ARP traffic from piling up in a receive queue no one reads.
	dropAll, err := bpf.Assemble([]bpf.Instruction{bpf.RetConstant{Val: 0}})
	if err != nil {
		return nil, fmt.Errorf("open arp socket on %s: %w", ifi.Name, err)
	}
	conn, err := packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeARP), &packet.Config{Filter: dropAll})
	if err != nil {
		return nil, fmt.Errorf("open arp socket on %s: %w", ifi.Name, err)
	}
	return &arpSender{ifname: ifi.Name, hw: ifi.HardwareAddr, conn: conn}, nil
}

// gratuitous broadcasts vip's binding to our MAC in both forms hosts act
// on: an ARP request (RFC 5227 announcement: target MAC zero) and an ARP
// reply (RFC 2002: target MAC our own, which Linux requires to treat a reply
// as gratuitous). Sender and target IP are the VIP in both. It returns how
// many packets went out.
func (s *arpSender) gratuitous(vip netip.Addr) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return 0, fmt.Errorf("send gratuitous arp for %s on %s: socket closed", vip, s.ifname)
	}
	sent := 0
	for _, f := range []struct {
		op       arp.Operation
		targetHW net.HardwareAddr
	}{
		{arp.OperationRequest, net.HardwareAddr{0, 0, 0, 0, 0, 0}},
		{arp.OperationReply, s.hw},
	} {
		frame, err := garpFrame(f.op, s.hw, f.targetHW, vip)
		if err == nil {
			_, err = s.conn.WriteTo(frame, &packet.Addr{HardwareAddr: ethernet.Broadcast})
		}
		if err != nil {
			return sent, fmt.Errorf("send gratuitous arp %s for %s on %s: %w", f.op, vip, s.ifname, err)
		}
		sent++
	}
	return sent, nil
}

// garpFrame is one gratuitous ARP packet for vip in a broadcast frame.
func garpFrame(op arp.Operation, hw, targetHW net.HardwareAddr, vip netip.Addr) ([]byte, error) {
	p, err := arp.NewPacket(op, hw, vip, targetHW, vip)
	if err != nil {
		return nil, err
	}
	payload, err := p.MarshalBinary()
	if err != nil {
		return nil, err
	}
	f := &ethernet.Frame{
		Destination: ethernet.Broadcast,
		Source:      hw,
		EtherType:   ethernet.EtherTypeARP,
		Payload:     payload,
	}
	return f.MarshalBinary()
}

func (s *arpSender) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	if err != nil {
		return fmt.Errorf("close arp socket on %s: %w", s.ifname, err)
	}
	return nil
}
