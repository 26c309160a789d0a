package proxy

import (
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/keep-vip/keep-vip/balancer/internal/policy"
	"github.com/keep-vip/keep-vip/balancer/internal/reactor"
	"github.com/keep-vip/keep-vip/rpc/limits"
	"golang.org/x/sys/unix"
)

// Buffer sizes of the udp path. Datagrams from clients are read in batches
// into the server's buffers, replies into the loop's. A reply larger than
// udpReplyBuffer (nginx's proxy_buffer_size is as small) is dropped rather
// than cut.
const (
	udpReadBuffer   = 64 << 10
	udpReplyBuffer  = 16 << 10
	udpSocketBuffer = 4 << 20
	udpOOBBuffer    = 128
	// udpBatch is how many client datagrams one turn of the loop takes
	// (one recvmmsg) from the level-triggered client socket: the rest
	// wait for the next turn, among the replies that came meanwhile, as
	// nginx takes one per turn. Larger batches, or reading the socket
	// dry, cost fewer syscalls and, measured, a longer tail of latency.
	udpBatch = 1
)

// UDPServer keeps one session per client address: a socket connected to
// the client's backend, whose replies go back to the client from the
// frontend's socket. Each event loop serves a shard: its own socket of the
// frontend's SO_REUSEPORT group (see reactor.OpenUDPGroup) and the sessions of the
// clients the kernel hashes to it, so that one client's datagrams stay in
// order on one loop while the clients spread over all of them. Datagrams
// move without an allocation once the session exists.
type UDPServer struct {
	env  *Env
	sock *reactor.Socket
	lb   atomic.Pointer[policy.LoadBalancer]
	// pktinfo is the IP version of the destination-address control
	// messages on a wildcard-bound socket, 0 otherwise.
	pktinfo int
	// stopped: datagrams of clients without a session are dropped.
	stopped atomic.Bool
	count   reactor.ConnCount
	shards  []*udpShard
}

// udpShard is the part of a udp server one loop runs; all of it is the
// loop's.
type udpShard struct {
	s         *UDPServer
	r         *reactor.Loop
	fd        int // the loop's duplicate of its socket of the group
	sessions  map[netip.AddrPort]*udpSession
	in        *mmsgBatch
	stopCheck func()
}

type udpSession struct {
	sh     *udpShard
	fd     int // connected to the backend
	client netip.AddrPort
	lb     *policy.LoadBalancer
	be     *policy.Backend
	last   time.Time
	// reply is the sendmsg header of replies: the client's address and
	// the control message that sends from the address the client wrote
	// to.
	reply    unix.Msghdr
	iov      unix.Iovec
	name     unix.RawSockaddrInet6
	oob      []byte
	answered bool
	closed   bool
}

// ServeUDP serves lb on sock's sockets, one shard each, spread over env's
// event loops.
func ServeUDP(env *Env, sock *reactor.Socket, lb *policy.LoadBalancer) *UDPServer {
	s := &UDPServer{env: env, sock: sock}
	s.lb.Store(lb)
	fds := sock.Fds()
	// Every socket is set up before any loop reads one.
	for _, fd := range fds {
		// Best effort: a burst larger than the default buffer is
		// dropped by the kernel before we read it.
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, udpSocketBuffer)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, udpSocketBuffer)
		v, err := reactor.EnablePktinfo(fd, sock.Addr)
		if err != nil {
			env.Log.Warn().Err(err).Str("balancer", lb.Name).Msg("udp: cannot learn datagrams' destination; replies leave from the route's preferred address")
		} else if v != 0 {
			s.pktinfo = v
		}
	}
	for i, fd := range fds {
		sh := &udpShard{s: s, r: env.Loops.Loops[i%len(env.Loops.Loops)], fd: -1, sessions: map[netip.AddrPort]*udpSession{},
			in: newMmsgBatch(udpBatch, udpReadBuffer, udpOOBBuffer)}
		var err error
		if sh.fd, err = reactor.DupFD(fd); err == nil {
			sh.r.Do(func() { err = sh.r.Add(sh.fd, sh, unix.EPOLLIN) })
		}
		if err != nil {
			env.Log.Error().Err(err).Str("balancer", lb.Name).Msg("udp load balancer cannot read its socket")
		}
		sh.stopCheck = sh.r.Every(max(lb.IdleTimeout/4, reactor.Tick), sh.sweep)
		s.shards = append(s.shards, sh)
	}
	return s
}

func (s *UDPServer) Current() *policy.LoadBalancer           { return s.lb.Load() }
func (s *UDPServer) Compatible(lb *policy.LoadBalancer) bool { return lb.Type == limits.TypeUDP }
func (s *UDPServer) Clients() int                            { return int(s.count.N.Load()) }

// Update swaps the config; the idle timeout applies to sessions at once,
// backends to new sessions.
func (s *UDPServer) Update(lb *policy.LoadBalancer) { s.lb.Store(lb) }

// Stop drops new clients. The sockets keep reading: open sessions go on
// until they idle out or the drain ends.
func (s *UDPServer) Stop() { s.stopped.Store(true) }

func (s *UDPServer) Drain(deadline time.Time) {
	s.count.WaitEmpty(time.Until(deadline))
	for _, sh := range s.shards {
		sh.r.Do(func() {
			for _, sess := range sh.sessions {
				sess.close()
			}
			if sh.fd >= 0 {
				sh.r.CloseFD(sh.fd)
				sh.fd = -1
			}
		})
		sh.stopCheck()
	}
	s.sock.Close()
}

// SessionsPerShard is how many sessions each shard holds now, in the
// order of the server's sockets.
func (s *UDPServer) SessionsPerShard() []int {
	n := make([]int, len(s.shards))
	for i, sh := range s.shards {
		sh.r.Do(func() { n[i] = len(sh.sessions) })
	}
	return n
}

// Event reads a batch of the clients' datagrams; level-triggered epoll
// reports the socket again while more wait.
func (sh *udpShard) Event(fd int, _ uint32) {
	if fd < 0 || sh.fd < 0 {
		return
	}
	n, err := sh.in.recv(fd)
	for err == unix.EINTR {
		n, err = sh.in.recv(fd)
	}
	if err != nil {
		return
	}
	for i := range n {
		m := &sh.in.msgs[i]
		if m.hdr.Flags&unix.MSG_TRUNC != 0 {
			continue
		}
		sh.forward(sh.in.bufs[i][:m.n], sh.in.oobs[i][:m.hdr.Controllen], rawAddrPort(&sh.in.names[i]))
	}
}

// forward sends one client datagram to the client's backend, opening a
// session first if the client has none.
func (sh *udpShard) forward(p, oob []byte, from netip.AddrPort) {
	// Twice at most: a session that failed under us is replaced once.
	for range 2 {
		sess := sh.sessions[from]
		if sess == nil {
			if sess = sh.open(from, oob); sess == nil {
				return
			}
		}
		sess.last = sh.r.Now
		if _, err := reactor.SysWrite(sess.fd, p); err != nil {
			if err == unix.EAGAIN || sh.s.env.NoteLocal(sess.lb.Name, policy.OpConnect, err) {
				// The socket is full, or the balancer short of
				// buffers: dropped, as the kernel would.
				return
			}
			// The backend's port refused an earlier datagram.
			sh.s.env.ConnectFailed(sess.be, err)
			sess.close()
			continue
		}
		sess.be.Metrics.ToBackend.Add(float64(len(p)))
		return
	}
}

// open starts a session for a new client; nil when the server is stopped
// or no backend is up.
func (sh *udpShard) open(from netip.AddrPort, oob []byte) *udpSession {
	s := sh.s
	if s.stopped.Load() {
		return nil
	}
	lb := s.lb.Load()
	var tried policy.TriedSet
	be := s.env.Pick(lb, from.Addr().Unmap(), &tried)
	if be == nil {
		s.env.WarnNoBackend(lb, false)
		return nil
	}
	fd, err := connectSocket(be.AddrPort, unix.SOCK_DGRAM)
	sess := &udpSession{sh: sh, fd: fd, client: from, lb: lb, be: be, last: sh.r.Now}
	if err == nil {
		if err = sh.r.Add(fd, sess, unix.EPOLLIN); err != nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		s.env.ConnectFailed(be, err)
		s.env.Log.Debug().Err(err).Str("balancer", lb.Name).Str("backend", be.Name).Msg("udp session not opened")
		return nil
	}
	if s.pktinfo != 0 {
		if dst, ok := reactor.PktinfoDst(oob); ok {
			sess.oob = reactor.PktinfoSrc(s.pktinfo, dst)
		}
	}
	sess.reply.Name = (*byte)(unsafe.Pointer(&sess.name))
	sess.reply.Namelen = putRawAddr(&sess.name, from)
	sess.reply.Iov = &sess.iov
	sess.reply.SetIovlen(1)
	if len(sess.oob) > 0 {
		sess.reply.Control = &sess.oob[0]
		sess.reply.SetControllen(len(sess.oob))
	}
	sh.sessions[from] = sess
	s.count.Opened()
	lb.Clients.Inc()
	be.State.Active.Add(1)
	be.Metrics.Active.Inc()
	be.Metrics.Conns.Inc()
	return sess
}

// Event sends a backend's reply back to the client, from the shard's
// socket (every socket of the group has the frontend's address). The
// session's socket is level-triggered and read once per event: epoll
// reports it again while more replies wait, so the loop needs no read that
// finds the socket empty (a sixth of the syscalls of a datagram's round
// trip).
func (sess *udpSession) Event(fd int, _ uint32) {
	if sess.closed {
		return
	}
	sh, env := sess.sh, sess.sh.s.env
	buf := sh.r.Scratch[:udpReplyBuffer]
	n, flags, err := recvOne(fd, buf)
	for err == unix.EINTR {
		n, flags, err = recvOne(fd, buf)
	}
	switch {
	case err == unix.EAGAIN:
		return
	case err != nil:
		if err == unix.ECONNREFUSED {
			env.ConnectFailed(sess.be, err)
		}
		sess.close()
		return
	}
	if !sess.answered {
		// udp has no handshake: a reply is what shows the backend
		// alive, and clears its count of refusals.
		sess.answered = true
		env.ConnectOK(sess.be)
	}
	if flags&unix.MSG_TRUNC != 0 {
		return
	}
	sess.last = sh.r.Now
	sess.iov.Base = unsafe.SliceData(buf)
	sess.iov.SetLen(n)
	if _, _, e := syscall.RawSyscall(syscall.SYS_SENDMSG, uintptr(sh.fd), uintptr(unsafe.Pointer(&sess.reply)), 0); e == 0 {
		sess.be.Metrics.ToClient.Add(float64(n))
	}
	sess.iov.Base = nil
}

// close ends the session; safe to call twice.
func (sess *udpSession) close() {
	if sess.closed {
		return
	}
	sess.closed = true
	sh := sess.sh
	if sh.sessions[sess.client] == sess {
		delete(sh.sessions, sess.client)
	}
	sh.r.CloseFD(sess.fd)
	sess.lb.Clients.Dec()
	sess.be.State.Active.Add(-1)
	sess.be.Metrics.Active.Dec()
	sh.s.count.Closed()
}

// sweep closes the shard's sessions idle for the load balancer's idle
// timeout.
func (sh *udpShard) sweep(now time.Time) {
	idle := sh.s.lb.Load().IdleTimeout
	for _, sess := range sh.sessions {
		if now.Sub(sess.last) >= idle {
			sess.close()
		}
	}
}
