package e2e

import (
	"fmt"
	"math/rand"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The nemesis: a seeded random run of faults against a cluster, checking
// three things throughout:
//
//  1. never two VIP holders (the Sampler, every 5ms);
//  2. liveness: once nothing has happened for nemesisStableBound and a
//     quorum of healthy nodes (supervisor running, health endpoint up, link
//     up) can all reach one another, exactly one node holds the VIP; and
//     when no such quorum exists, none does;
//  3. no supervisor ever exits unless the nemesis killed it.
//
// Faults: partitions (one node isolated, a random split, one link cut) and
// heals; kill -9 of a random plugin, or of a supervisor (started again a
// little later); check flaps (the health endpoint stopped and started);
// the node's link set down and up. Faults pile up during a chaos phase;
// then the nemesis holds still for nemesisStableBound plus an observation
// window, sometimes after undoing every fault, sometimes leaving them.
//
// Between phases, at most nemesisMaxMemberChanges times a run, the members
// change as the README's procedure says: a member is replaced by a spare
// node, or two spares join (3 → 5), or two members leave (5 → 3). Faults
// and the liveness check then apply to the new members.
//
// nemesisStableBound, 6s, is what a healthy quorum may need after the last
// fault: a supervisor start (plugins up, a first check verdict, the
// elector's one-heartbeat-timeout start quarantine) plus an election and a
// plugin restart backoff. The nemesis kills the same plugin on the same
// node at most twice in 30s, so no restart backoff exceeds 200ms (it
// doubles per crash and resets after 30s of running). The run prints how
// long each quiet phase actually took to reach a single holder.
//
// KEEPVIP_NEMESIS_SEED reproduces a run (the seed is printed at the start
// and with every failure); KEEPVIP_NEMESIS_DURATION (a Go duration, default
// 60s) makes it longer; KEEPVIP_NEMESIS_NODES (3 or 5) sets the size.
const (
	nemesisSeedEnv     = "KEEPVIP_NEMESIS_SEED"
	nemesisDurationEnv = "KEEPVIP_NEMESIS_DURATION"
	nemesisNodesEnv    = "KEEPVIP_NEMESIS_NODES"

	nemesisDefaultDuration = 60 * time.Second
	nemesisStableBound     = 6 * time.Second
	nemesisWatch           = 2 * time.Second // watched after the bound in a quiet phase
	nemesisPoll            = 50 * time.Millisecond
	nemesisMaxKillsPer30s  = 2
	// nemesisSpares are the nodes beyond the cluster's size that membership
	// changes bring in.
	nemesisSpares           = 2
	nemesisMaxMemberChanges = 3
)

type nemesisNode struct {
	supDown, healthDown, linkDown bool
	// Scheduled recoveries (zero: none).
	supUpAt, healthUpAt, linkUpAt time.Time
}

type nemesis struct {
	t        *testing.T
	c        *Cluster
	p        *Partitioner
	rng      *rand.Rand
	seed     int64
	nodes    []*nemesisNode // index i-1 for node i
	kills    map[string][]time.Time
	lastAct  time.Time
	actions  int
	settleTo []time.Duration // quiet phases: last action → single holder
	// members are the nodes the cluster's files list now; the others are
	// spares, stopped.
	members       []int
	memberChanges int
	raft          func(*NodeConfig)
}

func (m *nemesis) fail(format string, args ...any) {
	m.t.Helper()
	m.t.Errorf("nemesis (%s=%d): %s", nemesisSeedEnv, m.seed, fmt.Sprintf(format, args...))
}

func (m *nemesis) log(format string, args ...any) {
	m.t.Helper()
	m.actions++
	m.lastAct = time.Now()
	m.t.Logf("nemesis #%d: %s", m.actions, fmt.Sprintf(format, args...))
}

// good is a node that may hold the VIP: supervisor running, checks and link
// up.
func (m *nemesis) good(i int) bool {
	n := m.nodes[i-1]
	return slices.Contains(m.members, i) && !n.supDown && !n.healthDown && !n.linkDown
}

// healthyQuorum tells whether some quorum of good nodes can all reach one
// another (sizes are at most 5, so every subset is tried).
func (m *nemesis) healthyQuorum() bool {
	size := len(m.members)
	q := size/2 + 1
	for set := 0; set < 1<<size; set++ {
		var members []int
		for x, i := range m.members {
			if set&(1<<x) != 0 {
				members = append(members, i)
			}
		}
		if len(members) < q {
			continue
		}
		ok := true
		for _, i := range members {
			ok = ok && m.good(i)
			for _, j := range members {
				ok = ok && (i == j || m.p.Connected(i, j))
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func (m *nemesis) describe() string {
	var parts []string
	for i, n := range m.nodes {
		var s []string
		if n.supDown {
			s = append(s, "supervisor down")
		}
		if n.healthDown {
			s = append(s, "check failing")
		}
		if n.linkDown {
			s = append(s, "link down")
		}
		if len(s) > 0 {
			parts = append(parts, fmt.Sprintf("%d: %s", i+1, strings.Join(s, ", ")))
		}
	}
	return fmt.Sprintf("cuts %s; %s", m.p.Describe(), strings.Join(parts, "; "))
}

// checkSupervisors fails for a supervisor that is gone without being killed.
func (m *nemesis) checkSupervisors() {
	for i, n := range m.nodes {
		if !n.supDown && m.c.Nodes[i] != nil && !m.c.Nodes[i].SupervisorRunning() {
			m.fail("%s's supervisor exited by itself (state: %s); tail of its log:\n%s",
				m.c.Nodes[i].ID, m.describe(), m.c.Nodes[i].LogTail(40))
			n.supDown = true // report once
		}
	}
}

// recover runs the scheduled recoveries that are due (all, if force).
func (m *nemesis) recover(force bool) {
	now := time.Now()
	due := func(at time.Time) bool { return !at.IsZero() && (force || !now.Before(at)) }
	for i, n := range m.nodes {
		node := m.c.Nodes[i]
		if node == nil {
			continue
		}
		if due(n.supUpAt) {
			restartSupervisor(node)
			n.supDown, n.supUpAt = false, time.Time{}
			m.log("restart %s's supervisor", node.ID)
		}
		if due(n.healthUpAt) {
			node.Health.Start()
			n.healthDown, n.healthUpAt = false, time.Time{}
			m.log("%s: check passes again", node.ID)
		}
		if due(n.linkUpAt) {
			setLink(m.t, node, "up")
			n.linkDown, n.linkUpAt = false, time.Time{}
			m.log("%s: link up", node.ID)
		}
	}
}

func (m *nemesis) later() time.Time {
	return time.Now().Add(500*time.Millisecond + time.Duration(m.rng.Int63n(int64(3*time.Second))))
}

// act does one random fault.
func (m *nemesis) act() {
	size := len(m.members)
	i := m.members[m.rng.Intn(size)]
	node, n := m.c.Node(i), m.nodes[i-1]
	switch r := m.rng.Intn(100); {
	case r < 12:
		m.p.Isolate(i)
		m.log("isolate node %d", i)
	case r < 20:
		perm := m.rng.Perm(size)
		k := 1 + m.rng.Intn(size-1)
		var a, b []int
		for x, v := range perm {
			if x < k {
				a = append(a, m.members[v])
			} else {
				b = append(b, m.members[v])
			}
		}
		m.p.Split(a, b)
		m.log("split %v | %v", a, b)
	case r < 30:
		j := m.members[m.rng.Intn(size)]
		if j == i {
			return
		}
		m.p.Cut(i, j)
		m.log("cut %d-%d", i, j)
	case r < 42:
		m.p.HealAll()
		m.log("heal all partitions")
	case r < 65:
		if n.supDown {
			return
		}
		name := pluginNames[m.rng.Intn(len(pluginNames))]
		key := fmt.Sprintf("%d/%s", i, name)
		var recent []time.Time
		for _, at := range m.kills[key] {
			if time.Since(at) < 30*time.Second {
				recent = append(recent, at)
			}
		}
		if len(recent) >= nemesisMaxKillsPer30s {
			return
		}
		pid, err := node.PluginPID(name)
		if err != nil {
			return // not running (an elector left the election, or restarting)
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			return
		}
		m.kills[key] = append(recent, time.Now())
		m.log("kill -9 %s[%d] on node %d", name, pid, i)
	case r < 75:
		if n.supDown {
			return
		}
		node.Kill9()
		n.supDown, n.supUpAt = true, m.later()
		m.log("kill -9 node %d's supervisor (back at +%s)", i, time.Until(n.supUpAt).Round(time.Millisecond))
	case r < 88:
		if n.healthDown {
			return
		}
		node.Health.Stop()
		n.healthDown, n.healthUpAt = true, m.later()
		m.log("node %d's check fails (until +%s)", i, time.Until(n.healthUpAt).Round(time.Millisecond))
	default:
		if n.linkDown {
			return
		}
		setLink(m.t, node, "down")
		n.linkDown, n.linkUpAt = true, m.later()
		m.log("node %d's link down (until +%s)", i, time.Until(n.linkUpAt).Round(time.Millisecond))
	}
}

// quiet holds still (but for due recoveries, which restart the clock) for
// the stable bound plus the watch window after the last action, checking
// liveness.
func (m *nemesis) quiet() {
	start := m.lastAct
	settled := time.Time{}
	for polls := 0; time.Since(m.lastAct) < nemesisStableBound+nemesisWatch && polls < 100_000; polls++ {
		m.recover(false)
		m.checkSupervisors()
		if m.lastAct.After(start) {
			start, settled = m.lastAct, time.Time{}
		}
		hs, err := m.c.VIPHolders()
		if err != nil {
			m.fail("read VIP holders: %v", err)
			return
		}
		quorum := m.healthyQuorum()
		if (quorum && len(hs) == 1) || (!quorum && len(hs) == 0) {
			if settled.IsZero() {
				settled = time.Now()
			}
		} else {
			settled = time.Time{}
		}
		if time.Since(start) >= nemesisStableBound {
			want := "exactly one"
			if !quorum {
				want = "none"
			}
			if settled.IsZero() {
				m.fail("%s after the last fault: VIP holders %v, want %s (state: %s)",
					time.Since(start).Round(time.Millisecond), hs, want, m.describe())
				return
			}
		}
		time.Sleep(nemesisPoll)
	}
	if !settled.IsZero() {
		m.settleTo = append(m.settleTo, settled.Sub(start))
		m.t.Logf("nemesis: quiet for %s, settled %s after the last fault (healthy quorum: %v)",
			time.Since(start).Round(time.Millisecond), settled.Sub(start).Round(time.Millisecond), m.healthyQuorum())
	}
}

func TestNemesis(t *testing.T) {
	seed := time.Now().UnixNano()
	if v := os.Getenv(nemesisSeedEnv); v != "" {
		s, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", nemesisSeedEnv, v, err)
		}
		seed = s
	}
	duration := nemesisDefaultDuration
	if v := os.Getenv(nemesisDurationEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("%s=%q: want a Go duration like 10m", nemesisDurationEnv, v)
		}
		duration = d
	}
	size := 3
	if v := os.Getenv(nemesisNodesEnv); v != "" {
		if n, err := strconv.Atoi(v); err == nil && (n == 3 || n == 5) {
			size = n
		}
	}
	t.Logf("nemesis: %s=%d, %d nodes, %s", nemesisSeedEnv, seed, size, duration)
	t.Cleanup(func() {
		t.Logf("nemesis: reproduce with %s=%d %s=%s %s=%d", nemesisSeedEnv, seed, nemesisDurationEnv, duration, nemesisNodesEnv, size)
	})

	c := NewIdleCluster(t, size+nemesisSpares)
	m := &nemesis{t: t, c: c, rng: rand.New(rand.NewSource(seed)), seed: seed, kills: map[string][]time.Time{}, raft: raftDefaults}
	for i := 1; i <= size; i++ {
		m.members = append(m.members, i)
	}
	for i := 1; i <= size+nemesisSpares; i++ {
		m.nodes = append(m.nodes, &nemesisNode{supDown: i > size})
	}
	for _, i := range m.members {
		cfg := NodeConfig{Index: i, MemberIDs: m.members}
		m.raft(&cfg)
		c.StartSlot(cfg)
	}
	keepLogs(t, c)
	p := NewPartitioner(t, c.Net)
	m.p = p
	c.WaitSingleHolder(electionBound, nil)
	m.lastAct = time.Now()

	end := time.Now().Add(duration)
	for phase := 0; time.Now().Before(end) && phase < 10_000; phase++ {
		// Chaos: faults every 0.2-1.2s for 3-8s.
		chaosEnd := time.Now().Add(3*time.Second + time.Duration(m.rng.Int63n(int64(5*time.Second))))
		for steps := 0; time.Now().Before(chaosEnd) && steps < 1000; steps++ {
			m.recover(false)
			m.checkSupervisors()
			m.act()
			time.Sleep(200*time.Millisecond + time.Duration(m.rng.Int63n(int64(time.Second))))
		}
		if t.Failed() {
			break
		}
		// Quiet: half the time undo every fault first, and then, now and
		// then, change the members.
		if m.rng.Intn(2) == 0 {
			p.HealAll()
			m.recover(true)
			m.log("heal everything")
			if m.memberChanges < nemesisMaxMemberChanges && m.rng.Intn(2) == 0 {
				m.changeMembers()
			}
		}
		m.quiet()
		if t.Failed() {
			break
		}
	}

	// Leave the cluster whole and check it still ends with one holder.
	p.HealAll()
	m.recover(true)
	m.log("end: heal everything")
	m.quiet()
	m.checkSupervisors()

	slices.Sort(m.settleTo)
	if n := len(m.settleTo); n > 0 {
		t.Logf("nemesis: %d actions; %d quiet phases settled after min %s, median %s, max %s (bound %s)", m.actions, n,
			m.settleTo[0].Round(time.Millisecond), m.settleTo[n/2].Round(time.Millisecond), m.settleTo[n-1].Round(time.Millisecond), nemesisStableBound)
	}
	c.Sampler.mu.Lock()
	violations := len(c.Sampler.report.Violations)
	c.Sampler.mu.Unlock()
	if violations > 0 {
		m.fail("%d samples with two VIP holders", violations)
	}
}

// restartSupervisor starts node's supervisor again after a kill -9.
func restartSupervisor(n *Node) {
	n.t.Helper()
	n.mu.Lock()
	if n.logFile != nil {
		_ = n.logFile.Close()
		n.logFile = nil
	}
	n.mu.Unlock()
	n.startSupervisor()
}

// setLink sets node's eth0 up or down.
func setLink(t *testing.T, n *Node, state string) {
	t.Helper()
	if out, err := runIP("-n", n.NS, "link", "set", nodeIfName, state); err != nil {
		t.Fatalf("%s: ip link set %s %s: %v: %s", n.ID, nodeIfName, state, err, out)
	}
}

// changeMembers replaces a member by a spare, grows 3 → 5 or shrinks 5 → 3,
// the README's way: leaving members are stopped, joining ones started with
// the new list, staying ones reloaded with it; then it waits until every
// member's Raft configuration is the new list. Called with every fault
// undone, so a quorum is there to make the change.
func (m *nemesis) changeMembers() {
	m.t.Helper()
	m.memberChanges++
	var spares []int
	for i := 1; i <= len(m.nodes); i++ {
		if !slices.Contains(m.members, i) {
			spares = append(spares, i)
		}
	}
	pick := func(from []int, k int) []int {
		out := slices.Clone(from)
		m.rng.Shuffle(len(out), func(a, b int) { out[a], out[b] = out[b], out[a] })
		return out[:k]
	}
	var leaving, joining []int
	op := "replace"
	switch {
	case len(m.members) == 3 && len(spares) >= 2 && m.rng.Intn(2) == 0:
		op, joining = "grow", pick(spares, 2)
	case len(m.members) == 5 && (len(spares) == 0 || m.rng.Intn(2) == 0):
		// With no spare left (every node a member) a replace has
		// nothing to bring in: shrink.
		op, leaving = "shrink", pick(m.members, 2)
	default:
		leaving, joining = pick(m.members, 1), pick(spares, 1)
	}
	var next []int
	for _, i := range m.members {
		if !slices.Contains(leaving, i) {
			next = append(next, i)
		}
	}
	next = append(next, joining...)
	slices.Sort(next)
	m.log("members %s: %v → %v (leaving %v, joining %v)", op, m.members, next, leaving, joining)
	for _, i := range leaving {
		m.c.Node(i).Stop()
		m.nodes[i-1].supDown = true
	}
	for _, i := range joining {
		if node := m.c.Nodes[i-1]; node == nil {
			cfg := NodeConfig{Index: i, MemberIDs: next}
			m.raft(&cfg)
			m.c.StartSlot(cfg)
		} else {
			// A member removed earlier comes back on its own data dir: the
			// leader adds it again as a non-voter.
			node.Rewrite(func(cfg *NodeConfig) { cfg.MemberIDs = next })
			restartSupervisor(node)
		}
		m.nodes[i-1] = &nemesisNode{}
	}
	m.members = next
	for _, i := range next {
		if !slices.Contains(joining, i) {
			node := m.c.Node(i)
			node.Rewrite(func(cfg *NodeConfig) { cfg.MemberIDs = next })
			node.Reload()
		}
	}
	took, ok, detail := waitFor(m.t, membershipBound, func() (bool, string) {
		for _, i := range next {
			st, err := m.c.Node(i).Status()
			if err != nil {
				return false, err.Error()
			}
			if st.Raft == nil || st.Raft.Differences != "none" {
				return false, fmt.Sprintf("%s: %+v", m.c.Node(i).ID, st.Raft)
			}
		}
		return true, ""
	})
	if !ok {
		m.fail("members %v not in Raft's configuration after %s: %s", next, took.Round(time.Millisecond), detail)
		return
	}
	m.log("members %s done: Raft's configuration is %v after %s", op, next, took.Round(time.Millisecond))
}
