package elector

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// Short Raft timings keep the whole suite at a few seconds.
const (
	testHeartbeatMs = 200
	testElectionMs  = 200
	testLeaseMs     = 100
	// waitTimeout bounds every wait for the cluster to converge.
	waitTimeout = 10 * time.Second
)

// testLogger is silent unless ELECTOR_TEST_LOG is set: Raft goroutines may
// log after a test ends, which t.Log does not allow.
func testLogger() zerolog.Logger {
	if os.Getenv("ELECTOR_TEST_LOG") != "" {
		zerolog.TimeFieldFormat = "15:04:05.000000"
		return zerolog.New(os.Stderr).With().Timestamp().Logger().Level(zerolog.DebugLevel)
	}
	return zerolog.Nop()
}

// freeAddrs returns n loopback addresses with ports free right now; all are
// held at once so they differ.
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var ls []net.Listener
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}

// cluster is n electors on loopback, each with its own data dir.
type cluster struct {
	t     *testing.T
	cfgs  []*pb.ElectorConfig
	nodes []*Elector
	ws    [][]*watcher // two watchers per node, to exercise the fan-out
}

func clusterConfigs(t *testing.T, n int) []*pb.ElectorConfig {
	addrs := freeAddrs(t, n)
	var members []*pb.Member
	for i, a := range addrs {
		members = append(members, &pb.Member{Id: "n" + strconv.Itoa(i), Address: a})
	}
	var cfgs []*pb.ElectorConfig
	for i := range n {
		cfgs = append(cfgs, &pb.ElectorConfig{
			Cluster:              "test",
			LocalId:              members[i].Id,
			Members:              members,
			DataDir:              filepath.Join(t.TempDir(), "elector"),
			HeartbeatTimeoutMs:   testHeartbeatMs,
			ElectionTimeoutMs:    testElectionMs,
			LeaderLeaseTimeoutMs: testLeaseMs,
		})
	}
	return cfgs
}

func newCluster(t *testing.T, n int) *cluster {
	return startCluster(t, clusterConfigs(t, n))
}

// startCluster starts one elector per config.
func startCluster(t *testing.T, cfgs []*pb.ElectorConfig) *cluster {
	n := len(cfgs)
	c := &cluster{t: t, cfgs: cfgs}
	c.nodes = make([]*Elector, n)
	c.ws = make([][]*watcher, n)
	for i := range n {
		c.start(i)
	}
	return c
}

// start (re)starts node i on its config and data dir.
func (c *cluster) start(i int) {
	c.t.Helper()
	e := startElector(c.t, c.cfgs[i])
	c.nodes[i] = e
	c.ws[i] = []*watcher{watch(c.t, e), watch(c.t, e)}
}

func startElector(t *testing.T, cfg *pb.ElectorConfig) *Elector {
	t.Helper()
	e := New(testLogger())
	t.Cleanup(func() { e.Close() })
	if err := e.Configure(context.Background(), cfg); err != nil {
		t.Fatalf("configure %s: %v", cfg.GetLocalId(), err)
	}
	return e
}

// watcher records what one Watch call sends.
type watcher struct {
	mu   sync.Mutex
	got  []*pb.Leadership
	done chan struct{}
	err  error
}

func watch(t *testing.T, e *Elector) *watcher {
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{done: make(chan struct{})}
	go func() {
		defer close(w.done)
		w.err = e.Watch(ctx, func(l *pb.Leadership) error {
			w.mu.Lock()
			w.got = append(w.got, l)
			w.mu.Unlock()
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-w.done
	})
	return w
}

func (w *watcher) last() *pb.Leadership {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.got) == 0 {
		return nil
	}
	return w.got[len(w.got)-1]
}

func (w *watcher) history() []*pb.Leadership {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*pb.Leadership(nil), w.got...)
}

// waitFor polls cond until it holds or waitTimeout passes.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	var why string
	for time.Now().Before(deadline) {
		var ok bool
		if ok, why = cond(); ok {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s: %s", waitTimeout, what, why)
}

// agreed waits until every watcher of the live nodes (skip excluded) reports
// the same term and leader, and exactly one of them is that leader. It
// returns the leader's index and the term.
func (c *cluster) agreed(skip ...int) (leader int, term uint64) {
	c.t.Helper()
	skipped := map[int]bool{}
	for _, s := range skip {
		skipped[s] = true
	}
	waitFor(c.t, "one leader all agree on", func() (bool, string) {
		leader, term = -1, 0
		var leaderID string
		first := true
		for i, ws := range c.ws {
			if skipped[i] {
				continue
			}
			for _, w := range ws {
				l := w.last()
				if l == nil {
					return false, fmt.Sprintf("node %d: nothing watched yet", i)
				}
				if l.GetLeaderId() == "" {
					return false, fmt.Sprintf("node %d: no leader known (%v)", i, l)
				}
				if first {
					term, leaderID, first = l.GetTerm(), l.GetLeaderId(), false
				} else if l.GetTerm() != term || l.GetLeaderId() != leaderID {
					return false, fmt.Sprintf("node %d: %v differs from term %d leader %s", i, l, term, leaderID)
				}
				isLeader := l.GetRole() == pb.Role_ROLE_LEADER
				if isLeader != (c.cfgs[i].GetLocalId() == leaderID) {
					return false, fmt.Sprintf("node %d: role %v with leader %s", i, l.GetRole(), leaderID)
				}
				if isLeader {
					if leader != -1 && leader != i {
						return false, fmt.Sprintf("nodes %d and %d both lead", leader, i)
					}
					leader = i
				}
			}
		}
		if leader == -1 {
			return false, "no node reports itself leader"
		}
		if want := c.cfgs[leader].GetMembers()[leader].GetAddress(); c.ws[leader][0].last().GetLeaderAddress() != want {
			return false, fmt.Sprintf("leader address %q, want %q", c.ws[leader][0].last().GetLeaderAddress(), want)
		}
		return true, ""
	})
	return leader, term
}

func statusTerm(t *testing.T, e *Elector) uint64 {
	t.Helper()
	st, err := e.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	term, err := strconv.ParseUint(st.GetDetails()["term"], 10, 64)
	if err != nil {
		t.Fatalf("status term %q: %v", st.GetDetails()["term"], err)
	}
	return term
}

// gauge reads one unlabelled metric from e's registry.
func gauge(t *testing.T, e *Elector, name string) float64 {
	t.Helper()
	fams, err := e.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		m := f.GetMetric()[0]
		switch {
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue()
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s not gathered", name)
	return 0
}

func TestThreeNodesElectOneLeader(t *testing.T) {
	c := newCluster(t, 3)
	leader, term := c.agreed()
	if term == 0 {
		t.Fatal("leader at term 0")
	}
	for i, e := range c.nodes {
		st, err := e.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		wantState, wantIsLeader, wantState2 := "follower", 0.0, float64(stateFollower)
		if i == leader {
			wantState, wantIsLeader, wantState2 = "leader", 1, stateLeader
		}
		if st.GetState() != wantState {
			t.Errorf("node %d status %q, want %q", i, st.GetState(), wantState)
		}
		if got := st.GetDetails()["leader_id"]; got != c.cfgs[leader].GetLocalId() {
			t.Errorf("node %d status leader_id %q, want %q", i, got, c.cfgs[leader].GetLocalId())
		}
		if got := gauge(t, e, MetricIsLeader); got != wantIsLeader {
			t.Errorf("node %d %s = %v, want %v", i, MetricIsLeader, got, wantIsLeader)
		}
		if got := gauge(t, e, MetricState); got != wantState2 {
			t.Errorf("node %d %s = %v, want %v", i, MetricState, got, wantState2)
		}
		if got := gauge(t, e, MetricTerm); got != float64(term) {
			t.Errorf("node %d %s = %v, want %v", i, MetricTerm, got, term)
		}
		if got := gauge(t, e, MetricLeaderChangesTotal); got < 1 {
			t.Errorf("node %d %s = %v, want >= 1", i, MetricLeaderChangesTotal, got)
		}
		lc := gauge(t, e, MetricLastContactSeconds)
		if (i == leader && lc != 0) || lc < 0 || lc > 5 {
			t.Errorf("node %d %s = %v", i, MetricLastContactSeconds, lc)
		}
	}
	// Dedupe: no watcher saw the same leadership twice in a row.
	for i, ws := range c.ws {
		for _, w := range ws {
			h := w.history()
			for j := 1; j < len(h); j++ {
				if h[j].String() == h[j-1].String() {
					t.Errorf("node %d watcher got %v twice in a row", i, h[j])
				}
			}
		}
	}
}

func TestLeaderCloseElectsAnother(t *testing.T) {
	c := newCluster(t, 3)
	old, oldTerm := c.agreed()
	if err := c.nodes[old].Close(); err != nil {
		t.Fatalf("close leader: %v", err)
	}
	for _, w := range c.ws[old] {
		select {
		case <-w.done:
		case <-time.After(waitTimeout):
			t.Fatal("watch of a closed elector did not return")
		}
		if w.err != nil {
			t.Errorf("watch of a closed elector: %v", w.err)
		}
		if r := w.last().GetRole(); r != pb.Role_ROLE_SHUTDOWN {
			t.Errorf("last role of a closed elector %v, want SHUTDOWN", r)
		}
	}
	if err := c.nodes[old].Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	leader, term := c.agreed(old)
	if leader == old {
		t.Fatalf("closed node %d still leads", old)
	}
	if term <= oldTerm {
		t.Errorf("new term %d, want > %d", term, oldTerm)
	}
}

func TestTransferLeadership(t *testing.T) {
	c := newCluster(t, 3)
	old, oldTerm := c.agreed()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	follower := (old + 1) % 3
	if err := c.nodes[follower].TransferLeadership(ctx, ""); err != nil {
		t.Errorf("transfer on a follower: %v", err)
	}
	if err := c.nodes[old].TransferLeadership(ctx, ""); err != nil {
		t.Fatalf("transfer on the leader: %v", err)
	}
	waitFor(t, "a new leader", func() (bool, string) {
		l := c.ws[old][0].last()
		return l.GetLeaderId() != "" && l.GetLeaderId() != c.cfgs[old].GetLocalId(), fmt.Sprint(l)
	})
	leader, term := c.agreed()
	if leader == old {
		t.Fatalf("node %d still leads after transfer", old)
	}
	if term <= oldTerm {
		t.Errorf("new term %d, want > %d", term, oldTerm)
	}
}

func TestRestartKeepsTermAndRejoins(t *testing.T) {
	c := newCluster(t, 3)
	leader, _ := c.agreed()
	// Restart a follower and then the leader: both must come back from
	// their data dir without bootstrapping again.
	for _, i := range []int{(leader + 1) % 3, leader} {
		before := statusTerm(t, c.nodes[i])
		if err := c.nodes[i].Close(); err != nil {
			t.Fatalf("close node %d: %v", i, err)
		}
		if _, err := os.Stat(filepath.Join(c.cfgs[i].GetDataDir(), StoreFile)); err != nil {
			t.Fatalf("store file: %v", err)
		}
		c.start(i)
		// Read at once, before a leader could tell it the term.
		if after := statusTerm(t, c.nodes[i]); after < before {
			t.Errorf("node %d term %d after restart, was %d", i, after, before)
		}
		waitFor(t, "the first watched leadership", func() (bool, string) { return c.ws[i][0].last() != nil, "none" })
		if first := c.ws[i][0].history()[0]; first.GetTerm() < before {
			t.Errorf("node %d first watched term %d after restart, was %d", i, first.GetTerm(), before)
		}
		c.agreed()
	}
}

func TestLeaderWithoutQuorumStepsDown(t *testing.T) {
	c := newCluster(t, 3)
	leader, _ := c.agreed()
	for i := range c.nodes {
		if i != leader {
			c.nodes[i].Close()
		}
	}
	start := time.Now()
	waitFor(t, "the leader to step down", func() (bool, string) {
		l := c.ws[leader][0].last()
		return l.GetRole() != pb.Role_ROLE_LEADER, fmt.Sprint(l)
	})
	// Lease 100ms: Raft steps down within a couple of leases; allow slack.
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("step-down seen after %s", d)
	}
	seenFollower := false
	for _, l := range c.ws[leader][1].history() {
		seenFollower = seenFollower || l.GetRole() == pb.Role_ROLE_FOLLOWER && l.GetLeaderId() == ""
	}
	if !seenFollower {
		t.Errorf("second watcher never saw FOLLOWER without a leader: %v", c.ws[leader][1].history())
	}
	if got := gauge(t, c.nodes[leader], MetricIsLeader); got != 0 {
		t.Errorf("%s = %v after step-down", MetricIsLeader, got)
	}
}

func TestSingleNodeLifecycle(t *testing.T) {
	cfg := clusterConfigs(t, 1)[0]
	e := New(testLogger())
	t.Cleanup(func() { e.Close() })
	if st, _ := e.Status(context.Background()); st.GetState() != "unconfigured" {
		t.Errorf("status before configure %q", st.GetState())
	}
	if err := e.TransferLeadership(context.Background(), ""); err != nil {
		t.Errorf("transfer before configure: %v", err)
	}
	// Watch before Configure waits for it.
	w := watch(t, e)
	time.Sleep(50 * time.Millisecond)
	if l := w.last(); l != nil {
		t.Fatalf("watch sent %v before configure", l)
	}
	if err := e.Configure(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	// A second Configure may change the members only.
	if err := e.Configure(context.Background(), cfg); err != nil {
		t.Errorf("second configure, same config: %v", err)
	}
	changed := proto.Clone(cfg).(*pb.ElectorConfig)
	// A valid timing of its own, so the refusal is for changing it, not for
	// breaking a timing rule.
	changed.ElectionTimeoutMs++
	if err := e.Configure(context.Background(), changed); !errors.Is(err, ErrAlreadyConfigured) {
		t.Errorf("second configure, new timing: %v, want %v", err, ErrAlreadyConfigured)
	}
	waitFor(t, "the lone member to lead", func() (bool, string) {
		l := w.last()
		return l.GetRole() == pb.Role_ROLE_LEADER && l.GetLeaderId() == cfg.GetLocalId(), fmt.Sprint(l)
	})
	// Nobody to hand over to.
	if err := e.TransferLeadership(context.Background(), ""); err != nil {
		t.Errorf("transfer alone: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.done:
	case <-time.After(waitTimeout):
		t.Fatal("watch did not return after close")
	}
	if l := w.last(); l.GetRole() != pb.Role_ROLE_SHUTDOWN {
		t.Errorf("last leadership %v, want SHUTDOWN", l)
	}
	// A watch started after Close gets SHUTDOWN and returns.
	late := make(chan *pb.Leadership, 4)
	if err := e.Watch(context.Background(), func(l *pb.Leadership) error { late <- l; return nil }); err != nil {
		t.Errorf("watch after close: %v", err)
	}
	if l := <-late; l.GetRole() != pb.Role_ROLE_SHUTDOWN {
		t.Errorf("watch after close sent %v", l)
	}
	if st, _ := e.Status(context.Background()); st.GetState() != "shutdown" {
		t.Errorf("status after close %q", st.GetState())
	}
	if got := gauge(t, e, MetricState); got != stateShutdown {
		t.Errorf("%s = %v after close", MetricState, got)
	}
	if err := e.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	if err := e.Configure(context.Background(), cfg); !errors.Is(err, ErrClosed) {
		t.Errorf("configure after close: %v, want %v", err, ErrClosed)
	}
}

func TestConfigureErrors(t *testing.T) {
	base := func() *pb.ElectorConfig { return clusterConfigs(t, 2)[0] }
	tests := []struct {
		name   string
		mutate func(*pb.ElectorConfig) *pb.ElectorConfig
		want   string
	}{
		{"nil", func(*pb.ElectorConfig) *pb.ElectorConfig { return nil }, "no elector config"},
		{"empty local id", func(c *pb.ElectorConfig) *pb.ElectorConfig { c.LocalId = ""; return c }, "local_id is empty"},
		{"local id not a member", func(c *pb.ElectorConfig) *pb.ElectorConfig { c.LocalId = "nope"; return c },
			`local_id "nope" is not among the members`},
		{"no members", func(c *pb.ElectorConfig) *pb.ElectorConfig { c.Members = nil; return c }, "no members"},
		{"duplicate id", func(c *pb.ElectorConfig) *pb.ElectorConfig {
			c.Members = []*pb.Member{{Id: "n0", Address: "127.0.0.1:1"}, {Id: "n0", Address: "127.0.0.1:2"}}
			return c
		}, `member id "n0" appears twice`},
		{"duplicate address", func(c *pb.ElectorConfig) *pb.ElectorConfig {
			c.Members = []*pb.Member{{Id: "n0", Address: "127.0.0.1:1"}, {Id: "n1", Address: "127.0.0.1:1"}}
			return c
		}, "share address 127.0.0.1:1"},
		{"address without port", func(c *pb.ElectorConfig) *pb.ElectorConfig {
			c.Members[0].Address = "127.0.0.1"
			return c
		}, `member "n0" address "127.0.0.1"`},
		{"no data dir", func(c *pb.ElectorConfig) *pb.ElectorConfig { c.DataDir = ""; return c }, "data_dir is empty"},
		{"negative timeout", func(c *pb.ElectorConfig) *pb.ElectorConfig { c.ElectionTimeoutMs = -1; return c },
			"election_timeout_ms is negative"},
		{"lease longer than heartbeat", func(c *pb.ElectorConfig) *pb.ElectorConfig {
			c.LeaderLeaseTimeoutMs = 2 * testHeartbeatMs
			return c
		}, "leader_lease_timeout_ms: 400ms must be at most half of heartbeat_timeout_ms (200ms)"},
		{"lease above half the heartbeat", func(c *pb.ElectorConfig) *pb.ElectorConfig {
			c.LeaderLeaseTimeoutMs = testHeartbeatMs/2 + 1
			return c
		}, "leader_lease_timeout_ms: 101ms must be at most half"},
		{"tls without key", func(c *pb.ElectorConfig) *pb.ElectorConfig {
			c.Tls = &pb.RaftTLS{CaPem: []byte("x"), CertPem: []byte("y")}
			return c
		}, "tls: key_pem is empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := New(testLogger())
			defer e.Close()
			err := e.Configure(context.Background(), tc.mutate(base()))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestConfigureAddressInUse(t *testing.T) {
	cfg := clusterConfigs(t, 1)[0]
	addr := cfg.GetMembers()[0].GetAddress()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	e := New(testLogger())
	t.Cleanup(func() { e.Close() })
	err = e.Configure(context.Background(), cfg)
	l.Close()
	want := "listen raft on " + addr + ": "
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("error %v, want %q ... address already in use", err, want)
	}
	// A failed Configure leaves nothing open (the store is unlocked) and
	// may be retried.
	if err := e.Configure(context.Background(), cfg); err != nil {
		t.Fatalf("configure after the port was freed: %v", err)
	}
}

func TestConfigureDataDirLocked(t *testing.T) {
	old := storeOpenTimeout
	storeOpenTimeout = 200 * time.Millisecond
	t.Cleanup(func() { storeOpenTimeout = old })
	cfgs := clusterConfigs(t, 2)
	startElector(t, cfgs[0])
	cfgs[1].DataDir = cfgs[0].DataDir
	e := New(testLogger())
	t.Cleanup(func() { e.Close() })
	err := e.Configure(context.Background(), cfgs[1])
	if err == nil || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("error %v, want the store to be locked", err)
	}
}
