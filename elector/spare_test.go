package elector

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// spareServer accepts on loopback and keeps or closes what it accepts.
type spareServer struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	close bool // close each connection at once
}

func newSpareServer(t *testing.T, closeEach bool) *spareServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &spareServer{ln: ln, close: closeEach}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			if closeEach {
				c.Close()
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, c := range s.conns {
			c.Close()
		}
	})
	return s
}

func (s *spareServer) accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func waitSpare(t *testing.T, s *spareStream, a raft.ServerAddress) net.Conn {
	t.Helper()
	var c net.Conn
	waitFor(t, "a spare to "+string(a), func() (bool, string) {
		s.mu.Lock()
		defer s.mu.Unlock()
		sp, ok := s.spares[a]
		c = sp.c
		return ok, "none yet"
	})
	return c
}

// mustDial dials a through s and closes the connection at the test's end.
func mustDial(t *testing.T, s *spareStream, a raft.ServerAddress) net.Conn {
	t.Helper()
	c, err := s.Dial(a, time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", a, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestSpareStream(t *testing.T) {
	own, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := newSpareStream(&tcpStream{Listener: own, adv: own.Addr()})
	t.Cleanup(func() { s.Close() })

	t.Run("the next dial takes the spare, once", func(t *testing.T) {
		srv := newSpareServer(t, false)
		a := raft.ServerAddress(srv.ln.Addr().String())
		s.prepare([]raft.ServerAddress{a}, time.Second)
		spare := waitSpare(t, s, a)
		s.prepare([]raft.ServerAddress{a}, time.Second) // fresh: not dialled again
		if c := mustDial(t, s, a); c != spare {
			t.Errorf("Dial opened a new connection, want the spare")
		}
		if c2 := mustDial(t, s, a); c2 == spare {
			t.Errorf("the spare was handed out twice")
		}
		waitFor(t, "the server to accept the dial", func() (bool, string) {
			return srv.accepted() >= 2, fmt.Sprint(srv.accepted(), " accepted")
		})
		if n := srv.accepted(); n != 2 {
			t.Errorf("server accepted %d connections, want 2 (the spare, then one dial)", n)
		}
	})

	t.Run("a spare the peer closed is not handed out", func(t *testing.T) {
		srv := newSpareServer(t, true)
		a := raft.ServerAddress(srv.ln.Addr().String())
		s.prepare([]raft.ServerAddress{a}, time.Second)
		spare := waitSpare(t, s, a)
		waitFor(t, "the peer's close to be seen on the spare", func() (bool, string) {
			return !stillOpen(spare), "still looks open"
		})
		if c := mustDial(t, s, a); c == spare {
			t.Errorf("Dial handed out the closed spare")
		}
	})

	t.Run("a spare over mutual TLS stays open", func(t *testing.T) {
		ca := newTestCA(t, "cluster CA")
		srvCfg, err := parseTLS(ca.issue(t, "server2"))
		if err != nil {
			t.Fatal(err)
		}
		cliCfg, err := parseTLS(ca.issue(t, "server1"))
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := newTLSStream(ln, ln.Addr(), srvCfg)
		t.Cleanup(func() { srv.Close() })
		go func() {
			for {
				c, err := srv.Accept()
				if err != nil {
					return
				}
				// As raft's connection goroutine: the handshake, then a
				// read that waits for a request.
				go func() { defer c.Close(); _, _ = c.Read(make([]byte, 1)) }()
			}
		}()
		own, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cli := newSpareStream(newTLSStream(own, own.Addr(), cliCfg))
		t.Cleanup(func() { cli.Close() })
		a := raft.ServerAddress(ln.Addr().String())
		cli.prepare([]raft.ServerAddress{a}, 5*time.Second)
		spare := waitSpare(t, cli, a)
		// Anything the server sent after the handshake (a TLS 1.3
		// session ticket, were the client to ask for resumption) would
		// arrive within a round trip and make the spare look closed.
		time.Sleep(100 * time.Millisecond)
		if !stillOpen(spare) {
			t.Fatal("an idle TLS spare looks closed: the server sent something after the handshake")
		}
		if c := mustDial(t, cli, a); c != spare {
			t.Errorf("Dial opened a new connection, want the TLS spare")
		}
	})

	t.Run("no spare to a member that does not answer", func(t *testing.T) {
		dead, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		a := raft.ServerAddress(dead.Addr().String())
		dead.Close()
		s.prepare([]raft.ServerAddress{a}, time.Second)
		waitFor(t, "the dial to end", func() (bool, string) {
			s.mu.Lock()
			defer s.mu.Unlock()
			return !s.dialing[a], "dialing"
		})
		s.mu.Lock()
		_, ok := s.spares[a]
		s.mu.Unlock()
		if ok {
			t.Errorf("a spare to a closed port")
		}
		if _, err := s.Dial(a, time.Second); err == nil {
			t.Errorf("Dial to a closed port succeeded")
		}
	})
}
