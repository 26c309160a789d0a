package elector

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// garbage is what a confused or hostile client might send to the Raft port,
// after the one byte that names an RPC type where it matters.
func garbage() map[string][]byte {
	random := func(n int) []byte {
		b := make([]byte, n)
		_, _ = rand.Read(b)
		return b
	}
	u32 := func(v uint32) []byte { b := make([]byte, 4); binary.BigEndian.PutUint32(b, v); return b }
	cat := func(parts ...[]byte) []byte {
		var out []byte
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	return map[string][]byte{
		"random 1KiB":        random(1 << 10),
		"random 256KiB":      random(256 << 10),
		"unknown rpc type":   {0xff, 0x00, 0x01},
		"http request":       []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"tls client hello":   cat([]byte{0x16, 0x03, 0x01}, random(300)),
		"append, huge map":   cat([]byte{0, 0xdf}, u32(0xffffffff)),
		"append, huge list":  cat([]byte{0, 0x81, 0xa7}, []byte("Entries"), []byte{0xdd}, u32(0xffffffff)),
		"vote, huge bytes":   cat([]byte{1, 0x81, 0xa9}, []byte("Candidate"), []byte{0xc6}, u32(0xfffffff0)),
		"vote, huge string":  cat([]byte{1, 0x81, 0xdb}, u32(0xfffffff0)),
		"snapshot, huge":     cat([]byte{2, 0x82, 0xa4}, []byte("Size"), []byte{0xd3}, random(8), []byte{0xa4}, []byte("Term"), []byte{0xcf}, random(8)),
		"prevote, truncated": {4, 0x85, 0xa4, 'T', 'e'},
		"empty":              {},
	}
}

// sendGarbage writes payload on a fresh connection (through TLS when
// tlsCfg is set), reads whatever comes back for a moment, and closes.
func sendGarbage(addr string, tlsCfg *tls.Config, payload []byte) error {
	raw, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	var c net.Conn = raw
	if tlsCfg != nil {
		tc := tls.Client(raw, tlsCfg)
		_ = tc.SetDeadline(time.Now().Add(2 * time.Second))
		if err := tc.Handshake(); err != nil {
			raw.Close()
			return nil // refused at the handshake, as it should be for bad certificates
		}
		c = tc
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(300 * time.Millisecond))
	_, _ = c.Write(payload)
	buf := make([]byte, 512)
	_, _ = c.Read(buf)
	return nil
}

// Garbage on the Raft port, plain and through TLS (without a certificate,
// with one of the cluster, and raw bytes at the TLS listener), never
// crashes the elector, and the cluster keeps its leader: a crash would take
// the test binary with it.
func TestGarbageOnRaftPort(t *testing.T) {
	ca := newTestCA(t, "cluster CA")
	member := ca.issue(t, "tester")
	memberCfg, err := parseTLS(member)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		withTLS bool
		clients map[string]*tls.Config // nil: plain bytes
	}{
		{"plain tcp", false, map[string]*tls.Config{"raw": nil}},
		{"tls", true, map[string]*tls.Config{
			"raw bytes":            nil,
			"tls without cert":     {InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}, //nolint:gosec // a hostile client
			"tls with member cert": memberCfg.client,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfgs := clusterConfigs(t, 3)
			for _, cfg := range cfgs {
				if tc.withTLS {
					cfg.Tls = ca.issue(t, cfg.GetLocalId())
				}
				// Slower timing than the other tests': a hundred
				// TLS handshakes at once, beside other test
				// packages, can starve a leader of CPU past a
				// short lease (seen on a clean clone), and what
				// is tested here is what the garbage does.
				cfg.HeartbeatTimeoutMs, cfg.ElectionTimeoutMs, cfg.LeaderLeaseTimeoutMs = 1000, 1000, 500
			}
			c := startCluster(t, cfgs)
			leader, term := c.agreed()
			var wg sync.WaitGroup
			errs := make(chan error, 1000)
			for cname, ccfg := range tc.clients {
				for gname, payload := range garbage() {
					for i := range c.nodes {
						wg.Add(1)
						go func() {
							defer wg.Done()
							if err := sendGarbage(c.addr(i), ccfg, payload); err != nil {
								errs <- fmt.Errorf("%s, %s to %s: %w", cname, gname, c.id(i), err)
							}
						}()
					}
				}
			}
			// And connections that say nothing and stay open.
			var idle []net.Conn
			for i := range c.nodes {
				for range 20 {
					if conn, err := net.Dial("tcp", c.addr(i)); err == nil {
						idle = append(idle, conn)
					}
				}
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			for _, conn := range idle {
				conn.Close()
			}
			// Every member still answers and the cluster still has its
			// leader (a garbage AppendEntries must not have deposed it).
			for i, e := range c.nodes {
				st, err := e.Status(t.Context())
				if err != nil || st.GetState() == "shutdown" {
					t.Fatalf("%s after garbage: %v %v", c.id(i), st, err)
				}
			}
			l, tm := c.agreed()
			t.Logf("after garbage: leader %s term %d (before: %s term %d)", c.id(l), tm, c.id(leader), term)
			if l != leader {
				t.Errorf("leadership moved from %s to %s", c.id(leader), c.id(l))
			}
			// And raft still works: a transfer goes through.
			if err := c.nodes[l].TransferLeadership(t.Context(), ""); err != nil {
				t.Fatalf("transfer after garbage: %v", err)
			}
			waitFor(t, "a new leader after the transfer", func() (bool, string) {
				w := c.ws[l][0].last()
				return w.GetRole() != pb.Role_ROLE_LEADER && w.GetLeaderId() != "", fmt.Sprint(w)
			})
			c.agreed()
		})
	}
}
