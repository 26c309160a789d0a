package balancer

import (
	"context"
	"fmt"
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// socket is a frontend's listening (tcp) or receiving (udp) socket as a
// bare descriptor, watched by the event loops only. Go opens it, for its
// address rules (a wildcard bind address serves IPv4 and IPv6 alike), and
// then lets go of it: a socket left in Go's netpoller as well would wake
// an idle runtime thread for every datagram or connection that arrives,
// to find no goroutine waiting (measured: 38k wakeups a second, a quarter
// of the udp load balancer's throughput).
type socket struct {
	fd   int
	addr net.Addr
	once sync.Once
}

// openSocket listens on bind: network is "tcp" or "udp".
func openSocket(ctx context.Context, network, bind string) (*socket, error) {
	var lc net.ListenConfig
	var c syscallConn
	var addr net.Addr
	if network == "udp" {
		pc, err := lc.ListenPacket(ctx, network, bind)
		if err != nil {
			return nil, err
		}
		c, addr = pc.(*net.UDPConn), pc.LocalAddr()
	} else {
		ln, err := lc.Listen(ctx, network, bind)
		if err != nil {
			return nil, err
		}
		c, addr = ln.(*net.TCPListener), ln.Addr()
	}
	defer c.Close()
	fd, err := dupSocket(c)
	if err != nil {
		return nil, fmt.Errorf("take socket %s from Go's netpoller: %w", addr, err)
	}
	return &socket{fd: fd, addr: addr}, nil
}

// dup is another descriptor of the socket, for an event loop to own.
func (s *socket) dup() (int, error) {
	return unix.FcntlInt(uintptr(s.fd), unix.F_DUPFD_CLOEXEC, 0)
}

// close closes the frontend's descriptor; the socket stays open while a
// loop's duplicate does. Safe to call twice.
func (s *socket) close() { s.once.Do(func() { unix.Close(s.fd) }) }

type syscallConn interface {
	SyscallConn() (syscall.RawConn, error)
	Close() error
}

// dupSocket duplicates the descriptor under one of Go's sockets.
func dupSocket(c syscallConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := raw.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	return fd, derr
}
