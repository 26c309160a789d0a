package proxy

import (
	"time"

	"github.com/keep-vip/keep-vip/balancer/internal/policy"
	"github.com/keep-vip/keep-vip/balancer/internal/reactor"
	"golang.org/x/sys/unix"
)

// httpMaxIdlePerBackend is how many idle keep-alive connections each
// backend's pool keeps per loop (nginx's upstream keepalive).
const httpMaxIdlePerBackend = 256

// IdleCheckAfter is how long a pooled connection may sit idle before its
// reuse peeks whether the backend closed it. The loop also drops idle
// connections the moment epoll reports them closed; the peek covers a
// close that raced with the reuse. A variable for tests.
var IdleCheckAfter = time.Second

// upstream is a connection to a backend: in a pool while idle, owned by
// one client connection while it carries a request.
type upstream struct {
	l  *httpLoop
	fd int
	be *policy.Backend
	reactor.Readiness
	reused    bool
	owner     *httpConn
	idleSince time.Time
}

func (u *upstream) Event(fd int, ev uint32) {
	if u.owner == nil {
		if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			// Idle, and the backend closed it or sent something
			// unasked: it cannot carry a request.
			u.l.pool(u.be.State).remove(u)
			u.close()
		}
		return
	}
	u.Note(ev)
	u.owner.wake()
}

func (u *upstream) close() {
	if u.fd >= 0 {
		u.l.r.CloseFD(u.fd)
		u.fd = -1
	}
}

// upstreamPool is one backend's idle keep-alive connections on one loop,
// the most recently used last.
type upstreamPool struct{ idle []*upstream }

func (l *httpLoop) pool(st *policy.BackendState) *upstreamPool {
	p := l.pools[st]
	if p == nil {
		p = &upstreamPool{}
		l.pools[st] = p
	}
	return p
}

func (p *upstreamPool) remove(u *upstream) {
	for i, x := range p.idle {
		if x == u {
			p.idle = append(p.idle[:i], p.idle[i+1:]...)
			return
		}
	}
}

func (p *upstreamPool) closeAll() {
	for _, u := range p.idle {
		u.close()
	}
	p.idle = nil
}

func (p *upstreamPool) sweep(now time.Time, idle time.Duration) {
	keep := p.idle[:0]
	for _, u := range p.idle {
		if now.Sub(u.idleSince) >= idle {
			u.close()
			continue
		}
		keep = append(keep, u)
	}
	clear(p.idle[len(keep):])
	p.idle = keep
}

// get returns an idle connection to be, or nil.
func (p *upstreamPool) get(now time.Time) *upstream {
	for len(p.idle) > 0 {
		u := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if now.Sub(u.idleSince) < IdleCheckAfter || peekAlive(u.fd) {
			return u
		}
		u.close()
	}
	return nil
}

func (p *upstreamPool) put(u *upstream, now time.Time) bool {
	if len(p.idle) >= httpMaxIdlePerBackend {
		return false
	}
	u.owner, u.idleSince, u.reused, u.R = nil, now, true, false
	p.idle = append(p.idle, u)
	return true
}

// peekAlive: an idle connection the backend has neither closed nor sent
// anything on.
func peekAlive(fd int) bool {
	var b [1]byte
	_, _, err := unix.Recvfrom(fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
	return err == unix.EAGAIN
}
