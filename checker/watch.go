package checker

import (
	"context"
	"net"
	"net/netip"
	"time"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// The death watch. A poll finds a dead service only at its next round, up
// to one interval late. But when a local service's process exits or
// crashes, or closes its listener with its connections, the kernel closes
// every connection it had at once. So a tcp or http check of a local
// service keeps one idle connection to it, and the check runs as soon as
// that connection ends.
//
// What it sees at once: the process exiting (cleanly, killed, crashed),
// and the service closing or resetting the idle connection. What still
// waits for the next round: a service that hangs (SIGSTOP, a deadlock) with
// its sockets open, a listener closed while established connections stay
// up, and an http endpoint that starts answering errors.
//
// The verdict is unchanged: the early run is one run, which rise and fall
// count like any other. A watched connection is opened again only after a
// regular run has passed, and a service that merely closes idle
// connections (an http server's keep-alive timeout) costs at most one early
// run per interval.

// watchBuffer drains what a watched service may send (a banner).
const watchBuffer = 512

// deathWatch holds the idle connection of one check.
type deathWatch struct {
	address string
	timeout time.Duration
	arm     chan struct{} // the loop asks for a (new) watched connection
	wake    chan struct{} // the watched connection ended: run the check now
}

func newDeathWatch(address string, timeout time.Duration) *deathWatch {
	return &deathWatch{
		address: address,
		timeout: timeout,
		arm:     make(chan struct{}, 1),
		wake:    make(chan struct{}, 1),
	}
}

// rearm asks for a watched connection unless one is asked for already.
func (w *deathWatch) rearm() {
	select {
	case w.arm <- struct{}{}:
	default:
	}
}

// run connects on every arm and waits for the connection to end, until ctx
// ends.
func (w *deathWatch) run(ctx context.Context) {
	buf := make([]byte, watchBuffer)
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.arm:
		}
		dctx, cancel := context.WithTimeout(ctx, w.timeout)
		c, err := (&net.Dialer{}).DialContext(dctx, "tcp", w.address)
		cancel()
		if err != nil {
			continue // the regular run says what is wrong
		}
		stop := context.AfterFunc(ctx, func() { _ = c.Close() })
		for {
			if _, err := c.Read(buf); err != nil {
				break
			}
		}
		stop()
		_ = c.Close()
		if ctx.Err() != nil {
			return
		}
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// watchable tells whether a check gets a death watch: tcp, http and https
// checks, on when asked, off when asked, and otherwise on for an address of
// this host (a remote service's connection may also end on a middlebox's
// idle timeout or a network fault, which the regular round judges better).
func watchable(pc *pb.Check, local func(netip.Addr) bool) bool {
	switch pc.GetProtocol() {
	case ProtocolTCP, ProtocolHTTP, ProtocolHTTPS:
	default:
		return false
	}
	switch pc.GetWatch() {
	case pb.WatchMode_WATCH_ON:
		return true
	case pb.WatchMode_WATCH_OFF:
		return false
	}
	host, _, err := net.SplitHostPort(pc.GetAddress())
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && (a.IsLoopback() || local(a.Unmap()))
}

// hostAddress tells whether a is on one of this host's interfaces.
func hostAddress(a netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, ia := range addrs {
		if p, err := netip.ParsePrefix(ia.String()); err == nil && p.Addr().Unmap() == a {
			return true
		}
	}
	return false
}
