package reactor

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
type Socket struct {
	fd   int
	Addr net.Addr
	// group are the other sockets of a udp frontend served by several
	// loops (see openUDPGroup), bound to the same address.
	group []int
	once  sync.Once
}

// OpenSocket listens on bind: network is "tcp" or "udp".
func OpenSocket(ctx context.Context, network, bind string) (*Socket, error) {
	return openSocketWith(ctx, net.ListenConfig{}, network, bind)
}

func openSocketWith(ctx context.Context, lc net.ListenConfig, network, bind string) (*Socket, error) {
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
	return &Socket{fd: fd, Addr: addr}, nil
}

// OpenUDPGroup opens n udp sockets bound to the same address with
// SO_REUSEPORT, one per event loop: the kernel hashes each client's
// address to one of them, so a client's datagrams all reach the same loop
// and its session, while the clients spread over every loop (as nginx's
// "listen ... udp reuseport"). A port held by anyone else is refused
// first with a plain bind, as a single socket would be: the group does
// not quietly share a port with another process that also asked for
// SO_REUSEPORT.
func OpenUDPGroup(ctx context.Context, bind string, n int) (*Socket, error) {
	if n <= 1 {
		return OpenSocket(ctx, "udp", bind)
	}
	host, port, err := net.SplitHostPort(bind)
	if err != nil {
		return nil, err
	}
	if port != "0" && port != "" {
		probe, err := OpenSocket(ctx, "udp", bind)
		if err != nil {
			return nil, err
		}
		probe.Close()
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) }); err != nil {
			return err
		}
		return serr
	}}
	var group *Socket
	for range n {
		sock, err := openSocketWith(ctx, lc, "udp", bind)
		if err != nil {
			if group != nil {
				group.Close()
			}
			return nil, err
		}
		if group == nil {
			group = sock
			// The others bind the port the first was given.
			bind = net.JoinHostPort(host, fmt.Sprint(sock.Addr.(*net.UDPAddr).Port))
			continue
		}
		group.group = append(group.group, sock.fd)
	}
	return group, nil
}

// fds are the socket's descriptors: its own, then its group's.
func (s *Socket) Fds() []int { return append([]int{s.fd}, s.group...) }

// DupFD is another descriptor of one of a frontend's sockets, for an event
// loop to own.
func DupFD(fd int) (int, error) {
	return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
}

// close closes the frontend's descriptor; the socket stays open while a
// loop's duplicate does. Safe to call twice.
func (s *Socket) Close() {
	s.once.Do(func() {
		for _, fd := range s.Fds() {
			unix.Close(fd)
		}
	})
}

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
	if err := raw.Control(func(s uintptr) { fd, derr = DupFD(int(s)) }); err != nil {
		return -1, err
	}
	return fd, derr
}
