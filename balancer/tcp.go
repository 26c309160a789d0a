package balancer

import (
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/keep-vip/keep-vip/balancer/internal/reactor"
	"golang.org/x/sys/unix"
)

// tcpServer proxies each client connection to one backend, byte for byte,
// on the balancer's reactors: each loop accepts from its own duplicate of
// the listening socket and owns the connections it accepted.
type tcpServer struct {
	b     *Balancer
	lb    atomic.Pointer[loadBalancer]
	loops []*tcpLoop
	count reactor.ConnCount
	// cut: drain's deadline passed; connections still connecting close
	// too.
	cut atomic.Bool
}

// tcpLoop is a tcp server's part of one reactor.
type tcpLoop struct {
	s     *tcpServer
	r     *reactor.Loop
	ln    *reactor.Listener
	conns map[*tcpConn]struct{}
	stopT func()
}

func (b *Balancer) serveTCP(sock *reactor.Socket, lb *loadBalancer) *tcpServer {
	s := &tcpServer{b: b}
	s.lb.Store(lb)
	for _, r := range b.loops.Loops {
		l := &tcpLoop{s: s, r: r, conns: map[*tcpConn]struct{}{}}
		if l.ln, l.stopT = b.startLoop(r, sock, l, &s.lb); l.ln != nil {
			s.loops = append(s.loops, l)
		}
	}
	return s
}

// loopPart is a server's part of one event loop.
type loopPart interface {
	open(fd int, sa unix.Sockaddr)
	check(now time.Time)
}

// startLoop has part accept from sock on r and run its checks; a nil
// listener when it cannot accept.
func (b *Balancer) startLoop(r *reactor.Loop, sock *reactor.Socket, part loopPart, lb *atomic.Pointer[loadBalancer]) (*reactor.Listener, func()) {
	l, err := reactor.ListenOn(r, sock, part.open, func(err error, retryIn time.Duration) {
		if name := lb.Load().name; !b.noteLocal(name, opAccept, err) {
			b.localLog.Error().Err(err).Str("balancer", name).Dur("retry_in", retryIn).Msg("accept")
		}
	})
	if err != nil {
		b.log.Error().Err(err).Str("balancer", lb.Load().name).Str("bind", sock.Addr.String()).Msg("load balancer cannot accept")
		return nil, nil
	}
	return l, r.Every(checkEvery(lb.Load()), part.check)
}

// checkEvery is how often connect deadlines and idle timeouts are checked:
// a connection closes between idle and 1.25 × idle after its last byte.
func checkEvery(lb *loadBalancer) time.Duration {
	return max(min(lb.connectTimeout, lb.idleTimeout)/4, reactor.Tick)
}

func (s *tcpServer) current() *loadBalancer           { return s.lb.Load() }
func (s *tcpServer) compatible(lb *loadBalancer) bool { return lb.typ == TypeTCP }
func (s *tcpServer) update(lb *loadBalancer)          { s.lb.Store(lb) }
func (s *tcpServer) clients() int                     { return int(s.count.N.Load()) }

// stop closes the server's duplicates of the listening socket; its
// connections go on.
func (s *tcpServer) stop() {
	for _, l := range s.loops {
		l.ln.Stop()
	}
}

// drain waits for the connections to end until deadline, then cuts those
// left.
func (s *tcpServer) drain(deadline time.Time) {
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
		l.stopT()
	}
}

// check runs every tcpCheckEvery: connects past their deadline move on to
// the next backend, idle connections close.
func (l *tcpLoop) check(now time.Time) {
	for c := range l.conns {
		switch {
		case c.connecting && now.After(c.deadline):
			c.connectFailed(errConnectTimeout)
		case !c.connecting && c.lb.idleTimeout > 0 && now.Sub(c.last) >= c.lb.idleTimeout:
			c.close()
		}
	}
}

var errConnectTimeout = &timeoutError{"connect timeout"}

type timeoutError struct{ s string }

func (e *timeoutError) Error() string   { return e.s }
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }

// connHome is what a proxied connection belongs to: a tcp server's loop,
// or an http one's for a connection upgraded to a tunnel.
type connHome interface {
	// cutting: the server's drain deadline has passed.
	cutting() bool
	// forget ends the accounting of the client's connection.
	forget(c *tcpConn)
}

func (l *tcpLoop) cutting() bool { return l.s.cut.Load() }

func (l *tcpLoop) forget(c *tcpConn) {
	delete(l.conns, c)
	c.lb.mActive.Dec()
	l.s.count.Closed()
}

// tcpConn is one proxied connection: the client's socket, the backend's,
// and what one side sent that the other could not take yet.
type tcpConn struct {
	r        *reactor.Loop
	b        *Balancer
	home     connHome
	lb       *loadBalancer
	be       *backend
	cfd, sfd int
	client   netip.AddrPort
	// The client's and the backend's readiness, cleared on EAGAIN or a
	// short read (the socket was drained: edge-triggered epoll reports
	// data arriving after that).
	cl, sv           reactor.Readiness
	cEOF, sEOF       bool
	cShut, sShut     bool
	connecting, done bool
	queued           bool // a later call is asked for
	// upFlight, downFlight: a direction's write waits in the loop's
	// ring; the direction moves nothing more until it is done. resume:
	// a direction stopped for it with more to do.
	upFlight, downFlight, resume bool
	toServer, toClient           []byte
	// up and down are the pipes of the directions that stream (to the
	// backend, to the client); nil while a direction copies.
	up, down *reactor.Pipe
	// noSplice: splice failed on these sockets; directions without a
	// pipe copy.
	noSplice               bool
	tried                  triedSet
	deadline, last         time.Time
	counted, backendActive bool
}

func (l *tcpLoop) open(fd int, sa unix.Sockaddr) {
	s := l.s
	if s.cut.Load() {
		unix.Close(fd)
		return
	}
	lb := s.lb.Load()
	c := &tcpConn{r: l.r, b: s.b, home: l, lb: lb, cfd: fd, sfd: -1, client: sockaddrAddrPort(sa), cl: reactor.Readiness{W: true}, last: l.r.Now}
	if err := l.r.Add(fd, c, reactor.EvConn); err != nil {
		unix.Close(fd)
		return
	}
	l.conns[c] = struct{}{}
	s.count.Opened()
	c.counted = true
	lb.mActive.Inc()
	c.connectNext()
}

// connectNext starts a connect to the next backend the algorithm picks,
// each at most once; with none left the client is closed at once.
func (c *tcpConn) connectNext() {
	b, lb := c.b, c.lb
	src := lb.hashKey(c.client)
	for {
		be := b.pick(lb, src, &c.tried)
		if be == nil {
			b.warnNoBackend(lb, c.be != nil)
			c.close()
			return
		}
		c.tried.add(be.idx)
		c.be = be
		fd, err := connectNonblock(be.ap)
		if err == nil {
			if err = c.r.Add(fd, c, reactor.EvConn); err != nil {
				unix.Close(fd)
			}
		}
		if err == nil {
			c.sfd, c.connecting, c.sv.W, c.sv.R = fd, true, false, false
			c.deadline = c.r.Now.Add(lb.connectTimeout)
			return
		}
		if b.connectFailed(be, err) {
			// The balancer's own fault: no other backend would fare
			// better.
			c.close()
			return
		}
		b.log.Debug().Err(err).Str("balancer", lb.name).Str("backend", be.name).Msg("backend connect failed, trying the next")
	}
}

// connectNonblock starts a tcp connect to ap.
func connectNonblock(ap netip.AddrPort) (int, error) {
	fd, err := connectSocket(ap, unix.SOCK_STREAM)
	if err == nil {
		unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	}
	return fd, err
}

// connectSocket is a non-blocking socket of typ connecting (tcp) or
// connected (udp) to ap.
func connectSocket(ap netip.AddrPort, typ int) (int, error) {
	family := unix.AF_INET
	if !ap.Addr().Unmap().Is4() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Connect(fd, addrPortSockaddr(ap)); err != nil && err != unix.EINPROGRESS {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func (c *tcpConn) connectFailed(err error) {
	c.r.CloseFD(c.sfd)
	c.sfd, c.connecting = -1, false
	if c.home.cutting() {
		c.close()
		return
	}
	if c.b.connectFailed(c.be, err) {
		c.close()
		return
	}
	c.b.log.Debug().Err(err).Str("balancer", c.lb.name).Str("backend", c.be.name).Msg("backend connect failed, trying the next")
	c.connectNext()
}

// connected: the backend accepted. The PROXY protocol header goes first.
func (c *tcpConn) connected() {
	b, be := c.b, c.be
	c.connecting = false
	c.last = c.r.Now
	b.connectOK(be)
	be.st.active.Add(1)
	be.m.active.Inc()
	be.m.conns.Inc()
	c.backendActive = true
	if c.lb.proxyProtocol > 0 {
		var buf headerBuffer
		local, _ := unix.Getsockname(c.cfd)
		dst := sockaddrAddrPort(local)
		if err := writeProxyHeader(&buf, c.lb.proxyProtocol, net.TCPAddrFromAddrPort(c.client), net.TCPAddrFromAddrPort(dst)); err != nil {
			c.close()
			return
		}
		c.toServer = buf.b
	}
	if e := b.log.Debug(); e.Enabled() {
		e.Str("balancer", c.lb.name).Str("client", c.client.String()).Str("backend", be.name).Msg("connection proxied")
	}
}

type headerBuffer struct{ b []byte }

func (h *headerBuffer) Write(p []byte) (int, error) { h.b = append(h.b, p...); return len(p), nil }

// deferIO: events only mark readiness; the I/O runs once the loop has
// polled again (see tcpConn.event). Measured: about 3% more requests per second
// on the bench, fewer segments.
const deferIO = true

// tcpBudget bounds the reads one event makes per direction, so a fast
// sender cannot starve the loop's other connections.
const tcpBudget = 16

func (c *tcpConn) Event(fd int, ev uint32) {
	if c.done {
		return
	}
	if fd == c.cfd {
		c.cl.Note(ev)
	} else {
		c.sv.Note(ev)
	}
	if ev != 0 && deferIO {
		// The I/O waits until the loop has polled once more (see
		// later), as HAProxy's waits for its tasklets: what arrives
		// meanwhile (a response's head and body sent by two writes) is
		// read and passed on in one go, one segment instead of two.
		if !c.queued {
			c.queued = true
			c.r.Later(c.cfd, c)
		}
		return
	}
	c.queued = false
	if c.connecting {
		if !c.sv.W {
			return
		}
		if errno, err := unix.GetsockoptInt(c.sfd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || errno != 0 {
			if err == nil {
				err = unix.Errno(errno)
			}
			c.connectFailed(err)
			return
		}
		c.connected()
		if c.done {
			return
		}
	}
	budget := tcpBudget
	ok := c.flow(c.cfd, &c.cl.R, c.cl.Rdhup, &c.cEOF, c.sfd, &c.sv.W, &c.sShut, &c.toServer, &c.up, true, &budget)
	if ok {
		budget = tcpBudget
		ok = c.flow(c.sfd, &c.sv.R, c.sv.Rdhup, &c.sEOF, c.cfd, &c.cl.W, &c.cShut, &c.toClient, &c.down, false, &budget)
	}
	switch {
	case !ok:
		c.close()
	case c.cEOF && c.sEOF && c.cShut && c.sShut:
		c.close()
	case (c.cl.R && c.sv.W && !c.cEOF) || (c.sv.R && c.cl.W && !c.sEOF):
		// Out of budget with data left: epoll will not say so again.
		c.r.Later(c.cfd, c)
	}
}

// flow moves what src has to dst, until src is drained, dst is full or the
// budget is spent; at src's end it half-closes dst. What dst could not take
// waits in pend (copied) or in the direction's pipe (spliced), and goes
// first. It returns false when a socket failed: the connection is then cut
// both ways.
func (c *tcpConn) flow(src int, srcR *bool, rdhup bool, srcEOF *bool, dst int, dstW, dstShut *bool, pend *[]byte, pipe **reactor.Pipe, toBackend bool, budget *int) bool {
	scratch := c.r.Scratch
	if (toBackend && c.upFlight) || (!toBackend && c.downFlight) {
		c.resume = true
		return true
	}
	for {
		if len(*pend) > 0 || (*pipe != nil && (*pipe).N > 0) {
			if all, ok := passPending(dst, dstW, pend, *pipe); !ok || !all {
				return ok
			}
		}
		if *srcEOF {
			if !*dstShut {
				unix.Shutdown(dst, unix.SHUT_WR)
				*dstShut = true
			}
			return true
		}
		if !*srcR || !*dstW || *budget <= 0 {
			return true
		}
		*budget--
		var n int
		var err error
		if *pipe != nil {
			n, err = (*pipe).In(src)
		} else {
			n, err = reactor.SysRead(src, scratch)
		}
		switch {
		case err == unix.EAGAIN:
			*srcR = false
			return true
		case err == unix.EINTR:
			continue
		case *pipe != nil && (err == unix.EINVAL || err == unix.ENOSYS):
			// Sockets splice cannot read: this direction copies from
			// now on (its pipe is empty, nothing was moved), and no
			// other starts splicing.
			c.noSplice = true
			c.r.ClosePipe(*pipe)
			*pipe = nil
			continue
		case err != nil:
			return false
		case n == 0:
			*srcEOF = true
			continue
		}
		c.moved(n, toBackend)
		if *pipe != nil {
			// A short splice does not mean src is drained (see
			// splicePipe.in): the next one says so.
			continue
		}
		if n < len(scratch) && !rdhup {
			*srcR = false
		}
		if c.r.Ring != nil && n <= reactor.SendRingMax {
			c.r.Ring.Queue(dst, scratch[:n], c, toBackend)
			if toBackend {
				c.upFlight = true
			} else {
				c.downFlight = true
			}
			if *srcR {
				c.resume = true
			}
			return true
		}
		if n == len(scratch) && c.lb.splice && !c.noSplice {
			// A full buffer: src streams. The rest goes by splice.
			*pipe = c.r.NewPipe()
		}
		w, err := reactor.SysWrite(dst, scratch[:n])
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			w = 0
		case err != nil:
			return false
		}
		if w < n {
			*pend = append([]byte(nil), scratch[w:n]...)
			*dstW = false
			return true
		}
	}
}

// passPending writes to dst what waits for it: the copied bytes, then
// the pipe's. all reports that nothing waits any more; ok is false when
// dst failed.
func passPending(dst int, dstW *bool, pend *[]byte, p *reactor.Pipe) (all, ok bool) {
	for len(*pend) > 0 || (p != nil && p.N > 0) {
		if !*dstW {
			return false, true
		}
		var err error
		var left bool
		if len(*pend) > 0 {
			var n int
			if n, err = reactor.SysWrite(dst, *pend); err == nil {
				*pend = (*pend)[n:]
				if left = len(*pend) > 0; !left {
					*pend = nil
				}
			}
		} else {
			err = p.Out(dst)
			left = p.N > 0
		}
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			*dstW = false
			return false, true
		case err != nil:
			return false, false
		case left:
			// A short write: dst is full.
			*dstW = false
			return false, true
		}
	}
	return true, true
}

// written hears how a write through the loop's ring went.
func (c *tcpConn) Written(up bool, data []byte, n int, err error) {
	if up {
		c.upFlight = false
	} else {
		c.downFlight = false
	}
	if c.done {
		return
	}
	if err == unix.EAGAIN {
		n, err = 0, nil
	}
	if err != nil {
		c.close()
		return
	}
	if n < len(data) {
		if up {
			c.toServer = append([]byte(nil), data[n:]...)
			c.sv.W = false
		} else {
			c.toClient = append([]byte(nil), data[n:]...)
			c.cl.W = false
		}
	}
	if c.resume {
		c.resume = false
		c.r.Later(c.cfd, c)
	}
}

// moved counts n bytes read from one side.
func (c *tcpConn) moved(n int, toBackend bool) {
	c.last = c.r.Now
	if toBackend {
		c.be.m.toBackend.Add(float64(n))
	} else {
		c.be.m.toClient.Add(float64(n))
	}
}

// close ends both sides and the accounting; safe to call twice.
func (c *tcpConn) close() {
	if c.done {
		return
	}
	if (c.upFlight || c.downFlight) && c.r.Ring != nil {
		// Its writes go first: their descriptors are about to close.
		c.r.Ring.Flush()
	}
	c.done = true
	c.r.CloseFD(c.cfd)
	c.r.CloseFD(c.sfd)
	c.cfd, c.sfd = -1, -1
	c.r.ClosePipe(c.up)
	c.r.ClosePipe(c.down)
	c.up, c.down = nil, nil
	if c.backendActive {
		c.be.st.active.Add(-1)
		c.be.m.active.Dec()
	}
	if c.counted {
		c.home.forget(c)
	}
}

// sockaddrAddrPort converts a socket address from accept or getsockname.
func sockaddrAddrPort(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

func addrPortSockaddr(ap netip.AddrPort) unix.Sockaddr {
	if a := ap.Addr(); a.Is4() || a.Is4In6() {
		return &unix.SockaddrInet4{Addr: a.Unmap().As4(), Port: int(ap.Port())}
	}
	return &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
}
