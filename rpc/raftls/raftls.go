// Package raftls is what a RaftTLS message must hold and the TLS configs
// a member's Raft transport builds from it. Both sides of the contract need
// it: the supervisor refuses a config whose raft.tls the elector would
// refuse, naming the key, and the built-in elector uses the configs.
//
// Mutual TLS between members' Raft transports: both ends present a
// certificate and check the other's against the cluster CA; a peer without
// one (or with one from another CA) fails the handshake, so its RPCs never
// reach raft: it can neither vote nor lead. Names are not checked: any
// certificate the cluster CA signed is a member's, whatever its SANs and
// extended key usages, so one certificate per member (or one for all) does.
package raftls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// Config is a parsed RaftTLS.
type Config struct {
	Server, Client *tls.Config
}

// Check checks t the way the elector's Configure will: every part present,
// the key matching the certificate, the certificate signed by the CA. nil or
// empty is plain TCP and passes.
func Check(t *pb.RaftTLS) error {
	_, err := Parse(t)
	return err
}

// Parse builds the server and client configs of a member's Raft transport
// from PEM; nil when t is unset. Every part is required once any is given.
func Parse(t *pb.RaftTLS) (*Config, error) {
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
	return &Config{
		Server: &tls.Config{
			MinVersion:            tls.VersionTLS13,
			Certificates:          []tls.Certificate{cert},
			ClientAuth:            tls.RequireAnyClientCert,
			VerifyPeerCertificate: verify,
		},
		Client: &tls.Config{
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
