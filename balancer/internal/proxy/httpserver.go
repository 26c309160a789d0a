package proxy

import (
	"sync/atomic"
	"time"

	"github.com/keep-vip/keep-vip/balancer/internal/policy"
	"github.com/keep-vip/keep-vip/balancer/internal/reactor"
	"github.com/keep-vip/keep-vip/rpc/limits"
	"golang.org/x/sys/unix"
)

// HTTPServer is a reverse proxy for HTTP/1.x on the balancer's reactors:
// each request goes to one backend over a keep-alive connection from that
// backend's pool, with the client's Host header kept and X-Forwarded-For
// and X-Forwarded-Proto set; WebSocket and other upgrades become tunnels.
// Heads are parsed and re-emitted (internal/httpwire), bodies pass through as
// they come.
type HTTPServer struct {
	env   *Env
	lb    atomic.Pointer[policy.LoadBalancer]
	loops []*httpLoop
	count reactor.ConnCount
	// proxyProtocol is the PROXY protocol version the server was built
	// with: another version needs another server (see Compatible).
	proxyProtocol int
	// stopping: no keep-alive after the response in flight; cut: drain's
	// deadline passed.
	stopping, cut atomic.Bool
}

// httpLoop is an http server's part of one reactor: its client
// connections, upgraded tunnels and keep-alive pools.
type httpLoop struct {
	s         *HTTPServer
	r         *reactor.Loop
	ln        *reactor.Listener
	conns     map[*httpConn]struct{}
	tunnels   map[*tcpConn]struct{}
	pools     map[*policy.BackendState]*upstreamPool
	stopCheck func()
}

// ServeHTTP serves lb on sock, on every event loop of env.
func ServeHTTP(env *Env, sock *reactor.Socket, lb *policy.LoadBalancer) *HTTPServer {
	s := &HTTPServer{env: env, proxyProtocol: lb.ProxyProtocol}
	s.lb.Store(lb)
	for _, r := range env.Loops.Loops {
		l := &httpLoop{s: s, r: r, conns: map[*httpConn]struct{}{}, tunnels: map[*tcpConn]struct{}{}, pools: map[*policy.BackendState]*upstreamPool{}}
		if l.ln, l.stopCheck = startLoop(env, r, sock, l, &s.lb); l.ln != nil {
			s.loops = append(s.loops, l)
		}
	}
	return s
}

func (s *HTTPServer) Current() *policy.LoadBalancer { return s.lb.Load() }

func (s *HTTPServer) Compatible(lb *policy.LoadBalancer) bool {
	return lb.Type == limits.TypeHTTP && lb.ProxyProtocol == s.proxyProtocol
}

func (s *HTTPServer) Update(lb *policy.LoadBalancer) { s.lb.Store(lb) }
func (s *HTTPServer) Clients() int                   { return int(s.count.N.Load()) }

// Stop ends accepting; idle keep-alive connections close now, busy ones
// after their response.
func (s *HTTPServer) Stop() {
	s.stopping.Store(true)
	for _, l := range s.loops {
		l.ln.Stop()
		l.r.Do(func() {
			for c := range l.conns {
				if c.state == hsIdle && len(c.fromClient) == 0 {
					c.close()
				}
			}
		})
	}
}

// Drain lets requests in flight finish until deadline, then cuts what is
// left, tunnels included, and closes the pools.
func (s *HTTPServer) Drain(deadline time.Time) {
	if !s.count.WaitEmpty(time.Until(deadline)) {
		s.cut.Store(true)
		for _, l := range s.loops {
			l.r.Do(func() {
				for c := range l.conns {
					c.close()
				}
				for t := range l.tunnels {
					t.close()
				}
			})
		}
	}
	for _, l := range s.loops {
		l.r.Do(func() {
			for st, p := range l.pools {
				p.closeAll()
				delete(l.pools, st)
			}
		})
		l.stopCheck()
	}
}

func (l *httpLoop) cutting() bool { return l.s.cut.Load() }

// forget ends the accounting of an upgraded connection.
func (l *httpLoop) forget(t *tcpConn) {
	delete(l.tunnels, t)
	t.lb.Clients.Dec()
	l.s.count.Closed()
}

// check runs every checkEvery: timeouts of clients and backends, and the
// pools' idle connections.
func (l *httpLoop) check(now time.Time) {
	for c := range l.conns {
		c.checkTimeouts(now)
	}
	for t := range l.tunnels {
		if t.lb.IdleTimeout > 0 && now.Sub(t.last) >= t.lb.IdleTimeout {
			t.close()
		}
	}
	lb := l.s.lb.Load()
	live := make(map[*policy.BackendState]bool, len(lb.Backends))
	for _, be := range lb.Backends {
		live[be.State] = true
	}
	for st, p := range l.pools {
		if !live[st] {
			p.closeAll()
			delete(l.pools, st)
			continue
		}
		p.sweep(now, lb.IdleTimeout)
	}
}

func (l *httpLoop) open(fd int, sa unix.Sockaddr) {
	s := l.s
	if s.stopping.Load() {
		unix.Close(fd)
		return
	}
	lb := s.lb.Load()
	c := &httpConn{l: l, lb: lb, fd: fd, client: sockaddrAddrPort(sa), Readiness: reactor.Readiness{W: true}, last: l.r.Now, fromClient: make([]byte, 0, 4096)}
	c.ip = c.client.Addr().Unmap().AppendTo(nil)
	if err := l.r.Add(fd, c, reactor.EvConn); err != nil {
		unix.Close(fd)
		return
	}
	l.conns[c] = struct{}{}
	s.count.Opened()
	lb.Clients.Inc()
}
