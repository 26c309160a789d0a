package balancer

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"syscall"
	"time"
)

// backendPool is the keep-alive pool of one backend, and the
// http.RoundTripper its reverse proxy uses. Unlike http.Transport it writes
// the request and reads the response on the goroutine of the request
// (net/http's own Request.Write and ReadResponse do the HTTP): no reader
// and writer goroutine per connection, no hand-over between them, which
// on a proxy's small requests is a third of the CPU time.
//
// A connection goes back to the pool once its response body has been read
// to the end; one closed by the backend while idle is noticed when it is
// next used, and an idempotent request without a body is then retried once
// on a fresh connection, as http.Transport does.
type backendPool struct {
	dial    func(ctx context.Context) (net.Conn, error)
	idleMax int
	// idleTimeout closes connections idle for longer, and bounds the wait
	// for a response's headers (answered 504).
	idleTimeout time.Duration

	mu     sync.Mutex
	idle   []*poolConn // most recently used last
	closed bool
}

type poolConn struct {
	c         net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
}

func newBackendPool(dial func(ctx context.Context) (net.Conn, error), idleMax int, idleTimeout time.Duration) *backendPool {
	return &backendPool{dial: dial, idleMax: idleMax, idleTimeout: idleTimeout}
}

// get returns an idle connection, or a new one; reused says which.
func (p *backendPool) get(ctx context.Context) (pc *poolConn, reused bool, err error) {
	now := time.Now()
	p.mu.Lock()
	for len(p.idle) > 0 {
		pc = p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		idle := now.Sub(pc.idleSince)
		if idle >= p.idleTimeout {
			pc.c.Close()
			continue
		}
		if idle < idleCheckAfter {
			p.mu.Unlock()
			return pc, true, nil
		}
		p.mu.Unlock()
		// Idle a while: the backend may have closed it on its own
		// keep-alive timeout. One peek now saves a request that could
		// not be retried (a POST) from a 502.
		if cc, ok := pc.c.(*countingConn); !ok || connAlive(cc.c) {
			return pc, true, nil
		}
		pc.c.Close()
		p.mu.Lock()
	}
	p.mu.Unlock()
	c, err := p.dial(ctx)
	if err != nil {
		return nil, false, err
	}
	return &poolConn{c: c, br: bufio.NewReaderSize(c, httpBufferSize), bw: bufio.NewWriterSize(c, httpBufferSize)}, false, nil
}

// put keeps pc for the next request, or closes it when the pool is full
// or closed.
func (p *backendPool) put(pc *poolConn) {
	pc.idleSince = time.Now()
	p.mu.Lock()
	if p.closed || len(p.idle) >= p.idleMax {
		p.mu.Unlock()
		pc.c.Close()
		return
	}
	p.idle = append(p.idle, pc)
	p.mu.Unlock()
}

// sweep closes connections idle for longer than the idle timeout.
func (p *backendPool) sweep() {
	cutoff := time.Now().Add(-p.idleTimeout)
	p.mu.Lock()
	keep := p.idle[:0]
	for _, pc := range p.idle {
		if pc.idleSince.Before(cutoff) {
			pc.c.Close()
			continue
		}
		keep = append(keep, pc)
	}
	clear(p.idle[len(keep):])
	p.idle = keep
	p.mu.Unlock()
}

// close closes the idle connections; those in use close when their
// response ends.
func (p *backendPool) close() {
	p.mu.Lock()
	p.closed = true
	for _, pc := range p.idle {
		pc.c.Close()
	}
	p.idle = nil
	p.mu.Unlock()
}

// idleCheckAfter is how long a connection may sit idle before its reuse
// checks that the backend has not closed it. Busy pools reuse connections
// within milliseconds and pay nothing. A variable for tests.
var idleCheckAfter = time.Second

// errIdleClosed marks a reused connection the backend had closed: nothing
// of the request was processed.
var errIdleClosed = errors.New("backend closed an idle keep-alive connection")

// aLongTimeAgo is a deadline that has passed: it ends a blocked read.
var aLongTimeAgo = time.Unix(1, 0)

func (p *backendPool) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := p.roundTrip(req)
	if errors.Is(err, errIdleClosed) && retryable(req) {
		resp, err = p.roundTrip(req)
	}
	if err != nil && req.Body != nil {
		req.Body.Close()
	}
	return resp, err
}

// retryable: a request that can be sent again as it is.
func retryable(req *http.Request) bool {
	if req.Body != nil && req.Body != http.NoBody {
		return false
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

func (p *backendPool) roundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	pc, reused, err := p.get(ctx)
	if err != nil {
		return nil, err
	}
	// The client leaving ends a wait on the backend.
	stop := context.AfterFunc(ctx, func() { pc.c.SetDeadline(aLongTimeAgo) })
	fail := func(err error) (*http.Response, error) {
		stop()
		pc.c.Close()
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, err
	}
	// One deadline for sending the request and receiving the response's
	// headers: the idle timeout.
	pc.c.SetDeadline(time.Now().Add(p.idleTimeout))
	if err := req.Write(pc.bw); err != nil {
		if reused {
			err = errors.Join(errIdleClosed, err)
		}
		return fail(err)
	}
	if err := pc.bw.Flush(); err != nil {
		if reused {
			err = errors.Join(errIdleClosed, err)
		}
		return fail(err)
	}
	trace := httptrace.ContextClientTrace(ctx)
	var resp *http.Response
	for {
		resp, err = http.ReadResponse(pc.br, req)
		if err != nil {
			if reused && pc.br.Buffered() == 0 && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err)) {
				err = errors.Join(errIdleClosed, err)
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() && ctx.Err() == nil {
				err = &headerTimeout{err}
			}
			return fail(err)
		}
		// 1xx but 101: interim, passed on (ReverseProxy hooks
		// Got1xxResponse), and the final answer follows.
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			if trace != nil && trace.Got1xxResponse != nil {
				if err := trace.Got1xxResponse(resp.StatusCode, textproto.MIMEHeader(resp.Header)); err != nil {
					return fail(err)
				}
			}
			continue
		}
		break
	}
	pc.c.SetDeadline(time.Time{})
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// The connection is the upgraded stream's now, not the pool's.
		stop()
		resp.Body = &upgradedConn{pc: pc}
		return resp, nil
	}
	resp.Body = &pooledBody{body: resp.Body, pc: pc, pool: p, stop: stop, keep: !resp.Close && !req.Close}
	return resp, nil
}

// headerTimeout: the backend took longer than the idle timeout to answer.
type headerTimeout struct{ err error }

func (e *headerTimeout) Error() string {
	return "timeout awaiting the backend's response headers: " + e.err.Error()
}
func (e *headerTimeout) Unwrap() error   { return e.err }
func (e *headerTimeout) Timeout() bool   { return true }
func (e *headerTimeout) Temporary() bool { return true }

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// pooledBody returns its connection to the pool once read to the end, and
// closes it when closed before.
type pooledBody struct {
	body io.ReadCloser
	pc   *poolConn
	pool *backendPool
	stop func() bool
	keep bool
	done bool
}

func (b *pooledBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.body.Read(p)
	if err == io.EOF {
		b.finish(true)
	} else if err != nil {
		b.finish(false)
	}
	return n, err
}

func (b *pooledBody) Close() error {
	if !b.done {
		b.finish(false)
	}
	return nil
}

func (b *pooledBody) finish(atEOF bool) {
	b.done = true
	// A body read to its end leaves the connection at the next response;
	// the body's Close also reads trailers that net/http keeps.
	b.body.Close()
	if !b.stop() || !atEOF || !b.keep {
		b.pc.c.Close()
		return
	}
	b.pool.put(b.pc)
}

// upgradedConn is a 101 response's body: the raw connection, starting with
// what the reader already buffered.
type upgradedConn struct{ pc *poolConn }

func (u *upgradedConn) Read(p []byte) (int, error)  { return u.pc.br.Read(p) }
func (u *upgradedConn) Write(p []byte) (int, error) { return u.pc.c.Write(p) }
func (u *upgradedConn) Close() error                { return u.pc.c.Close() }
