package proxy

import (
	"strconv"

	"github.com/keep-vip/keep-vip/balancer/internal/httpwire"
	"github.com/keep-vip/keep-vip/balancer/internal/policy"
)

// refuse answers a request the proxy will not pass on, and closes.
func (c *httpConn) refuse(he *httpwire.Error) {
	c.l.s.lb.Load().OwnAnswers.Request(he.Code)
	// The request did not parse, so its method is unknown: the answer
	// has its body, and the connection ends after it.
	c.toClient = appendError(c.toClient, he.Code, statusText(he.Code)+": "+he.Msg, false, false)
	c.state = hsClosing
}

// noBackend answers when no backend took the request.
func (c *httpConn) noBackend() {
	lb := c.requestLB
	c.l.s.env.WarnNoBackend(lb, c.attempts != noneTried)
	code, msg := 503, "every backend is down"
	switch c.attempts {
	case someTimedOut:
		code, msg = 504, "no backend answered in time"
	case someTried:
		code, msg = 502, "no backend answered"
	}
	c.answerNone(code, statusText(code)+": "+msg)
}

// outOfResources answers a request the balancer could not pass on for
// want of its own resources (see policy.Judge.NoteLocal): no backend is to blame,
// and none is tried.
func (c *httpConn) outOfResources() {
	c.answerNone(503, "Service Unavailable: the proxy is out of resources")
}

// answerNone ends the request with an answer no backend gave.
func (c *httpConn) answerNone(code int, msg string) {
	lb := c.requestLB
	lb.OwnAnswers.Request(code)
	c.l.s.env.Metrics.Duration.WithLabelValues(lb.Name, policy.BackendNone).Observe(c.l.r.Now.Sub(c.start).Seconds())
	c.answerError(code, msg)
}

// answerError ends the request with an error of the proxy's own.
func (c *httpConn) answerError(code int, msg string) {
	c.clientKA = c.keepAlive && c.reqBody.Done && !c.l.s.stopping.Load()
	c.toClient = appendError(c.toClient, code, msg, c.clientKA, c.isHead)
	c.endRequest()
}

// backendFailed: the backend connection broke before a response head. A
// reused connection the backend had closed is retried once on a new one
// when the request can be sent again; else the client gets 502, or 504.
func (c *httpConn) backendFailed(err error) {
	be, u := c.be, c.u
	if u.reused && !c.bodySent && c.retryable && len(c.fromBackend) == 0 && !c.fresh && c.state != hsRelay {
		c.releaseBackendClosing()
		c.fresh = true
		c.tried = policy.TriedSet{}
		c.connect()
		return
	}
	c.releaseBackendClosing()
	c.l.s.env.Log.Debug().Err(err).Str("balancer", c.requestLB.Name).Str("backend", be.Name).Msg("http backend failed")
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
	c.toClient, c.hold = c.toClient[:c.heldFrom], false
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
