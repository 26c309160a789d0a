package elector

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// Mutual TLS between members' Raft transports. Both ends present a
// certificate and check the other's against the cluster CA; a peer without
// one (or with one from another CA) fails the handshake, so its RPCs never
// reach raft: it can neither vote nor lead. Names are not checked: any
// certificate the cluster CA signed is a member's, whatever its SANs and
// extended key usages, so one certificate per member (or one for all) does.

// tlsConfig is the parsed RaftTLS.
type tlsConfig struct {
	server, client *tls.Config
}

// parseTLS builds the server and client configs from PEM; nil when t is
// unset. Every part is required once any is given.
func parseTLS(t *pb.RaftTLS) (*tlsConfig, error) {
	if t == nil || (len(t.GetCaPem()) == 0 && len(t.GetCertPem()) == 0 && len(t.GetKeyPem()) == 0) {
		return nil, nil
	}
	switch {
	case len(t.GetCaPem()) == 0:
		return nil, errors.New("tls: ca_pem is empty")
	case len(t.GetCertPem()) == 0:
		return nil, errors.New("tls: cert_pem is empty")
	case len(t.GetKeyPem()) == 0:
		return nil, errors.New("tls: key_pem is empty")
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(t.GetCaPem()) {
		return nil, errors.New("tls: ca_pem holds no PEM certificate")
	}
	cert, err := tls.X509KeyPair(t.GetCertPem(), t.GetKeyPem())
	if err != nil {
		return nil, fmt.Errorf("tls: certificate and key: %w", err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("tls: certificate: %w", err)
	}
	// Our own certificate must pass the check we apply to peers, or no
	// peer would accept us: say so now, not as handshake errors later.
	if err := verifyChain(pool, cert.Certificate); err != nil {
		return nil, fmt.Errorf("tls: own certificate (subject %q) is not accepted by the CA: %w", leaf.Subject.String(), err)
	}
	verify := func(raw [][]byte, _ [][]*x509.Certificate) error { return verifyChain(pool, raw) }
	return &tlsConfig{
		server: &tls.Config{
			MinVersion:            tls.VersionTLS13,
			Certificates:          []tls.Certificate{cert},
			ClientAuth:            tls.RequireAnyClientCert,
			VerifyPeerCertificate: verify,
		},
		client: &tls.Config{
			MinVersion:   tls.VersionTLS13,
			Certificates: []tls.Certificate{cert},
			// The chain is checked by VerifyPeerCertificate; only the
			// name check of the standard verification is skipped.
			InsecureSkipVerify:    true, //nolint:gosec // see above
			VerifyPeerCertificate: verify,
		},
	}, nil
}

// verifyChain checks the peer's chain (leaf first) against the CA pool, for
// any key usage.
func verifyChain(pool *x509.CertPool, raw [][]byte) error {
	if len(raw) == 0 {
		return errors.New("no certificate presented")
	}
	certs := make([]*x509.Certificate, 0, len(raw))
	for _, r := range raw {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return fmt.Errorf("parse peer certificate: %w", err)
		}
		certs = append(certs, c)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         pool,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	return err
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

// CheckTLS checks RaftTLS the way Configure will: every part present, the
// key matching the certificate, the certificate signed by the CA. nil or
// empty is plain TCP and passes.
func CheckTLS(t *pb.RaftTLS) error {
	_, err := parseTLS(t)
	return err
}
