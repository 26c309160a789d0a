package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The five iptables partition experiments of the original keep-vip, and the 5-member runs. Partitions
// are nftables rules inside the node namespaces (Partitioner): a cut between
// two nodes drops, on both of them, every packet from and to the other's
// address, which is what the original experiments' INPUT DROP rules amount to for TCP.
//
// The clusters run the product's default raft timings (heartbeat 300ms,
// lease 120ms), so these tests are also the check that the defaults keep one
// holder at most under partitions.

// partTable is the nftables table the Partitioner owns in each namespace.
const partTable = "kvpart"

// Partitioner cuts and heals links between nodes of a Net.
type Partitioner struct {
	t   *testing.T
	net *Net
	mu  sync.Mutex
	cut map[[2]int]bool // {i, j} with i < j, 1-based
}

// NewPartitioner installs the (empty) drop rules in every node namespace;
// t.Cleanup removes them.
func NewPartitioner(t *testing.T, n *Net) *Partitioner {
	t.Helper()
	p := &Partitioner{t: t, net: n, cut: map[[2]int]bool{}}
	ruleset := fmt.Sprintf(`table inet %[1]s {
	set peers { type ipv4_addr; }
	chain input { type filter hook input priority -10; policy accept; ip saddr @peers drop; }
	chain output { type filter hook output priority -10; policy accept; ip daddr @peers drop; }
}
`, partTable)
	for _, ns := range n.NodeNS {
		if out, err := nftIn(n, ns, ruleset); err != nil {
			t.Fatalf("nft in %s: %v: %s", ns, err, out)
		}
	}
	t.Cleanup(func() {
		for _, ns := range n.NodeNS {
			_, _ = n.Exec(ns, "nft", "delete", "table", "inet", partTable)
		}
	})
	return p
}

// nftIn loads a ruleset into namespace ns (bounded to 20s).
func nftIn(n *Net, ns, ruleset string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func pair(i, j int) [2]int {
	if i > j {
		i, j = j, i
	}
	return [2]int{i, j}
}

// Cut drops all traffic between nodes i and j (1-based), on both.
func (p *Partitioner) Cut(i, j int) {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutLocked(i, j)
}

func (p *Partitioner) cutLocked(i, j int) {
	p.t.Helper()
	if i == j || p.cut[pair(i, j)] {
		return
	}
	for _, e := range [][2]int{{i, j}, {j, i}} {
		if out, err := p.net.Exec(p.net.NodeNS[e[0]-1], "nft", "add", "element", "inet", partTable, "peers",
			"{ "+p.net.NodeIP(e[1])+" }"); err != nil {
			p.t.Fatalf("cut %d-%d: %v: %s", i, j, err, out)
		}
	}
	p.cut[pair(i, j)] = true
}

// Isolate cuts node i from every other node.
func (p *Partitioner) Isolate(i int) {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for j := 1; j <= len(p.net.NodeNS); j++ {
		p.cutLocked(i, j)
	}
}

// Split cuts every node of a from every node of b.
func (p *Partitioner) Split(a, b []int) {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, i := range a {
		for _, j := range b {
			p.cutLocked(i, j)
		}
	}
}

// HealAll removes every cut.
func (p *Partitioner) HealAll() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ns := range p.net.NodeNS {
		if out, err := p.net.Exec(ns, "nft", "flush", "set", "inet", partTable, "peers"); err != nil {
			p.t.Fatalf("heal in %s: %v: %s", ns, err, out)
		}
	}
	p.cut = map[[2]int]bool{}
}

// healQuietly removes every cut, best effort (for cleanups, which must not
// fail the test from another goroutine).
func (p *Partitioner) healQuietly() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ns := range p.net.NodeNS {
		_, _ = p.net.Exec(ns, "nft", "flush", "set", "inet", partTable, "peers")
	}
	p.cut = map[[2]int]bool{}
}

// Connected tells whether i and j can talk.
func (p *Partitioner) Connected(i, j int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.cut[pair(i, j)]
}

// Describe lists the cuts.
func (p *Partitioner) Describe() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var parts []string
	for k := range p.cut {
		parts = append(parts, fmt.Sprintf("%d-%d", k[0], k[1]))
	}
	slices.Sort(parts)
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

// TimelineSince is the Sampler's record of VIP holder sets from t on: the
// set at t first, then every change.
func (s *Sampler) TimelineSince(t time.Time) []holderChange {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []holderChange
	for i, c := range s.report.Timeline {
		if c.At.Before(t) {
			continue
		}
		if len(out) == 0 && i > 0 && c.At.After(t) {
			out = append(out, holderChange{At: t, Holders: s.report.Timeline[i-1].Holders})
		}
		out = append(out, c)
	}
	if len(out) == 0 && len(s.report.Timeline) > 0 {
		out = append(out, holderChange{At: t, Holders: s.report.Timeline[len(s.report.Timeline)-1].Holders})
	}
	return out
}

func describeChanges(cs []holderChange, from time.Time) string {
	var parts []string
	for _, c := range cs {
		parts = append(parts, fmt.Sprintf("+%dms=%v", c.At.Sub(from).Milliseconds(), c.Holders))
	}
	return strings.Join(parts, " ")
}

// partitionBounds are how long the experiments watch and wait. Liveness
// bounds are generous (a loaded CI machine); safety is checked every 5ms by
// the Sampler regardless.
const (
	partObserve   = 3 * time.Second  // at least eight heartbeat timeouts
	partMoveBound = 10 * time.Second // VIP on a new holder after a cut
	partHealBound = 15 * time.Second // one holder again after a heal
)

// waitNoHolder waits until the Sampler has seen the VIP on no node and
// returns when it first saw that (the Sampler's time, so its timeline
// after it is comparable).
func waitNoHolder(t *testing.T, c *Cluster, timeout time.Duration) time.Time {
	t.Helper()
	var at time.Time
	mustWaitFor(t, timeout, "no VIP holder", func() (bool, string) {
		tl := c.Sampler.TimelineSince(time.Now().Add(-time.Hour))
		if n := len(tl); n > 0 && len(tl[n-1].Holders) == 0 {
			at = tl[n-1].At
			return true, ""
		}
		return false, describeChanges(tl[max(0, len(tl)-3):], time.Now())
	})
	return at
}

// raftDefaults runs the nodes on the product's default raft timings.
func raftDefaults(cfg *NodeConfig) { cfg.Raft = RaftDefaults }

// others lists the nodes of c other than the given ones.
func others(c *Cluster, not ...int) []int {
	var out []int
	for i := 1; i <= len(c.Nodes); i++ {
		if !slices.Contains(not, i) {
			out = append(out, i)
		}
	}
	return out
}

// expectUnchanged checks that holder stays the only VIP holder for d from
// since on.
func expectUnchanged(t *testing.T, c *Cluster, holder int, since time.Time, d time.Duration) {
	t.Helper()
	time.Sleep(time.Until(since.Add(d)))
	tl := c.Sampler.TimelineSince(since)
	for _, ch := range tl {
		if !slices.Equal(ch.Holders, []int{holder}) {
			t.Fatalf("VIP holders changed within %s: %s (want [%d] throughout)", d, describeChanges(tl, since), holder)
		}
	}
	t.Logf("node %d held the VIP alone for %s: %s", holder, d, describeChanges(tl, since))
}

// healAndSettle heals every cut and waits for exactly one holder; when
// stay is set the holder must be that node (non-preemptive: the VIP does
// not move back).
func healAndSettle(t *testing.T, c *Cluster, p *Partitioner, stay int) int {
	t.Helper()
	healed := time.Now()
	p.HealAll()
	holder := c.WaitSingleHolder(partHealBound, nil)
	if stay != 0 && holder != stay {
		t.Errorf("after heal node %d holds the VIP, want it to stay on node %d: %s", holder, stay,
			describeChanges(c.Sampler.TimelineSince(healed), healed))
	}
	t.Logf("healed: node %d holds the VIP (%s after the heal)", holder, time.Since(healed).Round(time.Millisecond))
	return holder
}

func TestPartitionThreeNodes(t *testing.T) {
	c := StartClusterWith(t, 3, raftDefaults)
	keepLogs(t, c)
	p := NewPartitioner(t, c.Net)
	c.WaitSingleHolder(electionBound, nil)
	c.WaitClientReachesBackend(reachBound)

	run := func(name string, f func(t *testing.T, c *Cluster, leader int)) {
		t.Run(name, func(t *testing.T) {
			// A failed experiment must not leave its cuts to the next.
			t.Cleanup(p.healQuietly)
			sc := *c
			sc.t = t
			leader := sc.WaitSingleHolder(partHealBound, nil)
			f(t, &sc, leader)
		})
	}

	// 1. server1 (leader) x--x server2: leader and VIP stay.
	run("1_leader_cut_from_one_follower", func(t *testing.T, c *Cluster, l int) {
		f := others(c, l)
		t0 := time.Now()
		p.Cut(l, f[0])
		t.Logf("cut leader %d from follower %d", l, f[0])
		expectUnchanged(t, c, l, t0, partObserve)
		healAndSettle(t, c, p, l)
		expectUnchanged(t, c, l, time.Now(), time.Second)
	})

	// 2. leader x--x both followers: the VIP moves to one of them, and the
	// old leader lets go of it before the new one takes it.
	run("2_leader_cut_from_both", func(t *testing.T, c *Cluster, l int) {
		t0 := time.Now()
		p.Isolate(l)
		t.Logf("cut leader %d from both followers", l)
		next := c.WaitSingleHolder(partMoveBound, func(n int) bool { return n != l })
		tl := c.Sampler.TimelineSince(t0)
		var released, acquired time.Time
		for _, ch := range tl {
			if released.IsZero() && !slices.Contains(ch.Holders, l) {
				released = ch.At
			}
			if acquired.IsZero() && slices.Contains(ch.Holders, next) {
				acquired = ch.At
			}
		}
		t.Logf("timeline %s", describeChanges(tl, t0))
		switch {
		case released.IsZero() || acquired.IsZero():
			t.Fatalf("no release or no acquire in %s", describeChanges(tl, t0))
		case !released.Before(acquired):
			t.Fatalf("node %d took the VIP (+%s) before node %d let go (+%s)", next, acquired.Sub(t0), l, released.Sub(t0))
		}
		t.Logf("old leader %d released the VIP %s after the cut; node %d held it %s after the cut (gap %s)",
			l, released.Sub(t0).Round(time.Millisecond), next, acquired.Sub(t0).Round(time.Millisecond),
			acquired.Sub(released).Round(time.Millisecond))
		c.WaitClientReachesBackend(reachBound)
		healAndSettle(t, c, p, next)
	})

	// 3. everyone cut from everyone: no holder at all (consistency before
	// availability); on heal exactly one holder returns.
	run("3_full_partition", func(t *testing.T, c *Cluster, l int) {
		t0 := time.Now()
		for i := 1; i <= 3; i++ {
			p.Isolate(i)
		}
		t.Logf("every node cut from every other (leader was %d)", l)
		empty := waitNoHolder(t, c, partMoveBound)
		t.Logf("no holder %s after the cut", empty.Sub(t0).Round(time.Millisecond))
		time.Sleep(partObserve)
		tl := c.Sampler.TimelineSince(empty)
		for _, ch := range tl {
			if len(ch.Holders) != 0 {
				t.Fatalf("a holder appeared during the full partition: %s", describeChanges(tl, empty))
			}
		}
		t.Logf("nobody held the VIP for %s of full partition", partObserve)
		healAndSettle(t, c, p, 0)
	})

	// 4. server2 x--x server3 (the followers): nothing changes.
	run("4_followers_cut", func(t *testing.T, c *Cluster, l int) {
		f := others(c, l)
		t0 := time.Now()
		p.Cut(f[0], f[1])
		t.Logf("cut follower %d from follower %d", f[0], f[1])
		expectUnchanged(t, c, l, t0, partObserve)
		healAndSettle(t, c, p, l)
	})

	// 5. followers cut from each other and the leader from one of them:
	// the leader keeps a quorum with the other, so nothing changes.
	run("5_followers_cut_and_leader_cut_from_one", func(t *testing.T, c *Cluster, l int) {
		f := others(c, l)
		t0 := time.Now()
		p.Cut(f[0], f[1])
		p.Cut(l, f[1])
		t.Logf("cut follower %d from follower %d and leader %d from follower %d", f[0], f[1], l, f[1])
		expectUnchanged(t, c, l, t0, partObserve)
		healAndSettle(t, c, p, l)
		expectUnchanged(t, c, l, time.Now(), time.Second)
	})
}

func TestPartitionFiveNodes(t *testing.T) {
	c := StartClusterWith(t, 5, raftDefaults)
	keepLogs(t, c)
	p := NewPartitioner(t, c.Net)
	c.WaitSingleHolder(electionBound, nil)
	c.WaitClientReachesBackend(reachBound)

	run := func(name string, f func(t *testing.T, c *Cluster, leader int)) {
		t.Run(name, func(t *testing.T) {
			t.Cleanup(p.healQuietly)
			sc := *c
			sc.t = t
			f(t, &sc, sc.WaitSingleHolder(partHealBound, nil))
		})
	}

	// Two followers lost: the leader keeps three of five, and the VIP stays
	// served by one of those three (the leader, unless it misses its lease
	// on a loaded machine and another of the three is elected).
	run("two_followers_lost", func(t *testing.T, c *Cluster, l int) {
		f := others(c, l)
		t0 := time.Now()
		p.Isolate(f[0])
		p.Isolate(f[1])
		t.Logf("lost followers %d and %d", f[0], f[1])
		time.Sleep(partObserve)
		holder := c.WaitSingleHolder(partMoveBound, func(n int) bool { return n != f[0] && n != f[1] })
		tl := c.Sampler.TimelineSince(t0)
		if holder != l || len(tl) > 1 {
			t.Logf("the VIP moved although the leader kept a quorum: %s", describeChanges(tl, t0))
		}
		t.Logf("node %d serves the VIP with two followers lost: %s", holder, describeChanges(tl, t0))
		c.WaitClientReachesBackend(reachBound)
		healAndSettle(t, c, p, holder)
	})

	// The leader and a follower lost: the other three elect and serve.
	run("leader_and_follower_lost", func(t *testing.T, c *Cluster, l int) {
		f := others(c, l)
		t0 := time.Now()
		p.Isolate(l)
		p.Isolate(f[0])
		t.Logf("lost leader %d and follower %d", l, f[0])
		next := c.WaitSingleHolder(partMoveBound, func(n int) bool { return n != l && n != f[0] })
		t.Logf("node %d holds the VIP %s after the loss: %s", next, time.Since(t0).Round(time.Millisecond),
			describeChanges(c.Sampler.TimelineSince(t0), t0))
		c.WaitClientReachesBackend(reachBound)
		healAndSettle(t, c, p, next)
	})

	// Three lost, the leader among them: no quorum anywhere, no VIP
	// anywhere; on heal exactly one holder.
	run("three_lost", func(t *testing.T, c *Cluster, l int) {
		f := others(c, l)
		t0 := time.Now()
		for _, i := range []int{l, f[0], f[1]} {
			p.Isolate(i)
		}
		t.Logf("lost leader %d and followers %d, %d; nodes %d, %d remain together", l, f[0], f[1], f[2], f[3])
		empty := waitNoHolder(t, c, partMoveBound)
		t.Logf("no holder %s after the loss", empty.Sub(t0).Round(time.Millisecond))
		time.Sleep(partObserve)
		for _, ch := range c.Sampler.TimelineSince(empty) {
			if len(ch.Holders) != 0 {
				t.Fatalf("a holder without quorum: %s", describeChanges(c.Sampler.TimelineSince(empty), empty))
			}
		}
		t.Logf("nobody held the VIP for %s with three of five lost", partObserve)
		healAndSettle(t, c, p, 0)
	})
}

// keepLogsEnv names a directory to copy every node's log into at the end of
// a test, for reading timings after the fact.
const keepLogsEnv = "KEEPVIP_E2E_KEEP_LOGS"

// keepLogs copies c's node logs into $KEEPVIP_E2E_KEEP_LOGS/<test>/ at the
// end of the test, when that is set.
func keepLogs(t *testing.T, c *Cluster) {
	dir := os.Getenv(keepLogsEnv)
	if dir == "" {
		return
	}
	t.Cleanup(func() {
		dst := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_"))
		_ = os.MkdirAll(dst, 0o755)
		for _, n := range c.Nodes {
			if n == nil {
				continue
			}
			if b, err := os.ReadFile(n.LogPath); err == nil {
				_ = os.WriteFile(filepath.Join(dst, n.ID+".log"), b, 0o644)
			}
		}
		t.Logf("node logs copied to %s", dst)
	})
}
