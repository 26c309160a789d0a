package elector

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
	"golang.org/x/sys/unix"
)

// spareStream is a StreamLayer that can open a connection to a member
// ahead of need. Followers talk to each other only in elections, so when a
// leader dies, the survivors' first pre-votes go over connections opened
// for them; on a loaded host such a request was measured to wait 2-13ms at
// the receiver between the accept and raft's handling, longer than the
// kick stagger, and a survivor that kicked meanwhile then granted it: both
// stood, the vote split and the next election came an election timeout
// later (docs/benchmarks.md, the fast profile's node-lost tail). A
// follower whose leader has been silent for three quarters of a heartbeat
// timeout opens a spare to each other member (detector.go); raft's next
// dial to that member takes it.
type spareStream struct {
	raft.StreamLayer

	mu      sync.Mutex
	spares  map[raft.ServerAddress]spareConn
	dialing map[raft.ServerAddress]bool
	closed  bool
}

type spareConn struct {
	c  net.Conn
	at time.Time
}

// spareMaxAge bounds how long a spare waits to be used: past it, it is
// closed rather than trusted.
const spareMaxAge = 5 * time.Second

func newSpareStream(s raft.StreamLayer) *spareStream {
	return &spareStream{StreamLayer: s, spares: map[raft.ServerAddress]spareConn{}, dialing: map[raft.ServerAddress]bool{}}
}

// prepare opens, in the background, a spare to each address that has no
// fresh one and no dial in flight. A dial that fails leaves none: raft
// dials as usual then.
func (s *spareStream) prepare(addrs []raft.ServerAddress, timeout time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	now := time.Now()
	for _, a := range addrs {
		if sp, ok := s.spares[a]; ok {
			if now.Sub(sp.at) < spareMaxAge/2 {
				continue
			}
			delete(s.spares, a)
			_ = sp.c.Close()
		}
		if s.dialing[a] {
			continue
		}
		s.dialing[a] = true
		go func() {
			c, err := s.StreamLayer.Dial(a, timeout)
			s.mu.Lock()
			defer s.mu.Unlock()
			delete(s.dialing, a)
			if err != nil {
				return
			}
			if _, taken := s.spares[a]; taken || s.closed {
				_ = c.Close()
				return
			}
			s.spares[a] = spareConn{c: c, at: time.Now()}
		}()
	}
}

// Dial hands out the spare to address if it is fresh and still open, and
// dials otherwise.
func (s *spareStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	s.mu.Lock()
	sp, ok := s.spares[address]
	delete(s.spares, address)
	s.mu.Unlock()
	if ok {
		if time.Since(sp.at) < spareMaxAge && stillOpen(sp.c) {
			return sp.c, nil
		}
		_ = sp.c.Close()
	}
	return s.StreamLayer.Dial(address, timeout)
}

// Close closes the spares and the stream.
func (s *spareStream) Close() error {
	s.mu.Lock()
	s.closed = true
	for a, sp := range s.spares {
		_ = sp.c.Close()
		delete(s.spares, a)
	}
	s.mu.Unlock()
	return s.StreamLayer.Close()
}

// stillOpen reports whether an idle connection is still usable: the peer has
// sent nothing on it (a Raft server speaks only when asked), neither data,
// nor an end, nor a reset.
func stillOpen(c net.Conn) bool {
	for {
		nc, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = nc.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := false
	err = raw.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, rerr := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		alive = errors.Is(rerr, unix.EAGAIN)
		return true // done: never wait for readiness
	})
	return err == nil && alive
}
