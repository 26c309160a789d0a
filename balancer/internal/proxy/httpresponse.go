package proxy

import (
	"errors"
	"time"

	"github.com/keep-vip/keep-vip/balancer/internal/httpwire"
	"github.com/keep-vip/keep-vip/balancer/internal/reactor"
	"golang.org/x/sys/unix"
)

// httpHoldHead is how long a response head waits for the first bytes of
// its body, to leave with them in one segment.
const httpHoldHead = time.Millisecond

// readUpstream reads from the backend into c.fromBackend.
func (c *httpConn) readUpstream() (n int, err error) {
	if cap(c.fromBackend)-len(c.fromBackend) < 1024 {
		c.fromBackend = append(c.fromBackend, make([]byte, max(cap(c.fromBackend), 4096))...)[:len(c.fromBackend)]
	}
	n, err = c.readUpstreamInto(c.fromBackend[len(c.fromBackend):cap(c.fromBackend)])
	c.fromBackend = c.fromBackend[:len(c.fromBackend)+n]
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
		end := httpwire.HeadEnd(c.fromBackend)
		if end > 0 && end <= httpwire.MaxHead {
			return c.startResponse(end)
		}
		if end > 0 || len(c.fromBackend) >= httpwire.MaxHead {
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

// startResponse passes on the response head in c.fromBackend[:end].
func (c *httpConn) startResponse(end int) bool {
	if err := httpwire.ParseResponse(c.fromBackend[:end], c.isHead, &c.resp); err != nil {
		c.backendFailed(err)
		return true
	}
	code := c.resp.Code
	if code < 200 && code != 101 {
		// Interim (100 Continue, 103): passed on, but never to an
		// HTTP/1.0 client (RFC 9110 15.2); the final answer follows.
		if !c.http10 {
			c.toClient = httpwire.AppendResponse(c.toClient, c.fromBackend[:end], &c.resp, true, false)
		}
		c.fromBackend = c.fromBackend[:copy(c.fromBackend, c.fromBackend[end:])]
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
		c.toClient = httpwire.AppendResponse(c.toClient, c.fromBackend[:end], &c.resp, false, true)
		c.fromBackend = c.fromBackend[:copy(c.fromBackend, c.fromBackend[end:])]
		c.tunnel()
		return false
	}
	if br := httpwire.NewBodyReader(c.resp.Body, c.resp.CloseDelimited); !br.Valid(c.fromBackend[end:]) {
		// Broken chunks already here: a 502 rather than half an answer.
		c.backendFailed(httpwire.ErrChunked)
		return true
	}
	c.clientKA = c.keepAlive && !c.resp.CloseDelimited && !c.l.s.stopping.Load()
	c.heldFrom = len(c.toClient)
	c.toClient = httpwire.AppendResponse(c.toClient, c.fromBackend[:end], &c.resp, c.clientKA, false)
	c.fromBackend = c.fromBackend[:copy(c.fromBackend, c.fromBackend[end:])]
	c.respBody = httpwire.NewBodyReader(c.resp.Body, c.resp.CloseDelimited)
	// On with the body at once: head and body leave in one write, one
	// segment for a small response, as nginx's writev sends them. A
	// backend that wrote its head and body apart (nginx does: writev,
	// then sendfile) sends the body microseconds later: the head waits
	// for it up to httpHoldHead (nginx's postpone_output waits for 1460
	// bytes or the end, however long).
	if len(c.fromBackend) == 0 && !c.respBody.Done {
		c.hold = true
		c.l.r.HoldUntil(c.fd, c, c.l.r.Now.Add(httpHoldHead))
	}
	c.relayResponse()
	return true
}

// relayResponse passes the body on until its end.
func (c *httpConn) relayResponse() bool {
	for {
		if len(c.fromBackend) > 0 {
			k, ok := c.passBody(c.fromBackend)
			if !ok {
				// Cut (done), or answered with a 502: then on.
				return !c.done
			}
			c.fromBackend = c.fromBackend[:copy(c.fromBackend, c.fromBackend[k:])]
		}
		if c.respBody.Done {
			c.finish()
			return true
		}
		if len(c.toClient) > 0 && !c.hold {
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
		c.fromBackend = append(c.fromBackend, scratch[k:n]...)
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
	if len(c.toClient) == 0 {
		w, ok := c.writeClient(data)
		if !ok {
			return 0, false
		}
		data = data[w:]
	}
	c.toClient = append(c.toClient, data...)
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
	if c.resp.Reusable && c.reqBody.Done && len(c.fromBackend) == 0 && len(c.toBackend) == 0 && !c.l.s.stopping.Load() {
		if c.requestLB.ProxyProtocol > 0 {
			u.owner, u.idleSince, u.reused, u.R = nil, c.l.r.Now, true, false
			c.ownUpstream = u
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
