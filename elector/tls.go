package elector

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
	"github.com/keep-vip/keep-vip/rpc/raftls"
)

// Mutual TLS between members' Raft transports; rpc/raftls says what the
// RaftTLS message must hold and builds the configs.

// tlsConfig is the parsed RaftTLS.
type tlsConfig struct {
	server, client *tls.Config
}

// parseTLS is raftls.Parse in the elector's terms; nil when t is unset.
func parseTLS(t *pb.RaftTLS) (*tlsConfig, error) {
	c, err := raftls.Parse(t)
	if c == nil || err != nil {
		return nil, err
	}
	return &tlsConfig{server: c.Server, client: c.Client}, nil
}

// tlsStream is raft's StreamLayer over mutual TLS.
type tlsStream struct {
	ln  net.Listener
	adv net.Addr
	cfg *tlsConfig
}

func newTLSStream(ln net.Listener, adv net.Addr, cfg *tlsConfig) *tlsStream {
	return &tlsStream{ln: ln, adv: adv, cfg: cfg}
}

// Accept returns at once; the handshake runs, bounded, on the connection's
// first read, in raft's per-connection goroutine, so one slow or silent
// client never holds up the accept loop.
func (s *tlsStream) Accept() (net.Conn, error) {
	c, err := s.ln.Accept()
	if err != nil {
		return nil, err
	}
	return &serverConn{Conn: tls.Server(c, s.cfg.server)}, nil
}

func (s *tlsStream) Close() error   { return s.ln.Close() }
func (s *tlsStream) Addr() net.Addr { return s.adv }

// Dial connects and completes the handshake within timeout.
func (s *tlsStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: s.cfg.client}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.DialContext(ctx, "tcp", string(address))
}

// serverConn is an accepted TLS connection whose handshake runs once,
// under a deadline, before the first read or write.
type serverConn struct {
	*tls.Conn
	once sync.Once
	err  error
}

func (c *serverConn) handshake() error {
	c.once.Do(func() {
		_ = c.Conn.SetDeadline(time.Now().Add(tlsHandshakeTimeout))
		if c.err = c.Conn.Handshake(); c.err != nil {
			_ = c.Conn.Close()
			return
		}
		_ = c.Conn.SetDeadline(time.Time{})
	})
	return c.err
}

func (c *serverConn) Read(p []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *serverConn) Write(p []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}
