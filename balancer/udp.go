package balancer

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Buffer sizes of the udp path. A datagram from a client is read into the
// one buffer of the socket's read loop; a reply into its session's buffer.
// A reply larger than udpReplyBuffer (nginx's proxy_buffer_size is as
// small) is dropped rather than cut.
const (
	udpReadBuffer   = 64 << 10
	udpReplyBuffer  = 16 << 10
	udpSocketBuffer = 4 << 20
	udpOOBBuffer    = 128
)

// udpServer keeps one session per client address: a socket connected to
// the client's backend, and a goroutine that sends the backend's replies
// back to the client from the frontend socket. Datagrams move without an
// allocation once the session exists.
type udpServer struct {
	b  *Balancer
	pc *net.UDPConn
	lb atomic.Pointer[loadBalancer]
	// pktinfo is the IP version of the destination-address control
	// messages on a wildcard-bound socket, 0 otherwise.
	pktinfo int
	// stopped: datagrams of clients without a session are dropped.
	stopped    atomic.Bool
	readerDone chan struct{}
	quit       chan struct{}

	mu       sync.RWMutex
	sessions map[netip.AddrPort]*udpSession
	closed   bool
	// sessWG counts session goroutines; added to under mu while !closed.
	sessWG sync.WaitGroup
	n      atomic.Int64
}

type udpSession struct {
	s      *udpServer
	client netip.AddrPort
	// oob sends replies from the address the client wrote to.
	oob  []byte
	lb   *loadBalancer
	be   *backend
	conn *net.UDPConn
	// last is the time of the last datagram either way, in UnixNano.
	last atomic.Int64
}

func (b *Balancer) serveUDP(pc *net.UDPConn, lb *loadBalancer) *udpServer {
	s := &udpServer{
		b: b, pc: pc, readerDone: make(chan struct{}), quit: make(chan struct{}),
		sessions: map[netip.AddrPort]*udpSession{},
	}
	s.lb.Store(lb)
	// Best effort: a burst larger than the default buffer is dropped by
	// the kernel before we read it.
	pc.SetReadBuffer(udpSocketBuffer)
	pc.SetWriteBuffer(udpSocketBuffer)
	v, err := enablePktinfo(pc)
	if err != nil {
		b.log.Warn().Err(err).Str("balancer", lb.name).Msg("udp: cannot learn datagrams' destination; replies leave from the route's preferred address")
	}
	s.pktinfo = v
	go s.read()
	go s.sweep()
	return s
}

func (s *udpServer) current() *loadBalancer           { return s.lb.Load() }
func (s *udpServer) compatible(lb *loadBalancer) bool { return lb.typ == TypeUDP }
func (s *udpServer) clients() int                     { return int(s.n.Load()) }

// update swaps the config; the idle timeout applies to sessions at once,
// backends to new sessions.
func (s *udpServer) update(lb *loadBalancer) { s.lb.Store(lb) }

// stop drops new clients. The socket keeps reading: open sessions go on
// until they idle out or the drain ends.
func (s *udpServer) stop() { s.stopped.Store(true) }

func (s *udpServer) drain(deadline time.Time) {
	for s.n.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(min(10*time.Millisecond, time.Until(deadline)))
	}
	s.mu.Lock()
	s.closed = true
	for _, sess := range s.sessions {
		sess.conn.Close()
	}
	s.mu.Unlock()
	s.pc.Close()
	close(s.quit)
	<-s.readerDone
	s.sessWG.Wait()
}

// read is the socket's one read loop: one reader keeps each client's
// datagrams in order.
func (s *udpServer) read() {
	defer close(s.readerDone)
	buf := make([]byte, udpReadBuffer)
	oob := make([]byte, udpOOBBuffer)
	var oobp []byte
	if s.pktinfo != 0 {
		oobp = oob
	}
	for {
		n, oobn, _, from, err := s.pc.ReadMsgUDPAddrPort(buf, oobp)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		s.forward(buf[:n], oob[:oobn], from)
	}
}

// forward sends one client datagram to the client's backend, opening a
// session first if the client has none.
func (s *udpServer) forward(p, oob []byte, from netip.AddrPort) {
	// Twice at most: a session that expired or failed under us is replaced
	// once.
	for range 2 {
		sess := s.session(from)
		if sess == nil {
			sess = s.open(from, oob)
			if sess == nil {
				return
			}
		}
		sess.last.Store(time.Now().UnixNano())
		if _, err := sess.conn.Write(p); err != nil {
			if !errors.Is(err, net.ErrClosed) {
				// The backend's port refused an earlier datagram.
				s.b.connectFailed(sess.be, err)
			}
			s.remove(sess)
			continue
		}
		sess.be.m.toBackend.Add(float64(len(p)))
		return
	}
}

func (s *udpServer) session(from netip.AddrPort) *udpSession {
	s.mu.RLock()
	sess := s.sessions[from]
	s.mu.RUnlock()
	return sess
}

// open starts a session for a new client; nil when the server is stopped
// or no backend is up.
func (s *udpServer) open(from netip.AddrPort, oob []byte) *udpSession {
	if s.stopped.Load() {
		return nil
	}
	lb := s.lb.Load()
	var tried triedSet
	be := s.b.pick(lb, from.Addr().Unmap(), &tried)
	if be == nil {
		s.b.warnNoBackend(lb, false)
		return nil
	}
	var d net.Dialer
	conn, err := d.DialUDP(context.Background(), "udp", nilAddrPort, be.ap)
	if err != nil {
		s.b.connectFailed(be, err)
		s.b.log.Debug().Err(err).Str("balancer", lb.name).Str("backend", be.name).Msg("udp session not opened")
		return nil
	}
	sess := &udpSession{s: s, client: from, lb: lb, be: be, conn: conn}
	sess.last.Store(time.Now().UnixNano())
	if s.pktinfo != 0 {
		if dst, ok := pktinfoDst(oob); ok {
			sess.oob = pktinfoSrc(s.pktinfo, dst)
		}
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		conn.Close()
		return nil
	}
	s.sessions[from] = sess
	s.sessWG.Add(1)
	s.mu.Unlock()

	s.n.Add(1)
	lb.mActive.Inc()
	be.st.active.Add(1)
	be.m.active.Inc()
	be.m.conns.Inc()
	go sess.replies()
	return sess
}

// remove ends sess if it is still the client's session.
func (s *udpServer) remove(sess *udpSession) {
	s.mu.Lock()
	if s.sessions[sess.client] == sess {
		delete(s.sessions, sess.client)
	}
	s.mu.Unlock()
	sess.conn.Close()
}

// replies sends the backend's datagrams to the client until the session is
// closed.
func (sess *udpSession) replies() {
	s := sess.s
	defer func() {
		s.remove(sess)
		s.n.Add(-1)
		sess.lb.mActive.Dec()
		sess.be.st.active.Add(-1)
		sess.be.m.active.Dec()
		s.sessWG.Done()
	}()
	buf := make([]byte, udpReplyBuffer)
	answered := false
	for {
		n, _, flags, _, err := sess.conn.ReadMsgUDPAddrPort(buf, nil)
		if err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				s.b.connectFailed(sess.be, err)
			}
			return
		}
		if !answered {
			// udp has no handshake: a reply is what shows the backend
			// alive, and clears its count of refusals.
			answered = true
			s.b.connectOK(sess.be)
		}
		if flags&syscall.MSG_TRUNC != 0 {
			continue
		}
		sess.last.Store(time.Now().UnixNano())
		if _, _, err := s.pc.WriteMsgUDPAddrPort(buf[:n], sess.oob, sess.client); err == nil {
			sess.be.m.toClient.Add(float64(n))
		}
	}
}

// sweep closes sessions idle for the load balancer's idle timeout, checking
// every quarter of it.
func (s *udpServer) sweep() {
	for {
		idle := s.lb.Load().idleTimeout
		t := time.NewTimer(max(idle/4, 5*time.Millisecond))
		select {
		case <-s.quit:
			t.Stop()
			return
		case <-t.C:
		}
		cutoff := time.Now().Add(-idle).UnixNano()
		s.mu.Lock()
		for k, sess := range s.sessions {
			if sess.last.Load() < cutoff {
				delete(s.sessions, k)
				sess.conn.Close()
			}
		}
		s.mu.Unlock()
	}
}
