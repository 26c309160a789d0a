package proxy

import (
	"errors"
	"net"

	"github.com/keep-vip/keep-vip/balancer/internal/httpwire"
	"github.com/keep-vip/keep-vip/balancer/internal/policy"
	"github.com/keep-vip/keep-vip/balancer/internal/proxyheader"
	"github.com/keep-vip/keep-vip/balancer/internal/reactor"
	"golang.org/x/sys/unix"
)

// readRequest waits for a whole request head, then starts the request.
func (c *httpConn) readRequest() bool {
	if !c.skippedEmpty {
		// One empty line before a request line is ignored (RFC 9112
		// 2.2): some clients end a body with one more CRLF. One only,
		// so that a trickle of them still meets the head's timeout.
		if n := httpwire.EmptyLine(c.fromClient); n > 0 {
			c.fromClient = c.fromClient[:copy(c.fromClient, c.fromClient[n:])]
			c.skippedEmpty = true
		}
	}
	end := httpwire.HeadEnd(c.fromClient)
	if end > httpwire.MaxHead {
		c.refuse(&httpwire.Error{Code: 431, Msg: "request head too large"})
		return true
	}
	if end < 0 {
		switch {
		case len(c.fromClient) >= httpwire.MaxHead:
			c.refuse(&httpwire.Error{Code: 431, Msg: "request head too large"})
			return true
		case c.eof:
			c.close()
			return false
		}
		empty := len(c.fromClient) == 0
		more := c.readClient()
		if empty && len(c.fromClient) > 0 {
			c.headStart = c.l.r.Now
		}
		return more
	}
	var h httpwire.RequestHead
	if err := httpwire.ParseRequest(c.fromClient[:end], &h); err != nil {
		var he *httpwire.Error
		if !errors.As(err, &he) {
			he = &httpwire.Error{Code: 400, Msg: err.Error()}
		}
		c.refuse(he)
		return true
	}
	c.requestLB, c.skippedEmpty = c.l.s.lb.Load(), false
	c.isHead, c.upgrade, c.http10 = h.IsHead(), h.WantsUpgrade(), h.Minor == 0
	c.keepAlive = h.KeepAlive && h.Minor == 1
	m := string(h.Method)
	c.retryable = (h.Body.Length <= 0 && !h.Body.Chunked) &&
		(m == "GET" || m == "HEAD" || m == "OPTIONS" || m == "TRACE" || m == "PUT" || m == "DELETE")
	c.fwd = httpwire.AppendRequest(c.fwd[:0], c.fromClient[:end], &h, c.ip, c.localAddr)
	if !h.Body.Chunked && h.Body.Length < 0 {
		h.Body.Length = 0
	}
	c.reqBody = httpwire.NewBodyReader(h.Body, false)
	if !c.reqBody.Valid(c.fromClient[end:]) {
		// Chunks already here that no backend may see: refused before
		// one is chosen.
		c.refuse(&httpwire.Error{Code: 400, Msg: httpwire.ErrChunked.Error()})
		return true
	}
	c.bodySent = false
	c.fromClient = c.fromClient[:copy(c.fromClient, c.fromClient[end:])]
	c.start = c.l.r.Now
	c.tried, c.attempts, c.fresh = policy.TriedSet{}, noneTried, false
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

// connect hands the request to the next backend the algorithm picks, over
// a pooled connection or a new one; with none left it answers 502, 503 or
// 504.
func (c *httpConn) connect() {
	env, lb := c.l.s.env, c.requestLB
	src := lb.HashKey(c.client)
	for {
		be := env.Pick(lb, src, &c.tried)
		if be == nil {
			c.noBackend()
			return
		}
		c.tried.Add(be.Index)
		c.attempts = max(c.attempts, someTried)
		u, connecting, err := c.upstreamFor(be)
		if err != nil {
			if env.ConnectFailed(be, err) {
				c.outOfResources()
				return
			}
			env.Log.Debug().Err(err).Str("balancer", lb.Name).Str("backend", be.Name).Msg("backend connect failed, trying the next")
			continue
		}
		c.be, c.u, u.owner = be, u, c
		be.State.Active.Add(1)
		be.Metrics.Active.Inc()
		c.toBackend = append(c.toBackend[:0], c.fwd...)
		if connecting {
			c.state = hsConnect
			c.deadline = c.l.r.Now.Add(lb.ConnectTimeout)
			if lb.ProxyProtocol > 0 {
				local, _ := unix.Getsockname(c.fd)
				var hb headerBuffer
				if err := proxyheader.Write(&hb, lb.ProxyProtocol, net.TCPAddrFromAddrPort(c.client), net.TCPAddrFromAddrPort(sockaddrAddrPort(local))); err == nil {
					c.toBackend = append(hb.b, c.toBackend...)
				}
			}
		} else {
			c.state = hsAwaitHead
			c.deadline = c.l.r.Now.Add(lb.IdleTimeout)
		}
		c.fromBackend, c.accounted = c.fromBackend[:0], false
		return
	}
}

// upstreamFor is a connection to be: the client's own with the PROXY
// protocol, else a pooled one, else a new one: connecting.
func (c *httpConn) upstreamFor(be *policy.Backend) (u *upstream, connecting bool, err error) {
	now := c.l.r.Now
	if c.requestLB.ProxyProtocol > 0 {
		if u := c.ownUpstream; u != nil {
			c.ownUpstream = nil
			if u.be.State == be.State && !c.fresh && (now.Sub(u.idleSince) < IdleCheckAfter || peekAlive(u.fd)) {
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
	if c.reqBody.Done && c.R && !c.eof && len(c.fromClient) < httpwire.MaxHead {
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
		c.l.s.env.ConnectOK(c.be)
		c.be.Metrics.Conns.Inc()
		c.deadline = c.l.r.Now.Add(c.requestLB.IdleTimeout)
	}
	progress := false
	// The request, head then body, to the backend.
	for len(c.toBackend) > 0 && u.W {
		n, err := reactor.SysWrite(u.fd, c.toBackend)
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
			c.deadline = c.l.r.Now.Add(c.requestLB.IdleTimeout)
		}
		c.toBackend = c.toBackend[:copy(c.toBackend, c.toBackend[n:])]
		if len(c.toBackend) > 0 {
			u.W = false
		}
		progress = true
	}
	if len(c.toBackend) == 0 && !c.reqBody.Done {
		if len(c.fromClient) > 0 {
			n, err := c.reqBody.Take(c.fromClient)
			if err != nil {
				c.badBody()
				return false
			}
			c.toBackend = append(c.toBackend, c.fromClient[:n]...)
			c.fromClient = c.fromClient[:copy(c.fromClient, c.fromClient[n:])]
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
	c.fromClient = append(c.fromClient, scratch[k:n]...)
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
			c.deadline = c.l.r.Now.Add(c.requestLB.IdleTimeout)
		}
	}
	c.toBackend = append(c.toBackend, data[w:]...)
	return false, false
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
		c.attempts = someTimedOut
	}
	if c.l.s.env.ConnectFailed(be, err) {
		c.outOfResources()
		return
	}
	c.l.s.env.Log.Debug().Err(err).Str("balancer", c.requestLB.Name).Str("backend", be.Name).Msg("backend connect failed, trying the next")
	c.connect()
}

func (c *httpConn) releaseBackendClosing() {
	u := c.u
	c.releaseBackend()
	if u != nil {
		u.close()
	}
}
