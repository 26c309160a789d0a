//go:build !linux

package balancer

import (
	"net"
	"net/netip"
)

// Elsewhere than Linux: no idle timeout on tcp connections and replies of a
// udp load balancer bound to a wildcard address leave from the address the
// route prefers.
func enablePktinfo(*net.UDPConn) (int, error) { return 0, nil }
func pktinfoDst([]byte) (netip.Addr, bool)    { return netip.Addr{}, false }
func pktinfoSrc(int, netip.Addr) []byte       { return nil }
