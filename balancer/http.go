package balancer

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// httpMaxIdlePerBackend is how many idle keep-alive connections each
// backend's pool keeps (nginx's upstream keepalive).
const httpMaxIdlePerBackend = 256

// httpBufferSize is the buffer a response body is copied through, and of
// each backend connection's reader and writer.
const httpBufferSize = 32 << 10

// httpServer is a reverse proxy: each request goes to one backend over that
// backend's keep-alive pool, with the client's Host header kept and
// X-Forwarded-For and X-Forwarded-Proto set; WebSocket and other upgrades
// pass through.
type httpServer struct {
	b   *Balancer
	acc *acceptor
	srv *http.Server
	lb  atomic.Pointer[loadBalancer]
	// What the http.Server was built with: another value needs another
	// server (see compatible).
	idle time.Duration
	pp   int

	loopDone chan struct{}
	quit     chan struct{}
	inflight atomic.Int64
	n        atomic.Int64

	mu    sync.Mutex
	conns map[net.Conn]*clientConn
}

// clientConn is what the server knows of one client connection; requests
// reach it through their context.
type clientConn struct {
	conn     net.Conn
	active   prometheus.Gauge
	hijacked atomic.Bool

	// With the PROXY protocol, backend connections carry one client's
	// address, so each client connection has its own pools (as HAProxy's
	// send-proxy keeps server connections private).
	mu    sync.Mutex
	pools map[*backend]*backendPool
}

type clientConnKey struct{}

// httpBackend is one backend's reverse proxy in one config.
type httpBackend struct {
	key   transportKey
	pool  *backendPool // nil with the PROXY protocol: per client connection
	proxy *httputil.ReverseProxy
}

// transportKey is what a backend's pool depends on; a reload that keeps it
// keeps the pool and its idle connections.
type transportKey struct {
	lbName        string
	connect, idle time.Duration
	pp            int
}

// dialError marks a failed connect to a backend: the request was not sent,
// so it can go to the next backend.
type dialError struct{ err error }

func (e *dialError) Error() string { return "connect to backend: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

func (b *Balancer) serveHTTP(ln *net.TCPListener, lb *loadBalancer) *httpServer {
	s := &httpServer{
		b: b, acc: newAcceptor(ln), idle: lb.idleTimeout, pp: lb.proxyProtocol,
		loopDone: make(chan struct{}), quit: make(chan struct{}), conns: map[net.Conn]*clientConn{},
	}
	s.lb.Store(lb)
	s.srv = &http.Server{
		Handler: s,
		// A client gets the idle timeout to send its request's headers,
		// and keeps an idle keep-alive connection as long.
		ReadHeaderTimeout: lb.idleTimeout,
		IdleTimeout:       lb.idleTimeout,
		ConnContext:       s.connContext,
		ConnState:         s.connState,
		ErrorLog:          b.stdLog("http server"),
	}
	go func() {
		defer close(s.loopDone)
		s.srv.Serve(s.acc)
	}()
	go s.sweep()
	return s
}

// sweep closes backend connections idle for longer than the idle timeout,
// checking every half of it.
func (s *httpServer) sweep() {
	t := time.NewTicker(max(s.idle/2, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
		}
		for _, be := range s.lb.Load().backends {
			if be.http.pool != nil {
				be.http.pool.sweep()
			}
		}
	}
}

func (s *httpServer) current() *loadBalancer { return s.lb.Load() }
func (s *httpServer) compatible(lb *loadBalancer) bool {
	return lb.typ == TypeHTTP && lb.idleTimeout == s.idle && lb.proxyProtocol == s.pp
}
func (s *httpServer) update(lb *loadBalancer) { s.lb.Store(lb) }
func (s *httpServer) clients() int            { return int(s.n.Load()) }

func (s *httpServer) stop() {
	s.acc.Close()
	<-s.loopDone
}

// drain lets requests in flight finish and closes idle keep-alive
// connections (http.Server.Shutdown); at the deadline it cuts what is left,
// upgraded connections included.
func (s *httpServer) drain(deadline time.Time) {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		s.srv.Close()
	}
	// Upgraded connections (WebSocket) are the server's no more; their
	// handlers run until they end.
	for s.inflight.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(min(10*time.Millisecond, time.Until(deadline)))
	}
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	for i := 0; s.inflight.Load() > 0 && i < 500; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	close(s.quit)
	for _, be := range s.lb.Load().backends {
		if be.http.pool != nil {
			be.http.pool.close()
		}
	}
}

func (s *httpServer) connContext(ctx context.Context, c net.Conn) context.Context {
	cc := &clientConn{conn: c}
	s.mu.Lock()
	s.conns[c] = cc
	s.mu.Unlock()
	return context.WithValue(ctx, clientConnKey{}, cc)
}

func (s *httpServer) connState(c net.Conn, state http.ConnState) {
	switch state {
	case http.StateNew:
		s.mu.Lock()
		cc := s.conns[c]
		s.mu.Unlock()
		if cc != nil {
			cc.active = s.lb.Load().mActive
			cc.active.Inc()
			s.n.Add(1)
		}
	case http.StateHijacked:
		s.mu.Lock()
		cc := s.conns[c]
		s.mu.Unlock()
		if cc != nil {
			// Counted until its handler returns (see ServeHTTP).
			cc.hijacked.Store(true)
		}
	case http.StateClosed:
		s.mu.Lock()
		cc := s.conns[c]
		delete(s.conns, c)
		s.mu.Unlock()
		if cc != nil {
			s.closed(cc)
		}
	}
}

func (s *httpServer) closed(cc *clientConn) {
	if cc.active != nil {
		cc.active.Dec()
		s.n.Add(-1)
	}
	cc.mu.Lock()
	for _, p := range cc.pools {
		p.close()
	}
	cc.pools = nil
	cc.mu.Unlock()
}

// reqState is the ResponseWriter a backend's reverse proxy writes to: it
// records the status code, and a failed connect, which it keeps from the
// client so the request can go to the next backend.
type reqState struct {
	http.ResponseWriter
	code    int
	dialErr error
}

func (rs *reqState) WriteHeader(code int) {
	if rs.code == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		rs.code = code
	}
	rs.ResponseWriter.WriteHeader(code)
}

func (rs *reqState) Write(p []byte) (int, error) {
	if rs.code == 0 {
		rs.code = http.StatusOK
	}
	return rs.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach Flush and Hijack.
func (rs *reqState) Unwrap() http.ResponseWriter { return rs.ResponseWriter }

var reqStates = sync.Pool{New: func() any { return new(reqState) }}

func (s *httpServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.inflight.Add(1)
	defer s.inflight.Add(-1)
	cc, _ := r.Context().Value(clientConnKey{}).(*clientConn)
	if cc != nil {
		defer s.endHijacked(cc)
	}
	lb := s.lb.Load()
	start := time.Now()
	var src netip.Addr
	if lb.algorithm == AlgoSourceHash {
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			src = ap.Addr().Unmap()
		}
	}
	rs := reqStates.Get().(*reqState)
	rs.ResponseWriter = w

	var tried triedSet
	attempted, timedOut := false, false
	for range lb.backends {
		be := s.b.pick(lb, src, &tried)
		if be == nil {
			break
		}
		tried.add(be.idx)
		attempted = true
		rs.code, rs.dialErr = 0, nil
		s.try(be, rs, r, cc, start)
		if rs.dialErr == nil {
			rs.ResponseWriter = nil
			reqStates.Put(rs)
			return
		}
		if r.Context().Err() != nil {
			// The client left while we connected: not the backend's fault.
			return
		}
		s.b.connectFailed(be, rs.dialErr)
		timedOut = isTimeout(rs.dialErr)
		s.b.log.Debug().Err(rs.dialErr).Str("balancer", lb.name).Str("backend", be.name).Msg("backend connect failed, trying the next")
	}
	rs.ResponseWriter = nil
	reqStates.Put(rs)

	s.b.warnNoBackend(lb, attempted)
	code, msg := http.StatusServiceUnavailable, "every backend is down"
	switch {
	case timedOut:
		code, msg = http.StatusGatewayTimeout, "no backend answered in time"
	case attempted:
		code, msg = http.StatusBadGateway, "no backend answered"
	}
	writeError(w, code, msg)
	lb.mNone.request(code)
	s.b.m.duration.WithLabelValues(lb.name, backendNone).Observe(time.Since(start).Seconds())
}

// try hands the request to be's reverse proxy and accounts for it; after a
// failed connect rs.dialErr is set and nothing was written.
func (s *httpServer) try(be *backend, rs *reqState, r *http.Request, cc *clientConn, start time.Time) {
	be.st.active.Add(1)
	be.m.active.Inc()
	defer func() {
		be.st.active.Add(-1)
		be.m.active.Dec()
		if rs.dialErr != nil {
			return
		}
		code := rs.code
		switch {
		case code != 0:
		case cc != nil && cc.hijacked.Load():
			// An upgrade: the proxy writes the 101 on the hijacked
			// connection itself.
			code = http.StatusSwitchingProtocols
		default:
			// The proxy gave up before any answer: the copy of the
			// body failed (it panics with http.ErrAbortHandler).
			code = http.StatusBadGateway
		}
		be.m.request(code)
		be.m.duration.Observe(time.Since(start).Seconds())
	}()
	be.http.proxy.ServeHTTP(rs, r)
}

// endHijacked stops counting an upgraded connection once its handler ends.
func (s *httpServer) endHijacked(cc *clientConn) {
	if !cc.hijacked.Load() {
		return
	}
	s.mu.Lock()
	_, ok := s.conns[cc.conn]
	delete(s.conns, cc.conn)
	s.mu.Unlock()
	if ok {
		cc.conn.Close()
		s.closed(cc)
	}
}

// proxyError answers a request the backend failed: 502, or 504 when it did
// not answer in time. A failed connect is only recorded, for ServeHTTP to
// try the next backend.
func (b *Balancer) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	rs, _ := w.(*reqState)
	var de *dialError
	if rs != nil && rs.code == 0 && errors.As(err, &de) {
		rs.dialErr = de.err
		return
	}
	if r.Context().Err() != nil {
		// The client left; nginx logs this as 499.
		if rs != nil && rs.code == 0 {
			rs.code = 499
		}
		return
	}
	if rs != nil && rs.code != 0 {
		return
	}
	b.log.Debug().Err(err).Str("url", r.URL.String()).Msg("http backend failed")
	if isTimeout(err) {
		writeError(w, http.StatusGatewayTimeout, "the backend did not answer in time")
		return
	}
	writeError(w, http.StatusBadGateway, "the backend failed")
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// writeError answers with a short plain-text body, as nginx does.
func writeError(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	io.WriteString(w, http.StatusText(code)+": "+msg+"\n")
}

// prepareHTTP gives each backend of lb its reverse proxy, keeping the pool
// of the backend it replaces in old when nothing the pool depends on
// changed.
func (b *Balancer) prepareHTTP(lb, old *loadBalancer) {
	prev := map[*backendState]*httpBackend{}
	if old != nil && old.typ == TypeHTTP {
		for _, be := range old.backends {
			prev[be.st] = be.http
		}
	}
	key := transportKey{lbName: lb.name, connect: lb.connectTimeout, idle: lb.idleTimeout, pp: lb.proxyProtocol}
	kept := map[*httpBackend]bool{}
	for _, be := range lb.backends {
		hb := &httpBackend{key: key}
		switch p := prev[be.st]; {
		case p != nil && p.key == key:
			hb.pool = p.pool
			kept[p] = true
		case lb.proxyProtocol == 0:
			hb.pool = b.newPool(lb, be, nil)
		}
		hb.proxy = b.newReverseProxy(lb, be, hb)
		be.http = hb
	}
	for _, p := range prev {
		if !kept[p] && p.pool != nil {
			p.pool.close()
		}
	}
}

// newPool is a keep-alive pool to one backend. With cc, its connections
// start with a PROXY protocol header for cc's client.
func (b *Balancer) newPool(lb *loadBalancer, be *backend, cc *clientConn) *backendPool {
	m := be.m
	return newBackendPool(func(ctx context.Context) (net.Conn, error) {
		c, err := dialBackend(ctx, lb, be)
		if err != nil {
			return nil, &dialError{err}
		}
		if cc != nil {
			c.SetWriteDeadline(time.Now().Add(lb.connectTimeout))
			if err := writeProxyHeader(c, lb.proxyProtocol, cc.conn.RemoteAddr(), cc.conn.LocalAddr()); err != nil {
				c.Close()
				return nil, &dialError{err}
			}
			c.SetWriteDeadline(time.Time{})
		}
		m.conns.Inc()
		return &countingConn{c: c, m: m}, nil
	}, httpMaxIdlePerBackend, lb.idleTimeout)
}

var forwardedProtoHTTP = []string{"http"}

func (b *Balancer) newReverseProxy(lb *loadBalancer, be *backend, hb *httpBackend) *httputil.ReverseProxy {
	var rt http.RoundTripper = hb.pool
	if hb.pool == nil {
		rt = &ppTransport{b: b, lb: lb, be: be}
	}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			out := pr.Out
			out.URL.Scheme = "http"
			out.URL.Host = be.address
			// out.Host is the client's Host header, kept.
			ip, _, err := net.SplitHostPort(pr.In.RemoteAddr)
			if err != nil {
				return
			}
			// Appended to what earlier proxies said, as nginx's
			// $proxy_add_x_forwarded_for.
			if prior := pr.In.Header["X-Forwarded-For"]; len(prior) > 0 {
				ip = strings.Join(prior, ", ") + ", " + ip
			}
			out.Header["X-Forwarded-For"] = []string{ip}
			out.Header["X-Forwarded-Proto"] = forwardedProtoHTTP
		},
		Transport:    rt,
		BufferPool:   httpBuffers,
		ErrorHandler: b.proxyError,
		ErrorLog:     b.stdLog("http proxy"),
	}
}

// ppTransport picks the client connection's own pool to the backend.
type ppTransport struct {
	b  *Balancer
	lb *loadBalancer
	be *backend
}

func (p *ppTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	cc, _ := req.Context().Value(clientConnKey{}).(*clientConn)
	if cc == nil {
		return nil, errors.New("request without its client connection")
	}
	cc.mu.Lock()
	if cc.pools == nil {
		cc.pools = map[*backend]*backendPool{}
	}
	pool := cc.pools[p.be]
	if pool == nil {
		pool = p.b.newPool(p.lb, p.be, cc)
		cc.pools[p.be] = pool
	}
	cc.mu.Unlock()
	return pool.RoundTrip(req)
}

// countingConn counts the bytes of a backend connection. It is no
// io.ReaderFrom on purpose: every write must come through Write.
type countingConn struct {
	c *net.TCPConn
	m *backendMetrics
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.c.Read(p)
	if n > 0 {
		c.m.toClient.Add(float64(n))
	}
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.c.Write(p)
	if n > 0 {
		c.m.toBackend.Add(float64(n))
	}
	return n, err
}

func (c *countingConn) Close() error                       { return c.c.Close() }
func (c *countingConn) CloseWrite() error                  { return c.c.CloseWrite() }
func (c *countingConn) LocalAddr() net.Addr                { return c.c.LocalAddr() }
func (c *countingConn) RemoteAddr() net.Addr               { return c.c.RemoteAddr() }
func (c *countingConn) SetDeadline(t time.Time) error      { return c.c.SetDeadline(t) }
func (c *countingConn) SetReadDeadline(t time.Time) error  { return c.c.SetReadDeadline(t) }
func (c *countingConn) SetWriteDeadline(t time.Time) error { return c.c.SetWriteDeadline(t) }

// bufferPool lends the reverse proxies their copy buffers. A channel, not a
// sync.Pool: putting a slice into a sync.Pool allocates its header.
type bufferPool struct{ c chan []byte }

func (bp *bufferPool) Get() []byte {
	select {
	case b := <-bp.c:
		return b
	default:
		return make([]byte, httpBufferSize)
	}
}

func (bp *bufferPool) Put(b []byte) {
	select {
	case bp.c <- b:
	default:
	}
}

var httpBuffers = &bufferPool{c: make(chan []byte, 1024)}

// stdLog adapts the logger for net/http's error logs, at debug level: what
// they report (a client that went away, a broken backend) is also in the
// metrics.
func (b *Balancer) stdLog(component string) *log.Logger {
	return log.New(debugWriter{b.log.With().Str("component", component).Logger()}, "", 0)
}

type debugWriter struct{ l zerolog.Logger }

func (w debugWriter) Write(p []byte) (int, error) {
	w.l.Debug().Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}
