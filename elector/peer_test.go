package elector

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue makes a member certificate signed by the CA, valid for client and
// server use, and returns the RaftTLS that uses it.
func (ca *testCA) issue(t *testing.T, name string) *pb.RaftTLS {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return &pb.RaftTLS{
		CaPem:   ca.pem,
		CertPem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPem:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}),
	}
}

// fakePeer is a bare raft transport that sends RPCs as if it were member
// id at address addr, without running raft. Its own listener is on an
// ephemeral port; RPCs sent to it are answered with an error.
type fakePeer struct {
	id, addr string
	trans    *raft.NetworkTransport
}

func newFakePeer(t *testing.T, id, addr string, tlsPB *pb.RaftTLS) *fakePeer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var stream raft.StreamLayer = &tcpStream{Listener: ln, adv: ln.Addr()}
	if tlsPB != nil {
		cfg, err := parseTLS(tlsPB)
		if err != nil {
			t.Fatal(err)
		}
		stream = newTLSStream(ln, ln.Addr(), cfg)
	}
	nt := raft.NewNetworkTransport(stream, 1, 2*time.Second, io.Discard)
	t.Cleanup(func() { nt.Close() })
	go func() {
		for rpc := range nt.Consumer() {
			rpc.Respond(nil, io.EOF)
		}
	}()
	return &fakePeer{id: id, addr: addr, trans: nt}
}

func (p *fakePeer) header() raft.RPCHeader {
	return raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(p.id), Addr: []byte(p.addr)}
}

// requestVote asks target for its vote in term, claiming a log far ahead.
func (p *fakePeer) requestVote(targetID, target string, term uint64) (*raft.RequestVoteResponse, error) {
	req := &raft.RequestVoteRequest{RPCHeader: p.header(), Term: term, LastLogIndex: 1 << 20, LastLogTerm: term - 1}
	var resp raft.RequestVoteResponse
	err := p.trans.RequestVote(raft.ServerID(targetID), raft.ServerAddress(target), req, &resp)
	return &resp, err
}

// requestPreVote asks target for a pre-vote in term.
func (p *fakePeer) requestPreVote(targetID, target string, term uint64) (*raft.RequestPreVoteResponse, error) {
	req := &raft.RequestPreVoteRequest{RPCHeader: p.header(), Term: term, LastLogIndex: 1 << 20, LastLogTerm: term - 1}
	var resp raft.RequestPreVoteResponse
	err := p.trans.RequestPreVote(raft.ServerID(targetID), raft.ServerAddress(target), req, &resp)
	return &resp, err
}

// appendEntries sends a heartbeat claiming leadership in term.
func (p *fakePeer) appendEntries(targetID, target string, term uint64) (*raft.AppendEntriesResponse, error) {
	req := &raft.AppendEntriesRequest{RPCHeader: p.header(), Term: term}
	var resp raft.AppendEntriesResponse
	err := p.trans.AppendEntries(raft.ServerID(targetID), raft.ServerAddress(target), req, &resp)
	return &resp, err
}

// timeoutNow tells target to stand for election at once.
func (p *fakePeer) timeoutNow(targetID, target string) error {
	var resp raft.TimeoutNowResponse
	return p.trans.TimeoutNow(raft.ServerID(targetID), raft.ServerAddress(target), &raft.TimeoutNowRequest{RPCHeader: p.header()}, &resp)
}
