package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRaftDefaultsScaleWithHeartbeat(t *testing.T) {
	for _, tc := range []struct {
		name                string
		raft                string
		hb, election, lease time.Duration
		preempt             bool
		preemptDelay        time.Duration
	}{
		{"defaults", "", 300 * time.Millisecond, 300 * time.Millisecond, 120 * time.Millisecond, false, 10 * time.Second},
		{"heartbeat alone", "raft:\n  heartbeatTimeout: 1s\n", time.Second, time.Second, 400 * time.Millisecond, false, 10 * time.Second},
		{"all set", "raft:\n  heartbeatTimeout: 100ms\n  electionTimeout: 150ms\n  leaderLeaseTimeout: 50ms\n  preempt: true\n  preemptDelay: 3\n",
			100 * time.Millisecond, 150 * time.Millisecond, 50 * time.Millisecond, true, 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(base+tc.raft), nil)
			if err != nil {
				t.Fatal(err)
			}
			r := c.Raft
			if r.HeartbeatTimeout != tc.hb || r.ElectionTimeout != tc.election || r.LeaderLeaseTimeout != tc.lease ||
				r.Preempt != tc.preempt || r.PreemptDelay != tc.preemptDelay {
				t.Fatalf("raft = %+v", r)
			}
			ec := c.ElectorConfig(c.Members[0])
			if ec.GetHeartbeatTimeoutMs() != tc.hb.Milliseconds() || ec.GetLeaderLeaseTimeoutMs() != tc.lease.Milliseconds() ||
				ec.GetPreempt() != tc.preempt || ec.GetPreemptDelayMs() != tc.preemptDelay.Milliseconds() {
				t.Fatalf("elector config %v", ec)
			}
		})
	}
}

func TestRaftErrors(t *testing.T) {
	for _, tc := range []struct {
		name, extra, want string
	}{
		{"lease above half", "raft:\n  heartbeatTimeout: 300ms\n  leaderLeaseTimeout: 151ms\n", "raft.leaderLeaseTimeout: 151ms must be at most half"},
		{"election below heartbeat", "raft:\n  heartbeatTimeout: 300ms\n  electionTimeout: 200ms\n", "raft.electionTimeout: 200ms must be at least raft.heartbeatTimeout"},
		{"tiny heartbeat", "raft:\n  heartbeatTimeout: 5ms\n", "raft.heartbeatTimeout: 5ms must be at least 10ms"},
		{"tls without key", "raft:\n  tls:\n    ca: /a\n    cert: /b\n", "raft.tls.key: missing"},
		{"tls relative", "raft:\n  tls:\n    ca: a.pem\n    cert: /b\n    key: /c\n", `raft.tls.ca: "a.pem" must be an absolute path`},
		{"unknown tls key", "raft:\n  tls:\n    cafile: /a\n", "raft.tls.cafile: unknown key"},
		{"negative priority", "", "members[0].priority: -1 must be between 0 and 1000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := base + tc.extra
			if tc.name == "negative priority" {
				raw = strings.Replace(base, "  - id: a\n", "  - id: a\n    priority: -1\n", 1)
			}
			_, err := Parse([]byte(raw), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestPrioritiesReachTheElector(t *testing.T) {
	raw := strings.Replace(base, "  - id: c\n", "  - id: c\n    priority: 50\n", 1)
	c, err := Parse([]byte(raw), nil)
	if err != nil {
		t.Fatal(err)
	}
	ec := c.ElectorConfig(c.Members[0])
	got := map[string]int32{}
	for _, m := range ec.GetMembers() {
		got[m.GetId()] = m.GetPriority()
	}
	if got["a"] != 0 || got["c"] != 50 {
		t.Fatalf("priorities %v", got)
	}
}

func TestReadRaftTLS(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"ca.pem", "cert.pem"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(f), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	raw := base + "raft:\n  tls:\n    ca: " + filepath.Join(dir, "ca.pem") + "\n    cert: " + filepath.Join(dir, "cert.pem") +
		"\n    key: " + filepath.Join(dir, "key.pem") + "\n"
	c, err := Parse([]byte(raw), nil)
	if err != nil {
		t.Fatal(err)
	}
	tls, err := c.ReadRaftTLS()
	if err == nil || !strings.Contains(err.Error(), "raft.tls.key") {
		t.Fatalf("missing key file: %v", err)
	}
	if string(tls.GetCaPem()) != "ca.pem" || string(tls.GetCertPem()) != "cert.pem" {
		t.Fatalf("read %v", tls)
	}
	if err := c.checkRaftTLS(); err == nil {
		t.Fatal("checkRaftTLS passed files that are not PEM")
	}
	if tls, err := (&Config{}).ReadRaftTLS(); tls != nil || err != nil {
		t.Fatalf("no tls: %v %v", tls, err)
	}
}
