package proxy

import (
	"net/netip"
	"time"

	"github.com/keep-vip/keep-vip/balancer/internal/httpwire"
	"github.com/keep-vip/keep-vip/balancer/internal/policy"
	"github.com/keep-vip/keep-vip/balancer/internal/reactor"
	"golang.org/x/sys/unix"
)

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
	eof                  bool
	state                httpState
	done                 bool
	fromClient, toClient []byte // from the client not yet used; to it not yet written
	last                 time.Time
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
	requestLB *policy.LoadBalancer // the config the request runs under
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
	attempts  httpAttempts
	fresh     bool // the next backend connection must be a new one
}

// httpAttempts is how the request's tries of backends went, for the answer
// when none is left: 503 when none was tried (every backend is down), 502
// when some were and none answered, 504 when a connect timed out.
type httpAttempts uint8

const (
	noneTried    httpAttempts = iota
	someTried                 // a backend was picked; none answered yet
	someTimedOut              // and a connect timed out
)

// httpBackendSide is the backend an httpConn's request went to, and its
// connection.
type httpBackendSide struct {
	be          *policy.Backend
	u           *upstream
	ownUpstream *upstream // with the PROXY protocol: this client's idle one
	fromBackend []byte    // from the backend not yet used
	toBackend   []byte    // to the backend not yet written
	deadline    time.Time
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
	// heldFrom is where the held head starts in toClient.
	heldFrom int
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
// tcpConn.Event).
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
	if len(c.toClient) > 0 && !c.hold {
		if !c.flushOut() {
			return false
		}
		if len(c.toClient) > 0 {
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
	for len(c.toClient) > 0 && c.W {
		n, ok := c.writeClient(c.toClient)
		if !ok {
			return false
		}
		c.toClient = c.toClient[:copy(c.toClient, c.toClient[n:])]
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

// readClient reads from the client into c.fromClient; false when there was
// nothing to read (or the client is gone: c.eof).
func (c *httpConn) readClient() bool {
	if !c.R || c.eof {
		return false
	}
	if cap(c.fromClient)-len(c.fromClient) < 1024 {
		c.fromClient = append(c.fromClient, make([]byte, cap(c.fromClient))...)[:len(c.fromClient)]
	}
	buf := c.fromClient[len(c.fromClient):cap(c.fromClient)]
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
	c.fromClient = c.fromClient[:len(c.fromClient)+n]
	c.last = c.l.r.Now
	return true
}

// tunnel hands the client and backend sockets of an accepted upgrade to a
// byte-for-byte relay, with what each side already sent the other.
func (c *httpConn) tunnel() {
	u, be := c.u, c.be
	c.account(101)
	t := (&tcpConn{
		r: c.l.r, env: c.l.s.env, home: c.l, lb: c.lb, be: be, client: c.client,
		clientEnd:  tcpEnd{fd: c.fd, Readiness: c.Readiness},
		backendEnd: tcpEnd{fd: u.fd, Readiness: u.Readiness},
		up:         tcpDirection{pend: append([]byte(nil), c.fromClient...)},
		down:       tcpDirection{pend: append(append([]byte(nil), c.toClient...), c.fromBackend...)},
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
	lb := c.requestLB
	if lb == nil {
		lb = c.lb
	}
	switch {
	case c.state == hsLinger && now.After(c.lingerUntil):
		c.close()
	case c.state == hsConnect && now.After(c.deadline):
		c.connectFailed(errConnectTimeout)
		c.run()
	case c.state == hsAwaitHead && now.After(c.deadline) && !c.reqBody.Done && len(c.toBackend) == 0:
		// The client stopped sending its body (nginx answers 408 to
		// that; half a request cannot be answered): cut.
		c.abort(408)
	case c.state == hsAwaitHead && now.After(c.deadline):
		c.backendFailed(&timeoutError{"timeout awaiting the backend's response head"})
		c.run()
	case c.state == hsIdle && len(c.fromClient) > 0 && lb.IdleTimeout > 0 && now.Sub(c.headStart) >= lb.IdleTimeout:
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
	if c.ownUpstream != nil {
		c.ownUpstream.close()
		c.ownUpstream = nil
	}
	c.l.r.CloseFD(c.fd)
	delete(c.l.conns, c)
	c.lb.Clients.Dec()
	c.l.s.count.Closed()
}
