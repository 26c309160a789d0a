package proxy

import (
	"sync/atomic"
	"time"

	"github.com/keep-vip/keep-vip/balancer/internal/policy"
	"github.com/keep-vip/keep-vip/balancer/internal/reactor"
	"github.com/keep-vip/keep-vip/rpc/limits"
	"golang.org/x/sys/unix"
)

// TCPServer proxies each client connection to one backend, byte for byte,
// on the balancer's reactors: each loop accepts from its own duplicate of
// the listening socket and owns the connections it accepted.
type TCPServer struct {
	env   *Env
	lb    atomic.Pointer[policy.LoadBalancer]
	loops []*tcpLoop
	count reactor.ConnCount
	// cut: drain's deadline passed; connections still connecting close
	// too.
	cut atomic.Bool
}

// tcpLoop is a tcp server's part of one reactor.
type tcpLoop struct {
	s         *TCPServer
	r         *reactor.Loop
	ln        *reactor.Listener
	conns     map[*tcpConn]struct{}
	stopCheck func()
}

// ServeTCP serves lb on sock, on every event loop of env.
func ServeTCP(env *Env, sock *reactor.Socket, lb *policy.LoadBalancer) *TCPServer {
	s := &TCPServer{env: env}
	s.lb.Store(lb)
	for _, r := range env.Loops.Loops {
		l := &tcpLoop{s: s, r: r, conns: map[*tcpConn]struct{}{}}
		if l.ln, l.stopCheck = startLoop(env, r, sock, l, &s.lb); l.ln != nil {
			s.loops = append(s.loops, l)
		}
	}
	return s
}

func (s *TCPServer) Current() *policy.LoadBalancer           { return s.lb.Load() }
func (s *TCPServer) Compatible(lb *policy.LoadBalancer) bool { return lb.Type == limits.TypeTCP }
func (s *TCPServer) Update(lb *policy.LoadBalancer)          { s.lb.Store(lb) }
func (s *TCPServer) Clients() int                            { return int(s.count.N.Load()) }

// Stop closes the server's duplicates of the listening socket; its
// connections go on.
func (s *TCPServer) Stop() {
	for _, l := range s.loops {
		l.ln.Stop()
	}
}

// Drain waits for the connections to end until deadline, then cuts those
// left.
func (s *TCPServer) Drain(deadline time.Time) {
	if !s.count.WaitEmpty(time.Until(deadline)) {
		s.cut.Store(true)
		for _, l := range s.loops {
			l.r.Do(func() {
				for c := range l.conns {
					c.close()
				}
			})
		}
	}
	for _, l := range s.loops {
		l.stopCheck()
	}
}

// check runs every checkEvery: connects past their deadline move on to
// the next backend, idle connections close.
func (l *tcpLoop) check(now time.Time) {
	for c := range l.conns {
		switch {
		case c.connecting && now.After(c.deadline):
			c.connectFailed(errConnectTimeout)
		case !c.connecting && c.lb.IdleTimeout > 0 && now.Sub(c.last) >= c.lb.IdleTimeout:
			c.close()
		}
	}
}

func (l *tcpLoop) cutting() bool { return l.s.cut.Load() }

func (l *tcpLoop) forget(c *tcpConn) {
	delete(l.conns, c)
	c.lb.Clients.Dec()
	l.s.count.Closed()
}

func (l *tcpLoop) open(fd int, sa unix.Sockaddr) {
	s := l.s
	if s.cut.Load() {
		unix.Close(fd)
		return
	}
	lb := s.lb.Load()
	c := (&tcpConn{r: l.r, env: s.env, home: l, lb: lb, client: sockaddrAddrPort(sa), last: l.r.Now,
		clientEnd:  tcpEnd{fd: fd, Readiness: reactor.Readiness{W: true}},
		backendEnd: tcpEnd{fd: -1},
	}).wire()
	if err := l.r.Add(fd, c, reactor.EvConn); err != nil {
		unix.Close(fd)
		return
	}
	l.conns[c] = struct{}{}
	s.count.Opened()
	c.counted = true
	lb.Clients.Inc()
	c.connectNext()
}
