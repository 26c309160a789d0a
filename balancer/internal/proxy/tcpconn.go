package proxy

import (
	"net"
	"net/netip"
	"time"

	"github.com/keep-vip/keep-vip/balancer/internal/policy"
	"github.com/keep-vip/keep-vip/balancer/internal/proxyheader"
	"github.com/keep-vip/keep-vip/balancer/internal/reactor"
	"golang.org/x/sys/unix"
)

// tcpEnd is one end of a proxied connection, the client's or the
// backend's.
type tcpEnd struct {
	fd int
	// What epoll last said of the socket, cleared on EAGAIN or a short
	// read (the socket was drained: edge-triggered epoll reports data
	// arriving after that).
	reactor.Readiness
	// eof: this end sent its end (a read returned 0); shut: our writes
	// to it are shut (SHUT_WR), after the other end's eof.
	eof, shut bool
}

// tcpDirection is one way a connection's bytes go, from one end to the
// other, and what the receiving end could not take yet.
type tcpDirection struct {
	from, to  *tcpEnd
	toBackend bool
	// pend: bytes copied, waiting for the receiving end.
	pend []byte
	// pipe: the direction streams through this pipe (splice); nil
	// while it copies.
	pipe *reactor.Pipe
	// inFlight: a write waits in the loop's ring; the direction moves
	// nothing more until it is done.
	inFlight bool
}

// more: the direction has data to read and room to write it, so epoll,
// edge-triggered, will not say so again.
func (d *tcpDirection) more() bool { return d.from.R && d.to.W && !d.from.eof }

// tcpConn is one proxied connection: its two ends and its two directions,
// up (client to backend) and down.
type tcpConn struct {
	r      *reactor.Loop
	env    *Env
	home   connHome
	lb     *policy.LoadBalancer
	be     *policy.Backend
	client netip.AddrPort
	// clientEnd and backendEnd are the connection's ends, up and down
	// its directions between them (see wire).
	clientEnd, backendEnd tcpEnd
	up, down              tcpDirection
	connecting, done      bool
	queued                bool // a later call is asked for
	// resume: a direction stopped for a write in the ring with more to
	// do.
	resume bool
	// noSplice: splice failed on these sockets; directions without a
	// pipe copy.
	noSplice               bool
	tried                  policy.TriedSet
	deadline, last         time.Time
	counted, backendActive bool
}

// wire points the directions at the ends they join.
func (c *tcpConn) wire() *tcpConn {
	c.up.from, c.up.to, c.up.toBackend = &c.clientEnd, &c.backendEnd, true
	c.down.from, c.down.to, c.down.toBackend = &c.backendEnd, &c.clientEnd, false
	return c
}

// connectNext starts a connect to the next backend the algorithm picks,
// each at most once; with none left the client is closed at once.
func (c *tcpConn) connectNext() {
	env, lb := c.env, c.lb
	src := lb.HashKey(c.client)
	for {
		be := env.Pick(lb, src, &c.tried)
		if be == nil {
			env.WarnNoBackend(lb, c.be != nil)
			c.close()
			return
		}
		c.tried.Add(be.Index)
		c.be = be
		fd, err := connectNonblock(be.AddrPort)
		if err == nil {
			if err = c.r.Add(fd, c, reactor.EvConn); err != nil {
				unix.Close(fd)
			}
		}
		if err == nil {
			c.backendEnd.fd, c.connecting, c.backendEnd.W, c.backendEnd.R = fd, true, false, false
			c.deadline = c.r.Now.Add(lb.ConnectTimeout)
			return
		}
		if env.ConnectFailed(be, err) {
			// The balancer's own fault: no other backend would fare
			// better.
			c.close()
			return
		}
		env.Log.Debug().Err(err).Str("balancer", lb.Name).Str("backend", be.Name).Msg("backend connect failed, trying the next")
	}
}

func (c *tcpConn) connectFailed(err error) {
	c.r.CloseFD(c.backendEnd.fd)
	c.backendEnd.fd, c.connecting = -1, false
	if c.home.cutting() {
		c.close()
		return
	}
	if c.env.ConnectFailed(c.be, err) {
		c.close()
		return
	}
	c.env.Log.Debug().Err(err).Str("balancer", c.lb.Name).Str("backend", c.be.Name).Msg("backend connect failed, trying the next")
	c.connectNext()
}

// connected: the backend accepted. The PROXY protocol header goes first.
func (c *tcpConn) connected() {
	env, be := c.env, c.be
	c.connecting = false
	c.last = c.r.Now
	env.ConnectOK(be)
	be.State.Active.Add(1)
	be.Metrics.Active.Inc()
	be.Metrics.Conns.Inc()
	c.backendActive = true
	if c.lb.ProxyProtocol > 0 {
		var buf headerBuffer
		local, _ := unix.Getsockname(c.clientEnd.fd)
		dst := sockaddrAddrPort(local)
		if err := proxyheader.Write(&buf, c.lb.ProxyProtocol, net.TCPAddrFromAddrPort(c.client), net.TCPAddrFromAddrPort(dst)); err != nil {
			c.close()
			return
		}
		c.up.pend = buf.b
	}
	if e := env.Log.Debug(); e.Enabled() {
		e.Str("balancer", c.lb.Name).Str("client", c.client.String()).Str("backend", be.Name).Msg("connection proxied")
	}
}

type headerBuffer struct{ b []byte }

func (h *headerBuffer) Write(p []byte) (int, error) { h.b = append(h.b, p...); return len(p), nil }

// tcpBudget bounds the reads one event makes per direction, so a fast
// sender cannot starve the loop's other connections.
const tcpBudget = 16

func (c *tcpConn) Event(fd int, ev uint32) {
	if c.done {
		return
	}
	if fd == c.clientEnd.fd {
		c.clientEnd.Note(ev)
	} else {
		c.backendEnd.Note(ev)
	}
	if ev != 0 && deferIO {
		// The I/O waits until the loop has polled once more (see
		// later), as HAProxy's waits for its tasklets: what arrives
		// meanwhile (a response's head and body sent by two writes) is
		// read and passed on in one go, one segment instead of two.
		if !c.queued {
			c.queued = true
			c.r.Later(c.clientEnd.fd, c)
		}
		return
	}
	c.queued = false
	if c.connecting {
		if !c.backendEnd.W {
			return
		}
		if errno, err := unix.GetsockoptInt(c.backendEnd.fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || errno != 0 {
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
	ok := c.flow(&c.up, &budget)
	if ok {
		budget = tcpBudget
		ok = c.flow(&c.down, &budget)
	}
	switch {
	case !ok:
		c.close()
	case c.clientEnd.eof && c.backendEnd.eof && c.clientEnd.shut && c.backendEnd.shut:
		c.close()
	case c.up.more() || c.down.more():
		// Out of budget with data left: epoll will not say so again.
		c.r.Later(c.clientEnd.fd, c)
	}
}

// flow moves what d's sending end has to its receiving end, until the
// sender is drained, the receiver is full or the budget is spent; at the
// sender's end it half-closes the receiver. What the receiver could not
// take waits in d.pend (copied) or in d.pipe (spliced), and goes first.
// It returns false when a socket failed: the connection is then cut both
// ways.
func (c *tcpConn) flow(d *tcpDirection, budget *int) bool {
	scratch := c.r.Scratch
	src, dst := d.from, d.to
	if d.inFlight {
		c.resume = true
		return true
	}
	for {
		if len(d.pend) > 0 || (d.pipe != nil && d.pipe.N > 0) {
			if all, ok := d.passPending(); !ok || !all {
				return ok
			}
		}
		if src.eof {
			if !dst.shut {
				unix.Shutdown(dst.fd, unix.SHUT_WR)
				dst.shut = true
			}
			return true
		}
		if !src.R || !dst.W || *budget <= 0 {
			return true
		}
		*budget--
		var n int
		var err error
		if d.pipe != nil {
			n, err = d.pipe.In(src.fd)
		} else {
			n, err = reactor.SysRead(src.fd, scratch)
		}
		switch {
		case err == unix.EAGAIN:
			src.R = false
			return true
		case err == unix.EINTR:
			continue
		case d.pipe != nil && (err == unix.EINVAL || err == unix.ENOSYS):
			// Sockets splice cannot read: this direction copies from
			// now on (its pipe is empty, nothing was moved), and no
			// other starts splicing.
			c.noSplice = true
			c.r.ClosePipe(d.pipe)
			d.pipe = nil
			continue
		case err != nil:
			return false
		case n == 0:
			src.eof = true
			continue
		}
		c.moved(n, d.toBackend)
		if d.pipe != nil {
			// A short splice does not mean src is drained (see
			// reactor.Pipe.In): the next one says so.
			continue
		}
		if n < len(scratch) && !src.Rdhup {
			src.R = false
		}
		if c.r.Ring != nil && n <= reactor.SendRingMax {
			c.r.Ring.Queue(dst.fd, scratch[:n], c, d.toBackend)
			d.inFlight = true
			if src.R {
				c.resume = true
			}
			return true
		}
		if n == len(scratch) && c.lb.Splice && !c.noSplice {
			// A full buffer: src streams. The rest goes by splice.
			d.pipe = c.r.NewPipe()
		}
		w, err := reactor.SysWrite(dst.fd, scratch[:n])
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			w = 0
		case err != nil:
			return false
		}
		if w < n {
			d.pend = append([]byte(nil), scratch[w:n]...)
			dst.W = false
			return true
		}
	}
}

// passPending writes to the receiving end what waits for it: the copied
// bytes, then the pipe's. all reports that nothing waits any more; ok is
// false when the receiver failed.
func (d *tcpDirection) passPending() (all, ok bool) {
	dst, p := d.to, d.pipe
	for len(d.pend) > 0 || (p != nil && p.N > 0) {
		if !dst.W {
			return false, true
		}
		var err error
		var left bool
		if len(d.pend) > 0 {
			var n int
			if n, err = reactor.SysWrite(dst.fd, d.pend); err == nil {
				d.pend = d.pend[n:]
				if left = len(d.pend) > 0; !left {
					d.pend = nil
				}
			}
		} else {
			err = p.Out(dst.fd)
			left = p.N > 0
		}
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			dst.W = false
			return false, true
		case err != nil:
			return false, false
		case left:
			// A short write: dst is full.
			dst.W = false
			return false, true
		}
	}
	return true, true
}

// Written hears how a write through the loop's ring went; up: the up
// direction's.
func (c *tcpConn) Written(up bool, data []byte, n int, err error) {
	d := &c.down
	if up {
		d = &c.up
	}
	d.inFlight = false
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
		d.pend = append([]byte(nil), data[n:]...)
		d.to.W = false
	}
	if c.resume {
		c.resume = false
		c.r.Later(c.clientEnd.fd, c)
	}
}

// moved counts n bytes read from one side.
func (c *tcpConn) moved(n int, toBackend bool) {
	c.last = c.r.Now
	if toBackend {
		c.be.Metrics.ToBackend.Add(float64(n))
	} else {
		c.be.Metrics.ToClient.Add(float64(n))
	}
}

// close ends both sides and the accounting; safe to call twice.
func (c *tcpConn) close() {
	if c.done {
		return
	}
	if (c.up.inFlight || c.down.inFlight) && c.r.Ring != nil {
		// Its writes go first: their descriptors are about to close.
		c.r.Ring.Flush()
	}
	c.done = true
	c.r.CloseFD(c.clientEnd.fd)
	c.r.CloseFD(c.backendEnd.fd)
	c.clientEnd.fd, c.backendEnd.fd = -1, -1
	c.r.ClosePipe(c.up.pipe)
	c.r.ClosePipe(c.down.pipe)
	c.up.pipe, c.down.pipe = nil, nil
	if c.backendActive {
		c.be.State.Active.Add(-1)
		c.be.Metrics.Active.Dec()
	}
	if c.counted {
		c.home.forget(c)
	}
}
