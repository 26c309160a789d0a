package reactor

import (
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// EnablePktinfo asks a udp socket bound to a wildcard address to report
// each datagram's destination address, so replies can leave from the
// address the client wrote to (the VIP) rather than whichever address the
// route prefers. It returns the IP version of the control messages, or 0
// for a socket bound to one address, which needs none.
func EnablePktinfo(fd int, addr net.Addr) (int, error) {
	la, ok := addr.(*net.UDPAddr)
	if !ok || !la.IP.IsUnspecified() {
		return 0, nil
	}
	v := 6
	err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
	if la.IP.To4() != nil {
		v = 4
		err = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
	}
	if err != nil {
		return 0, err
	}
	return v, nil
}

// PktinfoDst finds the destination address in a datagram's control
// messages. It runs once per udp session, not per datagram.
func PktinfoDst(oob []byte) (netip.Addr, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return netip.Addr{}, false
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= unix.SizeofInet4Pktinfo:
			// struct in_pktinfo { int ipi_ifindex; in_addr ipi_spec_dst; in_addr ipi_addr; }
			return netip.AddrFrom4([4]byte(m.Data[8:12])), true
		case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= unix.SizeofInet6Pktinfo:
			// struct in6_pktinfo { in6_addr ipi6_addr; int ipi6_ifindex; }
			return netip.AddrFrom16([16]byte(m.Data[0:16])), true
		}
	}
	return netip.Addr{}, false
}

// PktinfoSrc builds the control message that sends a reply from src.
func PktinfoSrc(v int, src netip.Addr) []byte {
	if v == 4 {
		return unix.PktInfo4(&unix.Inet4Pktinfo{Spec_dst: src.Unmap().As4()})
	}
	return unix.PktInfo6(&unix.Inet6Pktinfo{Addr: src.As16()})
}
