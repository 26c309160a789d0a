package balancer

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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

// tcpServer proxies each client connection to one backend, byte for byte.
type tcpServer struct {
	b   *Balancer
	acc *acceptor
	lb  atomic.Pointer[loadBalancer]
	// ctx ends when the server's connections are cut, and with it backend
	// connects in flight.
	ctx      context.Context
	cancel   context.CancelFunc
	loopDone chan struct{}
	// handlers counts the connection goroutines, for drain.
	handlers sync.WaitGroup

	mu    sync.Mutex
	conns map[*net.TCPConn]struct{} // client and backend connections, to cut
	cut   bool
	n     atomic.Int64
}

func (b *Balancer) serveTCP(ln *net.TCPListener, lb *loadBalancer) *tcpServer {
	ctx, cancel := context.WithCancel(context.Background())
	s := &tcpServer{
		b: b, acc: newAcceptor(ln), ctx: ctx, cancel: cancel,
		loopDone: make(chan struct{}), conns: map[*net.TCPConn]struct{}{},
	}
	s.lb.Store(lb)
	go s.serve()
	return s
}

func (s *tcpServer) current() *loadBalancer           { return s.lb.Load() }
func (s *tcpServer) compatible(lb *loadBalancer) bool { return lb.typ == TypeTCP }
func (s *tcpServer) update(lb *loadBalancer)          { s.lb.Store(lb) }
func (s *tcpServer) clients() int                     { return int(s.n.Load()) }

func (s *tcpServer) stop() {
	s.acc.Close()
	<-s.loopDone
}

func (s *tcpServer) drain(deadline time.Time) {
	done := make(chan struct{})
	go func() { s.handlers.Wait(); close(done) }()
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-done:
		return
	case <-t.C:
	}
	s.mu.Lock()
	s.cut = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.cancel()
	<-done
}

// serve accepts connections until the server is stopped.
func (s *tcpServer) serve() {
	defer close(s.loopDone)
	var backoff time.Duration
	for {
		c, err := s.acc.acceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait a little and
			// retry, as net/http does, rather than spin or give up.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.b.log.Error().Err(err).Str("bind", s.acc.Addr().String()).Dur("retry_in", backoff).Msg("accept")
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if !s.track(c) {
			c.Close()
			continue
		}
		s.handlers.Add(1)
		go s.proxy(s.lb.Load(), c)
	}
}

// track registers c for drain to cut; false once it has.
func (s *tcpServer) track(c *net.TCPConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cut {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *tcpServer) untrack(c *net.TCPConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// proxy connects client to a backend and copies between them until both
// directions end, the connection idles out or it is cut.
func (s *tcpServer) proxy(lb *loadBalancer, client *net.TCPConn) {
	defer s.handlers.Done()
	defer s.untrack(client)
	s.n.Add(1)
	defer s.n.Add(-1)
	lb.mActive.Inc()
	defer lb.mActive.Dec()

	server, be := s.connect(lb, client)
	if server == nil {
		return
	}
	if !s.track(server) {
		server.Close()
		return
	}
	defer s.untrack(server)
	be.st.active.Add(1)
	defer be.st.active.Add(-1)
	be.m.active.Inc()
	defer be.m.active.Dec()
	be.m.conns.Inc()
	if e := s.b.log.Debug(); e.Enabled() {
		e.Str("balancer", lb.name).Str("client", client.RemoteAddr().String()).Str("backend", be.name).Msg("connection proxied")
	}
	if w := watchIdle(client, server, lb.idleTimeout); w != nil {
		defer w.stop()
	}

	errc := make(chan error, 1)
	go func() { errc <- pipe(server, client, be.m.toBackend) }()
	if err := pipe(client, server, be.m.toClient); err != nil {
		// A reset or write failure on one side: the other direction has
		// no one to talk to, so cut both to end it now.
		client.Close()
		server.Close()
	}
	if err := <-errc; err != nil {
		client.Close()
		server.Close()
	}
}

// connect dials lb's backends in the algorithm's order, each at most once,
// and sends the PROXY protocol header when lb wants one. It returns nil
// when every backend is down or none answered: the client is then closed
// at once.
func (s *tcpServer) connect(lb *loadBalancer, client *net.TCPConn) (*net.TCPConn, *backend) {
	var src netip.Addr
	if lb.algorithm == AlgoSourceHash {
		src = addrOf(client.RemoteAddr())
	}
	var tried triedSet
	attempted := false
	for range lb.backends {
		be := s.b.pick(lb, src, &tried)
		if be == nil {
			break
		}
		tried.add(be.idx)
		attempted = true
		c, err := dialBackend(s.ctx, lb, be)
		if err == nil && lb.proxyProtocol > 0 {
			c.SetWriteDeadline(time.Now().Add(lb.connectTimeout))
			if err = writeProxyHeader(c, lb.proxyProtocol, client.RemoteAddr(), client.LocalAddr()); err == nil {
				err = c.SetWriteDeadline(time.Time{})
			}
			if err != nil {
				c.Close()
			}
		}
		if err == nil {
			s.b.connectOK(be)
			return c, be
		}
		if s.ctx.Err() != nil {
			return nil, nil
		}
		s.b.connectFailed(be, err)
		s.b.log.Debug().Err(err).Str("balancer", lb.name).Str("backend", be.name).Msg("backend connect failed, trying the next")
	}
	s.b.warnNoBackend(lb, attempted)
	return nil, nil
}

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

// copyChunk is how many bytes one io.CopyN moves before the bytes metric is
// updated. Both ends being *net.TCPConn, each chunk is one splice loop in the
// kernel (io.CopyN's LimitedReader is unwrapped by the splice path), so the
// bytes never pass through user space; the chunk only bounds how stale the
// metric gets on a long transfer.
const copyChunk = 1 << 20

// pipe copies src to dst until src ends, then half-closes dst so the peer
// sees the end while the other direction goes on. It returns nil on a clean
// end of src.
func pipe(dst, src *net.TCPConn, bytes prometheus.Counter) error {
	for {
		n, err := io.CopyN(dst, src, copyChunk)
		if n > 0 {
			bytes.Add(float64(n))
		}
		switch {
		case err == nil:
			continue
		case err == io.EOF:
			if err := dst.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) {
				return err
			}
			return nil
		default:
			return err
		}
	}
}

// idleWatch closes a proxied connection once no byte has moved either way
// for the idle timeout. It reads the client socket's TCP_INFO byte counters
// (received, and sent and acknowledged) every quarter of the timeout
// instead of putting deadlines on the copies, which would break the splice
// loops into pieces. A connection closes between idle and 1.25 × idle
// after its last byte.
type idleWatch struct {
	t              *time.Timer
	client, server *net.TCPConn
	idle, window   time.Duration
	last           uint64
	quiet          time.Duration
	stopped        atomic.Bool
}

func watchIdle(client, server *net.TCPConn, idle time.Duration) *idleWatch {
	if idle <= 0 {
		return nil
	}
	last, ok := tcpProgress(client)
	if !ok {
		return nil
	}
	w := &idleWatch{client: client, server: server, idle: idle, window: max(idle/4, 5*time.Millisecond), last: last}
	w.t = time.AfterFunc(w.window, w.check)
	return w
}

// check runs on the timer's goroutine; only one runs at a time because
// each re-arms the timer last.
func (w *idleWatch) check() {
	if w.stopped.Load() {
		return
	}
	p, ok := tcpProgress(w.client)
	if !ok {
		return
	}
	if p != w.last {
		w.last, w.quiet = p, 0
	} else if w.quiet += w.window; w.quiet >= w.idle {
		w.client.Close()
		w.server.Close()
		return
	}
	w.t.Reset(w.window)
}

func (w *idleWatch) stop() {
	w.stopped.Store(true)
	w.t.Stop()
}
