package balancer

import (
	"errors"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/keep-vip/keep-vip/balancer/internal/httpwire"
	"github.com/keep-vip/keep-vip/balancer/internal/policy"
	"github.com/keep-vip/keep-vip/balancer/internal/proxyheader"
	"github.com/keep-vip/keep-vip/balancer/internal/reactor"
	"golang.org/x/sys/unix"
)

// httpServer is a reverse proxy for HTTP/1.x on the balancer's reactors:
// each request goes to one backend over a keep-alive connection from that
// backend's pool, with the client's Host header kept and X-Forwarded-For
// and X-Forwarded-Proto set; WebSocket and other upgrades become tunnels.
// Heads are parsed and re-emitted (internal/httpwire), bodies pass through as
// they come.
type httpServer struct {
	b     *Balancer
	lb    atomic.Pointer[policy.LoadBalancer]
	loops []*httpLoop
	count reactor.ConnCount
	// What the server was built with: another value needs another
	// server (see compatible).
	pp int
	// stopping: no keep-alive after the response in flight; cut: drain's
	// deadline passed.
	stopping, cut atomic.Bool
}

// httpLoop is an http server's part of one reactor: its client
// connections, upgraded tunnels and keep-alive pools.
type httpLoop struct {
	s       *httpServer
	r       *reactor.Loop
	ln      *reactor.Listener
	conns   map[*httpConn]struct{}
	tunnels map[*tcpConn]struct{}
	pools   map[*policy.BackendState]*upstreamPool
	stopT   func()
}

// httpHoldHead is how long a response head waits for the first bytes of
// its body, to leave with them in one segment.
const httpHoldHead = time.Millisecond

// httpMaxIdlePerBackend is how many idle keep-alive connections each
// backend's pool keeps per loop (nginx's upstream keepalive).
const httpMaxIdlePerBackend = 256

// idleCheckAfter is how long a pooled connection may sit idle before its
// reuse peeks whether the backend closed it. The loop also drops idle
// connections the moment epoll reports them closed; the peek covers a
// close that raced with the reuse. A variable for tests.
var idleCheckAfter = time.Second

func (b *Balancer) serveHTTP(sock *reactor.Socket, lb *policy.LoadBalancer) *httpServer {
	s := &httpServer{b: b, pp: lb.ProxyProtocol}
	s.lb.Store(lb)
	for _, r := range b.loops.Loops {
		l := &httpLoop{s: s, r: r, conns: map[*httpConn]struct{}{}, tunnels: map[*tcpConn]struct{}{}, pools: map[*policy.BackendState]*upstreamPool{}}
		if l.ln, l.stopT = b.startLoop(r, sock, l, &s.lb); l.ln != nil {
			s.loops = append(s.loops, l)
		}
	}
	return s
}

func (s *httpServer) current() *policy.LoadBalancer { return s.lb.Load() }
func (s *httpServer) compatible(lb *policy.LoadBalancer) bool {
	return lb.Type == TypeHTTP && lb.ProxyProtocol == s.pp
}
func (s *httpServer) update(lb *policy.LoadBalancer) { s.lb.Store(lb) }
func (s *httpServer) clients() int                   { return int(s.count.N.Load()) }

// stop ends accepting; idle keep-alive connections close now, busy ones
// after their response.
func (s *httpServer) stop() {
	s.stopping.Store(true)
	for _, l := range s.loops {
		l.ln.Stop()
		l.r.Do(func() {
			for c := range l.conns {
				if c.state == hsIdle && len(c.in) == 0 {
					c.close()
				}
			}
		})
	}
}

// drain lets requests in flight finish until deadline, then cuts what is
// left, tunnels included, and closes the pools.
func (s *httpServer) drain(deadline time.Time) {
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
		l.stopT()
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
		if now.Sub(u.idleSince) < idleCheckAfter || peekAlive(u.fd) {
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

// httpState is where a client connection is in its exchange. Each state
// says what the connection waits for, and the transitions are few:
//
//	hsIdle → hsConnect (a new backend connection) or hsAwaitHead (a
//	pooled one) once a request head parsed; hsClosing when it did not.
//	hsConnect → hsAwaitHead once connected; to hsConnect or hsAwaitHead
//	again with the next backend when the connect failed.
//	hsAwaitHead → hsRelay with the final answer's head (interim ones
//	pass on in hsAwaitHead); to the next backend, or an error answer.
//	hsRelay → hsIdle (keep-alive) or hsClosing at the answer's end.
//	hsClosing → hsLinger once the last answer is out.
//
// An accepted upgrade leaves the machine: the connection becomes a tunnel.
// The request body goes up in hsAwaitHead and hsRelay alike (a backend may
// answer before it has all of it): reqBody says how far it is.
type httpState uint8

const (
	hsIdle      httpState = iota // waiting for a request head
	hsConnect                    // the request waits for a new backend connection
	hsAwaitHead                  // the request goes to the backend, its answer's head is awaited
	hsRelay                      // the answer's body goes to the client
	hsClosing                    // flushing the last answer, then closing
	hsLinger                     // answer out, write side closed, waiting for the client's end
)

// httpLinger bounds the wait for a client's end after the last answer
// (nginx's lingering_time is 30 s; a proxy's clients have no more to send
// than a request).
const httpLinger = 2 * time.Second

// httpConn is one client connection and the request it carries: the
// client's side here, and the request, the backend and the response each
// in its own part.
type httpConn struct {
	l      *httpLoop
	lb     *policy.LoadBalancer // the config that accepted it, for its gauge
	fd     int
	client netip.AddrPort
	ip     []byte // the client's address for X-Forwarded-For
	reactor.Readiness
	eof     bool
	state   httpState
	done    bool
	in, out []byte // from the client not yet used; to it not yet written
	last    time.Time
	// headStart: when the first byte of the request head now awaited
	// came.
	headStart   time.Time
	lingerUntil time.Time
	// skippedEmpty: the empty line a request may follow was skipped.
	skippedEmpty bool
	// queued: a later call is asked for.
	queued bool

	httpRequest
	httpBackendSide
	httpResponse
}

// httpRequest is the request an httpConn carries now, as parsed and
// passed on.
type httpRequest struct {
	rlb       *policy.LoadBalancer // the config the request runs under
	isHead    bool
	upgrade   bool
	http10    bool // an HTTP/1.0 client: no interim answers, no chunks
	keepAlive bool
	retryable bool
	fwd       []byte // the head as the backend gets it
	reqBody   httpwire.BodyReader
	bodySent  bool
	start     time.Time
	tried     policy.TriedSet
	attempted bool
	timedOut  bool
	fresh     bool // the next backend connection must be a new one
}

// httpBackendSide is the backend an httpConn's request went to, and its
// connection.
type httpBackendSide struct {
	be       *policy.Backend
	u        *upstream
	pp       *upstream // with the PROXY protocol: this client's idle one
	uin      []byte    // from the backend not yet used
	uout     []byte    // to the backend not yet written
	deadline time.Time
	// accounted: the answer is in the metrics.
	accounted bool
}

// httpResponse is the backend's answer to an httpConn's request, on its
// way to the client.
type httpResponse struct {
	resp     httpwire.ResponseHead
	respBody httpwire.BodyReader
	clientKA bool // the client connection stays open after the response
	// hold: a response head waits for its body (see httpHoldHead).
	hold bool
	// heldFrom is where the held head starts in out.
	heldFrom int
}

func (l *httpLoop) open(fd int, sa unix.Sockaddr) {
	s := l.s
	if s.stopping.Load() {
		unix.Close(fd)
		return
	}
	lb := s.lb.Load()
	c := &httpConn{l: l, lb: lb, fd: fd, client: sockaddrAddrPort(sa), Readiness: reactor.Readiness{W: true}, last: l.r.Now, in: make([]byte, 0, 4096)}
	c.ip = c.client.Addr().Unmap().AppendTo(nil)
	if err := l.r.Add(fd, c, reactor.EvConn); err != nil {
		unix.Close(fd)
		return
	}
	l.conns[c] = struct{}{}
	s.count.Opened()
	lb.Clients.Inc()
}

func (c *httpConn) Event(fd int, ev uint32) {
	switch ev {
	case 0:
		// The I/O the events asked for (see tcpConn.Event).
		c.queued = false
		c.run()
	case reactor.EvHeld:
		// A response head waited long enough for its body.
		c.hold = false
		c.run()
	default:
		c.Note(ev)
		c.wake()
	}
}

// wake runs the connection once the loop has polled again (see
// tcpConn.event).
func (c *httpConn) wake() {
	if !deferIO {
		c.run()
		return
	}
	if !c.queued {
		c.queued = true
		c.l.r.Later(c.fd, c)
	}
}

// httpBudget bounds the steps one event takes, so that one fast
// connection cannot starve the loop.
const httpBudget = 32

// run moves the connection on as far as its sockets allow.
func (c *httpConn) run() {
	for range httpBudget {
		if c.done || !c.step() {
			return
		}
	}
	if !c.done && !c.queued {
		c.queued = true
		c.l.r.Later(c.fd, c)
	}
}

// step makes one move; false when it waits for a socket.
func (c *httpConn) step() bool {
	if len(c.out) > 0 && !c.hold {
		if !c.flushOut() {
			return false
		}
		if len(c.out) > 0 {
			// The client is slow: read no more for it until it
			// catches up.
			return false
		}
	}
	switch c.state {
	case hsIdle:
		return c.readRequest()
	case hsConnect, hsAwaitHead, hsRelay:
		return c.exchange()
	case hsClosing:
		if c.eof {
			c.close()
			return false
		}
		// Lingering close, as nginx's: the answer is out, but bytes the
		// client sent that were not read would make close send a reset,
		// which can destroy the answer before the client reads it. So
		// the write side closes, and what comes is read and dropped
		// until the client closes too, or httpLinger passes.
		unix.Shutdown(c.fd, unix.SHUT_WR)
		c.state, c.lingerUntil = hsLinger, c.l.r.Now.Add(httpLinger)
		return true
	case hsLinger:
		for c.R {
			n, err := reactor.SysRead(c.fd, c.l.r.Scratch)
			switch {
			case err == unix.EAGAIN:
				c.R = false
			case err == unix.EINTR:
			case err != nil || n == 0:
				c.close()
				return false
			}
		}
	}
	return false
}

// flushOut writes what the client is owed; false when the connection
// failed and was closed.
func (c *httpConn) flushOut() bool {
	for len(c.out) > 0 && c.W {
		n, ok := c.writeClient(c.out)
		if !ok {
			return false
		}
		c.out = c.out[:copy(c.out, c.out[n:])]
	}
	return true
}

// writeClient writes what of p the client's socket takes now; false when
// the connection failed and was closed.
func (c *httpConn) writeClient(p []byte) (int, bool) {
	for c.W {
		n, err := reactor.SysWrite(c.fd, p)
		switch {
		case err == unix.EAGAIN:
			c.W = false
			return 0, true
		case err == unix.EINTR:
			continue
		case err != nil:
			c.abort(499)
			return 0, false
		}
		if n < len(p) {
			c.W = false
		}
		return n, true
	}
	return 0, true
}

// readClient reads from the client into c.in; false when there was
// nothing to read (or the client is gone: c.eof).
func (c *httpConn) readClient() bool {
	if !c.R || c.eof {
		return false
	}
	if cap(c.in)-len(c.in) < 1024 {
		c.in = append(c.in, make([]byte, cap(c.in))...)[:len(c.in)]
	}
	buf := c.in[len(c.in):cap(c.in)]
	n, err := reactor.SysRead(c.fd, buf)
	switch {
	case err == unix.EAGAIN:
		c.R = false
		return false
	case err == unix.EINTR:
		return true
	case err != nil || n == 0:
		c.eof = true
		return true
	}
	if n < len(buf) && !c.Rdhup {
		c.R = false
	}
	c.in = c.in[:len(c.in)+n]
	c.last = c.l.r.Now
	return true
}

// readRequest waits for a whole request head, then starts the request.
func (c *httpConn) readRequest() bool {
	if !c.skippedEmpty {
		// One empty line before a request line is ignored (RFC 9112
		// 2.2): some clients end a body with one more CRLF. One only,
		// so that a trickle of them still meets the head's timeout.
		if n := httpwire.EmptyLine(c.in); n > 0 {
			c.in = c.in[:copy(c.in, c.in[n:])]
			c.skippedEmpty = true
		}
	}
	end := httpwire.HeadEnd(c.in)
	if end > httpwire.MaxHead {
		c.refuse(&httpwire.Error{Code: 431, Msg: "request head too large"})
		return true
	}
	if end < 0 {
		switch {
		case len(c.in) >= httpwire.MaxHead:
			c.refuse(&httpwire.Error{Code: 431, Msg: "request head too large"})
			return true
		case c.eof:
			c.close()
			return false
		}
		empty := len(c.in) == 0
		more := c.readClient()
		if empty && len(c.in) > 0 {
			c.headStart = c.l.r.Now
		}
		return more
	}
	var h httpwire.RequestHead
	if err := httpwire.ParseRequest(c.in[:end], &h); err != nil {
		var he *httpwire.Error
		if !errors.As(err, &he) {
			he = &httpwire.Error{Code: 400, Msg: err.Error()}
		}
		c.refuse(he)
		return true
	}
	c.rlb, c.skippedEmpty = c.l.s.lb.Load(), false
	c.isHead, c.upgrade, c.http10 = h.IsHead(), h.WantsUpgrade(), h.Minor == 0
	c.keepAlive = h.KeepAlive && h.Minor == 1
	m := string(h.Method)
	c.retryable = (h.Body.Length <= 0 && !h.Body.Chunked) &&
		(m == "GET" || m == "HEAD" || m == "OPTIONS" || m == "TRACE" || m == "PUT" || m == "DELETE")
	c.fwd = httpwire.AppendRequest(c.fwd[:0], c.in[:end], &h, c.ip, c.localAddr)
	if !h.Body.Chunked && h.Body.Length < 0 {
		h.Body.Length = 0
	}
	c.reqBody = httpwire.NewBodyReader(h.Body, false)
	if !c.reqBody.Valid(c.in[end:]) {
		// Chunks already here that no backend may see: refused before
		// one is chosen.
		c.refuse(&httpwire.Error{Code: 400, Msg: httpwire.ErrChunked.Error()})
		return true
	}
	c.bodySent = false
	c.in = c.in[:copy(c.in, c.in[end:])]
	c.start = c.l.r.Now
	c.tried, c.attempted, c.timedOut, c.fresh = policy.TriedSet{}, false, false, false
	c.connect()
	return true
}

// localAddr is the address the client connected to.
func (c *httpConn) localAddr() string {
	sa, err := unix.Getsockname(c.fd)
	if err != nil {
		return "localhost"
	}
	return sockaddrAddrPort(sa).String()
}

// refuse answers a request the proxy will not pass on, and closes.
func (c *httpConn) refuse(he *httpwire.Error) {
	c.l.s.lb.Load().OwnAnswers.Request(he.Code)
	// The request did not parse, so its method is unknown: the answer
	// has its body, and the connection ends after it.
	c.out = appendError(c.out, he.Code, statusText(he.Code)+": "+he.Msg, false, false)
	c.state = hsClosing
}

// connect hands the request to the next backend the algorithm picks, over
// a pooled connection or a new one; with none left it answers 502, 503 or
// 504.
func (c *httpConn) connect() {
	b, lb := c.l.s.b, c.rlb
	src := lb.HashKey(c.client)
	for {
		be := b.judge.Pick(lb, src, &c.tried)
		if be == nil {
			c.noBackend()
			return
		}
		c.tried.Add(be.Index)
		c.attempted = true
		u, connecting, err := c.upstreamFor(be)
		if err != nil {
			if b.judge.ConnectFailed(be, err) {
				c.outOfResources()
				return
			}
			b.log.Debug().Err(err).Str("balancer", lb.Name).Str("backend", be.Name).Msg("backend connect failed, trying the next")
			continue
		}
		c.be, c.u, u.owner = be, u, c
		be.State.Active.Add(1)
		be.Metrics.Active.Inc()
		c.uout = append(c.uout[:0], c.fwd...)
		if connecting {
			c.state = hsConnect
			c.deadline = c.l.r.Now.Add(lb.ConnectTimeout)
			if lb.ProxyProtocol > 0 {
				local, _ := unix.Getsockname(c.fd)
				var hb headerBuffer
				if err := proxyheader.Write(&hb, lb.ProxyProtocol, net.TCPAddrFromAddrPort(c.client), net.TCPAddrFromAddrPort(sockaddrAddrPort(local))); err == nil {
					c.uout = append(hb.b, c.uout...)
				}
			}
		} else {
			c.state = hsAwaitHead
			c.deadline = c.l.r.Now.Add(lb.IdleTimeout)
		}
		c.uin, c.accounted = c.uin[:0], false
		return
	}
}

// upstreamFor is a connection to be: the client's own with the PROXY
// protocol, else a pooled one, else a new one: connecting.
func (c *httpConn) upstreamFor(be *policy.Backend) (u *upstream, connecting bool, err error) {
	now := c.l.r.Now
	if c.rlb.ProxyProtocol > 0 {
		if u := c.pp; u != nil {
			c.pp = nil
			if u.be.State == be.State && !c.fresh && (now.Sub(u.idleSince) < idleCheckAfter || peekAlive(u.fd)) {
				return u, false, nil
			}
			u.close()
		}
	} else if !c.fresh {
		if u := c.l.pool(be.State).get(now); u != nil {
			u.be = be
			return u, false, nil
		}
	}
	fd, err := connectNonblock(be.AddrPort)
	if err != nil {
		return nil, false, err
	}
	u = &upstream{l: c.l, fd: fd, be: be}
	if err := c.l.r.Add(fd, u, reactor.EvConn); err != nil {
		unix.Close(fd)
		return nil, false, err
	}
	return u, true, nil
}

// noBackend answers when no backend took the request.
func (c *httpConn) noBackend() {
	lb := c.rlb
	c.l.s.b.judge.WarnNoBackend(lb, c.attempted)
	code, msg := 503, "every backend is down"
	switch {
	case c.timedOut:
		code, msg = 504, "no backend answered in time"
	case c.attempted:
		code, msg = 502, "no backend answered"
	}
	c.answerNone(code, statusText(code)+": "+msg)
}

// outOfResources answers a request the balancer could not pass on for
// want of its own resources (see localfault.go): no backend is to blame,
// and none is tried.
func (c *httpConn) outOfResources() {
	c.answerNone(503, "Service Unavailable: the proxy is out of resources")
}

// answerNone ends the request with an answer no backend gave.
func (c *httpConn) answerNone(code int, msg string) {
	lb := c.rlb
	lb.OwnAnswers.Request(code)
	c.l.s.b.m.Duration.WithLabelValues(lb.Name, policy.BackendNone).Observe(c.l.r.Now.Sub(c.start).Seconds())
	c.answerError(code, msg)
}

// answerError ends the request with an error of the proxy's own.
func (c *httpConn) answerError(code int, msg string) {
	c.clientKA = c.keepAlive && c.reqBody.Done && !c.l.s.stopping.Load()
	c.out = appendError(c.out, code, msg, c.clientKA, c.isHead)
	c.endRequest()
}

// endRequest returns to waiting for the next request, or closes.
func (c *httpConn) endRequest() {
	c.be = nil
	if c.clientKA {
		c.state = hsIdle
		// A pipelined request's head began now, for its timeout.
		c.headStart = c.l.r.Now
		return
	}
	c.state = hsClosing
}

// exchange moves the request to the backend and the response back.
func (c *httpConn) exchange() bool {
	u := c.u
	if u == nil {
		return false
	}
	if c.reqBody.Done && c.R && !c.eof && len(c.in) < httpwire.MaxHead {
		// What the client sends meanwhile is its next request; reading
		// it is also how its end is seen.
		c.readClient()
	}
	if c.eof && c.reqBody.Done {
		// The client is gone: its request's backend work is abandoned
		// (nginx's 499), rather than its socket left in CLOSE-WAIT until
		// the answer.
		c.abort(499)
		return false
	}
	if c.state == hsConnect {
		if !u.W {
			return false
		}
		if errno, err := unix.GetsockoptInt(u.fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || errno != 0 {
			if err == nil {
				err = unix.Errno(errno)
			}
			c.connectFailed(err)
			return true
		}
		c.state = hsAwaitHead
		c.l.s.b.judge.ConnectOK(c.be)
		c.be.Metrics.Conns.Inc()
		c.deadline = c.l.r.Now.Add(c.rlb.IdleTimeout)
	}
	progress := false
	// The request, head then body, to the backend.
	for len(c.uout) > 0 && u.W {
		n, err := reactor.SysWrite(u.fd, c.uout)
		switch {
		case err == unix.EAGAIN:
			u.W = false
			continue
		case err == unix.EINTR:
			continue
		case err != nil:
			c.backendFailed(err)
			return true
		}
		c.be.Metrics.ToBackend.Add(float64(n))
		if c.state == hsAwaitHead {
			// The backend has the idle timeout to answer from the
			// last byte of the request.
			c.deadline = c.l.r.Now.Add(c.rlb.IdleTimeout)
		}
		c.uout = c.uout[:copy(c.uout, c.uout[n:])]
		if len(c.uout) > 0 {
			u.W = false
		}
		progress = true
	}
	if len(c.uout) == 0 && !c.reqBody.Done {
		if len(c.in) > 0 {
			n, err := c.reqBody.Take(c.in)
			if err != nil {
				c.badBody()
				return false
			}
			c.uout = append(c.uout, c.in[:n]...)
			c.in = c.in[:copy(c.in, c.in[n:])]
			c.bodySent = true
			progress = true
		} else if c.eof {
			// The client left in the middle of its body.
			c.abort(499)
			return false
		} else if c.R && u.W {
			if ended, more := c.forwardBody(); ended {
				return more
			}
			progress = true
		}
	}
	// The response.
	if c.state == hsAwaitHead {
		return c.readResponseHead() || progress
	}
	return c.relayResponse() || progress
}

// forwardBody reads the request body into the loop's buffer and writes it
// on to the backend from there, copying only what the backend cannot take
// at once. ended: the request ended (given up, or answered with an error),
// and more is what exchange returns then.
func (c *httpConn) forwardBody() (ended, more bool) {
	scratch := c.l.r.Scratch
	n, err := reactor.SysRead(c.fd, scratch)
	switch {
	case err == unix.EAGAIN:
		c.R = false
		return false, false
	case err == unix.EINTR:
		return false, false
	case err != nil || n == 0:
		c.eof = true
		return false, false
	}
	if n < len(scratch) && !c.Rdhup {
		c.R = false
	}
	c.last = c.l.r.Now
	k, err := c.reqBody.Take(scratch[:n])
	if err != nil {
		c.badBody()
		return true, false
	}
	// Bytes past the body's end are the next request's.
	c.in = append(c.in, scratch[k:n]...)
	c.bodySent = true
	data := scratch[:k]
	w, err := reactor.SysWrite(c.u.fd, data)
	switch {
	case err == unix.EAGAIN:
		c.u.W, w = false, 0
	case err == unix.EINTR:
		w = 0
	case err != nil:
		c.backendFailed(err)
		return true, true
	default:
		c.be.Metrics.ToBackend.Add(float64(w))
		if c.state == hsAwaitHead {
			c.deadline = c.l.r.Now.Add(c.rlb.IdleTimeout)
		}
	}
	c.uout = append(c.uout, data[w:]...)
	return false, false
}

// readUpstream reads from the backend into c.uin.
func (c *httpConn) readUpstream() (n int, err error) {
	if cap(c.uin)-len(c.uin) < 1024 {
		c.uin = append(c.uin, make([]byte, max(cap(c.uin), 4096))...)[:len(c.uin)]
	}
	n, err = c.readUpstreamInto(c.uin[len(c.uin):cap(c.uin)])
	c.uin = c.uin[:len(c.uin)+n]
	return n, err
}

// readUpstreamInto reads from the backend into buf.
func (c *httpConn) readUpstreamInto(buf []byte) (n int, err error) {
	u := c.u
	if !u.R {
		return 0, unix.EAGAIN
	}
	n, err = reactor.SysRead(u.fd, buf)
	switch {
	case err == unix.EAGAIN:
		u.R = false
		return 0, err
	case err != nil:
		return 0, err
	}
	if n < len(buf) && !u.Rdhup {
		u.R = false
	}
	if n > 0 {
		c.be.Metrics.ToClient.Add(float64(n))
		c.last = c.l.r.Now
	}
	return n, nil
}

func (c *httpConn) readResponseHead() bool {
	for {
		end := httpwire.HeadEnd(c.uin)
		if end > 0 && end <= httpwire.MaxHead {
			return c.startResponse(end)
		}
		if end > 0 || len(c.uin) >= httpwire.MaxHead {
			c.backendFailed(errors.New("response head too large"))
			return true
		}
		n, err := c.readUpstream()
		switch {
		case err == unix.EAGAIN:
			return false
		case err == unix.EINTR:
			continue
		case err != nil || n == 0:
			if err == nil {
				err = errors.New("backend closed the connection")
			}
			c.backendFailed(err)
			return true
		}
	}
}

// startResponse passes on the response head in c.uin[:end].
func (c *httpConn) startResponse(end int) bool {
	if err := httpwire.ParseResponse(c.uin[:end], c.isHead, &c.resp); err != nil {
		c.backendFailed(err)
		return true
	}
	code := c.resp.Code
	if code < 200 && code != 101 {
		// Interim (100 Continue, 103): passed on, but never to an
		// HTTP/1.0 client (RFC 9110 15.2); the final answer follows.
		if !c.http10 {
			c.out = httpwire.AppendResponse(c.out, c.uin[:end], &c.resp, true, false)
		}
		c.uin = c.uin[:copy(c.uin, c.uin[end:])]
		return true
	}
	if c.http10 && c.resp.Body.Chunked {
		// The request went as HTTP/1.0: chunks are the backend's fault,
		// and the client could not read them.
		c.backendFailed(errors.New("chunked answer to an HTTP/1.0 request"))
		return true
	}
	c.state = hsRelay
	if code == 101 {
		if !c.upgrade {
			c.backendFailed(errors.New("unasked protocol switch"))
			return true
		}
		c.out = httpwire.AppendResponse(c.out, c.uin[:end], &c.resp, false, true)
		c.uin = c.uin[:copy(c.uin, c.uin[end:])]
		c.tunnel()
		return false
	}
	if br := httpwire.NewBodyReader(c.resp.Body, c.resp.CloseDelimited); !br.Valid(c.uin[end:]) {
		// Broken chunks already here: a 502 rather than half an answer.
		c.backendFailed(httpwire.ErrChunked)
		return true
	}
	c.clientKA = c.keepAlive && !c.resp.CloseDelimited && !c.l.s.stopping.Load()
	c.heldFrom = len(c.out)
	c.out = httpwire.AppendResponse(c.out, c.uin[:end], &c.resp, c.clientKA, false)
	c.uin = c.uin[:copy(c.uin, c.uin[end:])]
	c.respBody = httpwire.NewBodyReader(c.resp.Body, c.resp.CloseDelimited)
	// On with the body at once: head and body leave in one write, one
	// segment for a small response, as nginx's writev sends them. A
	// backend that wrote its head and body apart (nginx does: writev,
	// then sendfile) sends the body microseconds later: the head waits
	// for it up to httpHoldHead (nginx's postpone_output waits for 1460
	// bytes or the end, however long).
	if len(c.uin) == 0 && !c.respBody.Done {
		c.hold = true
		c.l.r.HoldUntil(c.fd, c, c.l.r.Now.Add(httpHoldHead))
	}
	c.relayResponse()
	return true
}

// relayResponse passes the body on until its end.
func (c *httpConn) relayResponse() bool {
	for {
		if len(c.uin) > 0 {
			k, ok := c.passBody(c.uin)
			if !ok {
				// Cut (done), or answered with a 502: then on.
				return !c.done
			}
			c.uin = c.uin[:copy(c.uin, c.uin[k:])]
		}
		if c.respBody.Done {
			c.finish()
			return true
		}
		if len(c.out) > 0 && !c.hold {
			return false // the client first
		}
		// The body is read into the loop's buffer and written on from
		// there: only what the client cannot take at once is copied.
		scratch := c.l.r.Scratch
		n, err := c.readUpstreamInto(scratch)
		switch {
		case err == unix.EAGAIN:
			return false
		case err == unix.EINTR:
			continue
		case err != nil || n == 0:
			if c.resp.CloseDelimited && err == nil {
				c.respBody.Done = true
				continue
			}
			c.responseBroke(errors.New("the backend broke off the body"))
			return !c.done
		}
		k, ok := c.passBody(scratch[:n])
		if !ok {
			return !c.done
		}
		// Bytes past the body's end: the backend said more than the
		// response; the connection will not be reused (see finish).
		c.uin = append(c.uin, scratch[k:n]...)
	}
}

// passBody sends the client what of p belongs to the response body, how
// much that was, and false when the connection was given up. A held head
// leaves with it.
func (c *httpConn) passBody(p []byte) (int, bool) {
	k, err := c.respBody.Take(p)
	if err != nil {
		c.responseBroke(err)
		return 0, false
	}
	if c.respBody.Done {
		// Counted before the client can see the end.
		c.account(c.resp.Code)
	}
	if k == 0 {
		return 0, true
	}
	c.hold = false
	data := p[:k]
	if len(c.out) == 0 {
		w, ok := c.writeClient(data)
		if !ok {
			return 0, false
		}
		data = data[w:]
	}
	c.out = append(c.out, data...)
	return k, c.flushOut()
}

// account records the request's answer, once.
func (c *httpConn) account(code int) {
	if c.accounted {
		return
	}
	c.accounted = true
	c.be.Metrics.Request(code)
	c.be.Metrics.Duration.Observe(time.Since(c.start).Seconds())
}

// finish accounts the request and frees its backend connection.
func (c *httpConn) finish() {
	u, be := c.u, c.be
	// A head held for its body leaves now, whatever the body was (a
	// close-delimited one may be empty).
	c.hold = false
	c.account(c.resp.Code)
	c.releaseBackend()
	if c.resp.Reusable && c.reqBody.Done && len(c.uin) == 0 && len(c.uout) == 0 && !c.l.s.stopping.Load() {
		if c.rlb.ProxyProtocol > 0 {
			u.owner, u.idleSince, u.reused, u.R = nil, c.l.r.Now, true, false
			c.pp = u
		} else if !c.l.pool(be.State).put(u, c.l.r.Now) {
			u.close()
		}
	} else {
		u.close()
	}
	if !c.reqBody.Done {
		c.clientKA = false
	}
	c.endRequest()
}

// releaseBackend ends the request's hold on its backend.
func (c *httpConn) releaseBackend() {
	if c.u == nil {
		return
	}
	c.be.State.Active.Add(-1)
	c.be.Metrics.Active.Dec()
	c.u.owner = nil
	c.u = nil
}

// connectFailed moves the request on to the next backend.
func (c *httpConn) connectFailed(err error) {
	be := c.be
	c.releaseBackendClosing()
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		c.timedOut = true
	}
	if c.l.s.b.judge.ConnectFailed(be, err) {
		c.outOfResources()
		return
	}
	c.l.s.b.log.Debug().Err(err).Str("balancer", c.rlb.Name).Str("backend", be.Name).Msg("backend connect failed, trying the next")
	c.connect()
}

func (c *httpConn) releaseBackendClosing() {
	u := c.u
	c.releaseBackend()
	if u != nil {
		u.close()
	}
}

// backendFailed: the backend connection broke before a response head. A
// reused connection the backend had closed is retried once on a new one
// when the request can be sent again; else the client gets 502, or 504.
func (c *httpConn) backendFailed(err error) {
	be, u := c.be, c.u
	if u.reused && !c.bodySent && c.retryable && len(c.uin) == 0 && !c.fresh && c.state != hsRelay {
		c.releaseBackendClosing()
		c.fresh = true
		c.tried = policy.TriedSet{}
		c.connect()
		return
	}
	c.releaseBackendClosing()
	c.l.s.b.log.Debug().Err(err).Str("balancer", c.rlb.Name).Str("backend", be.Name).Msg("http backend failed")
	code := 502
	if _, ok := err.(*timeoutError); ok {
		code = 504
	}
	c.account(code)
	msg := "Bad Gateway: the backend failed"
	if code == 504 {
		msg = "Gateway Timeout: the backend did not answer in time"
	}
	c.answerError(code, msg)
}

// responseBroke: the backend broke off its answer, or its framing. While
// the head is still held nothing of the answer has left: the client gets
// a 502 instead. Otherwise it can only learn it from the connection's end.
func (c *httpConn) responseBroke(err error) {
	if !c.hold {
		c.abort(502)
		return
	}
	c.out, c.hold = c.out[:c.heldFrom], false
	c.backendFailed(err)
}

// badBody: the request body's chunks broke after the request went to the
// backend, which gets no more of it and loses its connection (what it got
// is a request it cannot complete); the client gets a 400 if no answer
// has begun, and the end of its connection.
func (c *httpConn) badBody() {
	if c.state == hsRelay {
		c.abort(400)
		return
	}
	c.releaseBackendClosing()
	c.keepAlive = false
	c.answerNone(400, statusText(400)+": "+httpwire.ErrChunked.Error())
}

// abort ends a request that cannot be answered properly any more: both
// connections close, and the code is what the metrics record.
func (c *httpConn) abort(code int) {
	if c.be != nil && c.u != nil {
		c.account(code)
	}
	c.releaseBackendClosing()
	c.close()
}

// tunnel hands the client and backend sockets of an accepted upgrade to a
// byte-for-byte relay, with what each side already sent the other.
func (c *httpConn) tunnel() {
	u, be := c.u, c.be
	c.account(101)
	t := (&tcpConn{
		r: c.l.r, b: c.l.s.b, home: c.l, lb: c.lb, be: be, client: c.client,
		clientEnd:  tcpEnd{fd: c.fd, Readiness: c.Readiness},
		backendEnd: tcpEnd{fd: u.fd, Readiness: u.Readiness},
		up:         tcpDirection{pend: append([]byte(nil), c.in...)},
		down:       tcpDirection{pend: append(append([]byte(nil), c.out...), c.uin...)},
		last:       c.l.r.Now, counted: true, backendActive: true,
	}).wire()
	// The relay owns the sockets and the accounting now.
	c.l.r.Entries[c.fd].H, c.l.r.Entries[u.fd].H = t, t
	u.owner, u.fd, c.u, c.done = nil, -1, nil, true
	delete(c.l.conns, c)
	c.l.tunnels[t] = struct{}{}
	t.Event(t.clientEnd.fd, unix.EPOLLIN|unix.EPOLLOUT)
}

// checkTimeouts: a client that idles out, a connect past its deadline, a
// backend slow to answer (504), a body that stalls.
func (c *httpConn) checkTimeouts(now time.Time) {
	lb := c.rlb
	if lb == nil {
		lb = c.lb
	}
	switch {
	case c.state == hsLinger && now.After(c.lingerUntil):
		c.close()
	case c.state == hsConnect && now.After(c.deadline):
		c.connectFailed(errConnectTimeout)
		c.run()
	case c.state == hsAwaitHead && now.After(c.deadline) && !c.reqBody.Done && len(c.uout) == 0:
		// The client stopped sending its body (nginx answers 408 to
		// that; half a request cannot be answered): cut.
		c.abort(408)
	case c.state == hsAwaitHead && now.After(c.deadline):
		c.backendFailed(&timeoutError{"timeout awaiting the backend's response head"})
		c.run()
	case c.state == hsIdle && len(c.in) > 0 && lb.IdleTimeout > 0 && now.Sub(c.headStart) >= lb.IdleTimeout:
		// A head that trickles in (slowloris) gets the idle timeout in
		// all, not per byte.
		c.abort(408)
	case lb.IdleTimeout > 0 && now.Sub(c.last) >= lb.IdleTimeout && c.state != hsConnect && c.state != hsAwaitHead:
		c.abort(499)
	}
}

// close ends the client connection and what it holds.
func (c *httpConn) close() {
	if c.done {
		return
	}
	c.done = true
	c.releaseBackendClosing()
	if c.pp != nil {
		c.pp.close()
		c.pp = nil
	}
	c.l.r.CloseFD(c.fd)
	delete(c.l.conns, c)
	c.lb.Clients.Dec()
	c.l.s.count.Closed()
}

// appendError is a short plain-text answer, as nginx gives.
// The answer to a HEAD request has the headers only (RFC 9110 9.3.2): a
// body would be read as the next answer.
func appendError(out []byte, code int, msg string, keepAlive, isHead bool) []byte {
	body := msg + "\n"
	out = append(out, "HTTP/1.1 "...)
	out = strconv.AppendInt(out, int64(code), 10)
	out = append(out, ' ')
	out = append(out, statusText(code)...)
	out = append(out, "\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\nContent-Length: "...)
	out = strconv.AppendInt(out, int64(len(body)), 10)
	if !keepAlive {
		out = append(out, "\r\nConnection: close"...)
	}
	out = append(out, "\r\n\r\n"...)
	if isHead {
		return out
	}
	return append(out, body...)
}

func statusText(code int) string {
	switch code {
	case 400:
		return "Bad Request"
	case 431:
		return "Request Header Fields Too Large"
	case 501:
		return "Not Implemented"
	case 502:
		return "Bad Gateway"
	case 503:
		return "Service Unavailable"
	case 504:
		return "Gateway Timeout"
	case 505:
		return "HTTP Version Not Supported"
	}
	return "Error"
}
