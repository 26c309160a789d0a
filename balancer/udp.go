package balancer

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/keep-vip/keep-vip/balancer/internal/policy"
	"github.com/keep-vip/keep-vip/balancer/internal/reactor"
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

// udpServer keeps one session per client address: a socket connected to
// the client's backend, whose replies go back to the client from the
// frontend's socket. Each event loop serves a shard: its own socket of the
// frontend's SO_REUSEPORT group (see openUDPGroup) and the sessions of the
// clients the kernel hashes to it, so that one client's datagrams stay in
// order on one loop while the clients spread over all of them. Datagrams
// move without an allocation once the session exists.
type udpServer struct {
	b    *Balancer
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
	s        *udpServer
	r        *reactor.Loop
	fd       int // the loop's duplicate of its socket of the group
	sessions map[netip.AddrPort]*udpSession
	in       *mmsgBatch
	stopT    func()
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

func (b *Balancer) serveUDP(sock *reactor.Socket, lb *policy.LoadBalancer) *udpServer {
	s := &udpServer{b: b, sock: sock}
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
			b.log.Warn().Err(err).Str("balancer", lb.Name).Msg("udp: cannot learn datagrams' destination; replies leave from the route's preferred address")
		} else if v != 0 {
			s.pktinfo = v
		}
	}
	for i, fd := range fds {
		sh := &udpShard{s: s, r: b.loops.Loops[i%len(b.loops.Loops)], fd: -1, sessions: map[netip.AddrPort]*udpSession{},
			in: newMmsgBatch(udpBatch, udpReadBuffer, udpOOBBuffer)}
		var err error
		if sh.fd, err = reactor.DupFD(fd); err == nil {
			sh.r.Do(func() { err = sh.r.Add(sh.fd, sh, unix.EPOLLIN) })
		}
		if err != nil {
			b.log.Error().Err(err).Str("balancer", lb.Name).Msg("udp load balancer cannot read its socket")
		}
		sh.stopT = sh.r.Every(max(lb.IdleTimeout/4, reactor.Tick), sh.sweep)
		s.shards = append(s.shards, sh)
	}
	return s
}

func (s *udpServer) current() *policy.LoadBalancer           { return s.lb.Load() }
func (s *udpServer) compatible(lb *policy.LoadBalancer) bool { return lb.Type == TypeUDP }
func (s *udpServer) clients() int                            { return int(s.count.N.Load()) }

// update swaps the config; the idle timeout applies to sessions at once,
// backends to new sessions.
func (s *udpServer) update(lb *policy.LoadBalancer) { s.lb.Store(lb) }

// stop drops new clients. The sockets keep reading: open sessions go on
// until they idle out or the drain ends.
func (s *udpServer) stop() { s.stopped.Store(true) }

func (s *udpServer) drain(deadline time.Time) {
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
		sh.stopT()
	}
	s.sock.Close()
}

// event reads a batch of the clients' datagrams; level-triggered epoll
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
			if err == unix.EAGAIN || sh.s.b.judge.NoteLocal(sess.lb.Name, policy.OpConnect, err) {
				// The socket is full, or the balancer short of
				// buffers: dropped, as the kernel would.
				return
			}
			// The backend's port refused an earlier datagram.
			sh.s.b.judge.ConnectFailed(sess.be, err)
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
	be := s.b.judge.Pick(lb, from.Addr().Unmap(), &tried)
	if be == nil {
		s.b.judge.WarnNoBackend(lb, false)
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
		s.b.judge.ConnectFailed(be, err)
		s.b.log.Debug().Err(err).Str("balancer", lb.Name).Str("backend", be.Name).Msg("udp session not opened")
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

// event sends a backend's reply back to the client, from the shard's
// socket (every socket of the group has the frontend's address). The
// session's socket is level-triggered and read once per event: epoll
// reports it again while more replies wait, so the loop needs no read that
// finds the socket empty (a sixth of the syscalls of a datagram's round
// trip).
func (sess *udpSession) Event(fd int, _ uint32) {
	if sess.closed {
		return
	}
	sh, b := sess.sh, sess.sh.s.b
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
			b.judge.ConnectFailed(sess.be, err)
		}
		sess.close()
		return
	}
	if !sess.answered {
		// udp has no handshake: a reply is what shows the backend
		// alive, and clears its count of refusals.
		sess.answered = true
		b.judge.ConnectOK(sess.be)
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

// mmsgBatch is the buffers of one recvmmsg: each slot a datagram, its
// source address and its control messages.
type mmsgBatch struct {
	msgs  []mmsghdr
	iovs  []unix.Iovec
	bufs  [][]byte
	names []unix.RawSockaddrInet6
	oobs  [][]byte
}

// mmsghdr is struct mmsghdr: a msghdr and the length received.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

func newMmsgBatch(n, size, oob int) *mmsgBatch {
	b := &mmsgBatch{msgs: make([]mmsghdr, n), iovs: make([]unix.Iovec, n), bufs: make([][]byte, n),
		names: make([]unix.RawSockaddrInet6, n), oobs: make([][]byte, n)}
	for i := range n {
		b.bufs[i], b.oobs[i] = make([]byte, size), make([]byte, oob)
		b.iovs[i].Base = &b.bufs[i][0]
		b.iovs[i].SetLen(size)
	}
	return b
}

// recv takes up to len(b.msgs) datagrams without waiting.
func (b *mmsgBatch) recv(fd int) (int, error) {
	for i := range b.msgs {
		h := &b.msgs[i].hdr
		h.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		h.Namelen = unix.SizeofSockaddrInet6
		h.Iov = &b.iovs[i]
		h.SetIovlen(1)
		h.Control = &b.oobs[i][0]
		h.SetControllen(len(b.oobs[i]))
		h.Flags = 0
	}
	n, _, e := syscall.RawSyscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&b.msgs[0])), uintptr(len(b.msgs)), unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// recvOne reads one datagram from a connected socket.
func recvOne(fd int, p []byte) (int, int, error) {
	var iov unix.Iovec
	iov.Base = unsafe.SliceData(p)
	iov.SetLen(len(p))
	var h unix.Msghdr
	h.Iov = &iov
	h.SetIovlen(1)
	n, _, e := syscall.RawSyscall(syscall.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&h)), unix.MSG_DONTWAIT)
	if e != 0 {
		return 0, 0, e
	}
	return int(n), int(h.Flags), nil
}

// rawAddrPort reads a datagram's source address.
func rawAddrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	if sa.Family == unix.AF_INET {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port)
	}
	return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), port)
}

// putRawAddr writes ap as the socket address family of the frontend's
// socket would report it, and returns its length.
func putRawAddr(sa *unix.RawSockaddrInet6, ap netip.AddrPort) uint32 {
	port := ap.Port()
	if ap.Addr().Is4() {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		sa4.Family = unix.AF_INET
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa4.Port))[:], port)
		sa4.Addr = ap.Addr().As4()
		return unix.SizeofSockaddrInet4
	}
	sa.Family = unix.AF_INET6
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], port)
	sa.Addr = ap.Addr().As16()
	return unix.SizeofSockaddrInet6
}
