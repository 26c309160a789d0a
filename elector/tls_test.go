package elector

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// tlsCluster is a 3-member cluster whose members hold certificates of ca.
func tlsCluster(t *testing.T, ca *testCA) *cluster {
	t.Helper()
	cfgs := clusterConfigs(t, 3)
	for _, c := range cfgs {
		c.Tls = ca.issue(t, c.GetLocalId())
	}
	return startCluster(t, cfgs)
}

func (c *cluster) addr(i int) string { return c.cfgs[i].GetMembers()[i].GetAddress() }
func (c *cluster) id(i int) string   { return c.cfgs[i].GetLocalId() }

// A stranger without a certificate of the cluster's CA (plain TCP, or TLS
// with a certificate of another CA, or none) gets no RPC through to raft:
// its vote requests and heartbeats with a far higher term fail at the
// handshake, and the cluster keeps its leader and term. A member
// certificate gets through (raft then refuses the unknown id), which shows
// the handshake is what stops the others.
func TestTLSStrangersCannotVoteOrLead(t *testing.T) {
	ca := newTestCA(t, "cluster CA")
	c := tlsCluster(t, ca)
	leader, term := c.agreed()
	follower := (leader + 1) % 3

	rogue := newTestCA(t, "rogue CA")
	for _, stranger := range []struct {
		name string
		tls  *pb.RaftTLS
	}{
		{"plain tcp", nil},
		{"certificate of another CA", rogue.issue(t, c.id(follower))},
		{"self-signed member name", newTestCA(t, c.id(follower)).issue(t, c.id(follower))},
	} {
		t.Run(stranger.name, func(t *testing.T) {
			// It claims to be a real member, at that member's address.
			p := newFakePeer(t, c.id(follower), c.addr(follower), stranger.tls)
			for i := range c.nodes {
				if i == follower {
					continue
				}
				if r, err := p.requestVote(c.id(i), c.addr(i), term+100); err == nil {
					t.Errorf("RequestVote to %s went through: %+v", c.id(i), r)
				}
				if r, err := p.requestPreVote(c.id(i), c.addr(i), term+100); err == nil {
					t.Errorf("RequestPreVote to %s went through: %+v", c.id(i), r)
				}
				if r, err := p.appendEntries(c.id(i), c.addr(i), term+100); err == nil {
					t.Errorf("AppendEntries to %s went through: %+v", c.id(i), r)
				}
				if err := p.timeoutNow(c.id(i), c.addr(i)); err == nil {
					t.Errorf("TimeoutNow to %s went through", c.id(i))
				}
			}
		})
	}
	// Still the same leader in the same term.
	if l, tm := c.agreed(); l != leader || tm != term {
		t.Fatalf("after the strangers: leader %d term %d, was %d term %d", l, tm, leader, term)
	}

	// Control: a certificate of the cluster CA gets through to raft, which
	// refuses an id that is not a member.
	p := newFakePeer(t, "intruder", "127.0.0.1:1", ca.issue(t, "intruder"))
	r, err := p.requestVote(c.id(follower), c.addr(follower), term+100)
	if err != nil {
		t.Fatalf("RequestVote with a member certificate: %v", err)
	}
	if r.Granted {
		t.Fatalf("a non-member got a vote")
	}
	if l, tm := c.agreed(); l != leader || tm != term {
		t.Fatalf("after the intruder: leader %d term %d, was %d term %d", l, tm, leader, term)
	}
}

// grantingImpostor listens on addr and grants every pre-vote and vote and
// accepts every heartbeat, as a member that votes for anyone would.
func grantingImpostor(t *testing.T, id, addr string, tlsPB *pb.RaftTLS) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("impostor listen on %s: %v", addr, err)
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
	hdr := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(id), Addr: []byte(addr)}
	go func() {
		for rpc := range nt.Consumer() {
			switch req := rpc.Command.(type) {
			case *raft.RequestPreVoteRequest:
				rpc.Respond(&raft.RequestPreVoteResponse{RPCHeader: hdr, Term: req.Term, Granted: true}, nil)
			case *raft.RequestVoteRequest:
				rpc.Respond(&raft.RequestVoteResponse{RPCHeader: hdr, Term: req.Term, Granted: true}, nil)
			case *raft.AppendEntriesRequest:
				rpc.Respond(&raft.AppendEntriesResponse{RPCHeader: hdr, Term: req.Term, Success: true}, nil)
			default:
				rpc.Respond(nil, io.EOF)
			}
		}
	}()
}

// An impostor that takes over a stopped member's address cannot give the
// last member the votes it needs: with a certificate of another CA the
// member's vote requests fail the handshake and nobody leads. The same
// impostor with a cluster certificate does get it elected (the control).
func TestTLSImpostorCannotVote(t *testing.T) {
	for _, tc := range []struct {
		name      string
		validCert bool
	}{
		{"rogue certificate", false},
		{"cluster certificate (control)", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca := newTestCA(t, "cluster CA")
			c := tlsCluster(t, ca)
			leader, _ := c.agreed()
			last := (leader + 1) % 3
			gone := (leader + 2) % 3
			for _, i := range []int{leader, gone} {
				if err := c.nodes[i].Close(); err != nil {
					t.Fatal(err)
				}
			}
			issuer := newTestCA(t, "rogue CA")
			if tc.validCert {
				issuer = ca
			}
			grantingImpostor(t, c.id(gone), c.addr(gone), issuer.issue(t, c.id(gone)))

			// Plenty of election rounds: hb and election timeout are 200ms.
			deadline := time.Now().Add(3 * time.Second)
			led := false
			for time.Now().Before(deadline) && !led {
				led = c.ws[last][0].last().GetRole() == pb.Role_ROLE_LEADER
				time.Sleep(20 * time.Millisecond)
			}
			if led != tc.validCert {
				t.Fatalf("%s leads = %v with an impostor holding a %s; want %v (last leadership %v)",
					c.id(last), led, tc.name, tc.validCert, c.ws[last][0].last())
			}
			t.Logf("%s leads: %v", c.id(last), led)
		})
	}
}

func TestParseTLSErrors(t *testing.T) {
	ca := newTestCA(t, "ca")
	good := ca.issue(t, "m")
	other := newTestCA(t, "other")
	for _, tc := range []struct {
		name string
		tls  *pb.RaftTLS
		want string
	}{
		{"no ca", &pb.RaftTLS{CertPem: good.CertPem, KeyPem: good.KeyPem}, "ca_pem is empty"},
		{"no cert", &pb.RaftTLS{CaPem: good.CaPem, KeyPem: good.KeyPem}, "cert_pem is empty"},
		{"garbage ca", &pb.RaftTLS{CaPem: []byte("junk"), CertPem: good.CertPem, KeyPem: good.KeyPem}, "no PEM certificate"},
		{"key of another cert", &pb.RaftTLS{CaPem: good.CaPem, CertPem: good.CertPem, KeyPem: ca.issue(t, "x").KeyPem}, "certificate and key"},
		{"cert of another CA", &pb.RaftTLS{CaPem: other.pem, CertPem: good.CertPem, KeyPem: good.KeyPem}, "not accepted by the CA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseTLS(tc.tls)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
	if cfg, err := parseTLS(&pb.RaftTLS{}); cfg != nil || err != nil {
		t.Fatalf("empty RaftTLS: %v %v, want plain TCP", cfg, err)
	}
}
