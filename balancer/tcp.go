package balancer

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"time"
)

// nilAddrPort lets the kernel choose the local address of a backend
// connection.
var nilAddrPort netip.AddrPort

// acceptor is a listening socket as a net.Listener whose Close only stops
// accepting: the socket stays open, so a server of another type can take it
// over without a moment of refused connections.
type acceptor struct {
	ln      *net.TCPListener
	stopped atomic.Bool
}

func newAcceptor(ln *net.TCPListener) *acceptor {
	// A server before this one may have stopped accepting with a deadline.
	ln.SetDeadline(time.Time{})
	return &acceptor{ln: ln}
}

func (a *acceptor) acceptTCP() (*net.TCPConn, error) {
	c, err := a.ln.AcceptTCP()
	if err != nil && a.stopped.Load() {
		return nil, net.ErrClosed
	}
	return c, err
}

func (a *acceptor) Accept() (net.Conn, error) {
	c, err := a.acceptTCP()
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Close ends a blocked Accept by a deadline in the past.
func (a *acceptor) Close() error {
	if a.stopped.CompareAndSwap(false, true) {
		a.ln.SetDeadline(time.Unix(1, 0))
	}
	return nil
}

func (a *acceptor) Addr() net.Addr { return a.ln.Addr() }

func dialBackend(ctx context.Context, lb *loadBalancer, be *backend) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: lb.connectTimeout}
	return d.DialTCP(ctx, "tcp", nilAddrPort, be.ap)
}

// addrOf is the IP of a TCP or UDP address, unmapped.
func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}
