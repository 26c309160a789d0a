package e2e

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keep-vip/keep-vip/rpc"
)

// Generous bounds: raft elects in ~1-2s with the 500ms timeouts configured,
// and checks run every 0.5s, so these only trip on real trouble.
const (
	electionBound = 30 * time.Second
	reachBound    = 20 * time.Second
	processBound  = 20 * time.Second
	metricsBound  = 15 * time.Second
)

func TestClusterHoldsOneVIP(t *testing.T) {
	c := StartCluster(t, 3)
	holder := c.WaitSingleHolder(electionBound, nil)
	c.WaitClientReachesBackend(reachBound)

	// A few more asks show which backends the balancer spreads over.
	replies := map[string]int{}
	for range 9 {
		r, err := c.Client.Ask(c.VIPAddr(), time.Second)
		if err != nil {
			t.Errorf("ask %s: %v", c.VIPAddr(), err)
			continue
		}
		replies[r]++
	}
	t.Logf("9 asks through the VIP answered by %v", replies)

	c.WaitLeaderMetric(holder, 1, metricsBound)
	t.Logf("%s (VIP holder) reports keep_vip_member_is_leader 1", c.Node(holder).ID)
	for _, n := range c.Nodes {
		if n.Index == holder {
			continue
		}
		v, found, err := n.IsLeaderMetric()
		switch {
		case err != nil:
			t.Errorf("%s: fetch /metrics: %v", n.ID, err)
		case found && v == 1:
			t.Errorf("%s does not hold the VIP but reports keep_vip_member_is_leader 1", n.ID)
		default:
			t.Logf("%s (follower): keep_vip_member_is_leader found=%v value=%g", n.ID, found, v)
		}
	}
	if hs, err := c.VIPHolders(); err != nil || !slices.Equal(hs, []int{holder}) {
		t.Errorf("VIP holders at the end: %v (err %v), want [%d]", hs, err, holder)
	}

	// Each plugin started with its footprint's GODEBUG settings first (the
	// elector's keep the runtime's monitor thread ticking, rpc/footprint.go).
	for name, pid := range c.WaitPlugins(holder, processBound) {
		want := rpc.Footprints[strings.TrimPrefix(name, "keep-vip-")].Godebug
		if godebug := processEnv(t, pid)["GODEBUG"]; want != "" && !strings.HasPrefix(godebug, want) {
			t.Errorf("%s (pid %d) started with GODEBUG=%q, want %q first", name, pid, godebug, want)
		}
	}
}

// processEnv is the environment pid started with.
func processEnv(t *testing.T, pid int) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatalf("environment of %d: %v", pid, err)
	}
	env := map[string]string{}
	for _, kv := range strings.Split(string(raw), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env
}

func TestKill9LeaderSupervisor(t *testing.T) {
	c := StartCluster(t, 3)
	leader := c.WaitSingleHolder(electionBound, nil)
	c.WaitClientReachesBackend(reachBound)
	node := c.Node(leader)
	plugins := c.WaitPlugins(leader, processBound)
	t.Logf("%s: supervisor %d, plugins %v", node.ID, node.PID(), plugins)

	prober := c.Client.StartProber(c.VIPAddr())
	defer prober.Stop()
	time.Sleep(300 * time.Millisecond) // some answers before the kill
	killedAt := time.Now()
	node.Kill9()
	t.Logf("kill -9 %s's supervisor (pid %d)", node.ID, node.PID())

	took := mustWaitFor(t, processBound, node.ID+"'s plugins to exit", func() (bool, string) {
		var alive []string
		for name, pid := range plugins {
			if processAlive(pid) {
				alive = append(alive, fmt.Sprintf("%s[%d]", name, pid))
			}
		}
		left, err := keepVIPProcessesInNetns(node.NS, c.Bins.Dir)
		if err != nil {
			return false, err.Error()
		}
		return len(alive) == 0 && len(left) == 0, fmt.Sprintf("recorded plugins alive: %v; keep-vip processes in %s: %s", alive, node.NS, describeProcesses(left))
	})
	t.Logf("%s: all plugin processes gone %s after the kill", node.ID, took.Round(time.Millisecond))

	mustWaitFor(t, processBound, node.ID+" to drop the VIP", func() (bool, string) {
		held, err := c.NodeHoldsVIP(leader)
		if err != nil {
			return false, err.Error()
		}
		return !held, "VIP still on " + node.ID + "'s eth0"
	})
	t.Logf("%s: VIP gone from eth0 %s after the kill", node.ID, time.Since(killedAt).Round(time.Millisecond))

	newLeader := c.WaitSingleHolder(electionBound, func(i int) bool { return i != leader })
	t.Logf("VIP moved %s -> %s; new holder seen %s after the kill",
		node.ID, c.Node(newLeader).ID, time.Since(killedAt).Round(time.Millisecond))
	c.WaitClientReachesBackend(reachBound)

	// Let the prober collect answers after the failover, then report.
	time.Sleep(500 * time.Millisecond)
	report := prober.Stop()
	t.Logf("client-visible outage on kill -9 of the leader's supervisor: %s", report.LongestGap.Round(time.Millisecond))
	t.Logf("prober: %s", report)
	if !report.Recovered || report.Successes == 0 {
		t.Errorf("client did not recover: %s", report)
	}
	c.WaitLeaderMetric(newLeader, 1, metricsBound)
}

func TestKillEachPluginOnLeader(t *testing.T) {
	c := StartCluster(t, 3)
	c.WaitSingleHolder(electionBound, nil)
	c.WaitClientReachesBackend(reachBound)

	for _, plugin := range pluginNames { // checker, announcer, balancer, elector
		t.Run(plugin, func(t *testing.T) {
			// The Cluster's waits report through the parent test; wrap so
			// failures land on the subtest.
			sc := *c
			sc.t = t
			leader := sc.WaitSingleHolder(electionBound, nil)
			node := sc.Node(leader)
			supervisorPID := node.PID()
			oldPID, killedAt := kill9Plugin(t, node, plugin)
			t.Logf("kill -9 %s[%d] on leader %s (supervisor %d)", plugin, oldPID, node.ID, supervisorPID)
			newPID, took := waitPluginRestarted(t, node, plugin, oldPID, supervisorPID)
			sc.RequireSupervisorRunning(leader)
			t.Logf("%s: %s restarted as pid %d, %s after the kill", node.ID, plugin, newPID, took.Round(time.Millisecond))

			holder := sc.WaitSingleHolder(electionBound, nil)
			sc.WaitClientReachesBackend(reachBound)
			sc.RequireSupervisorRunning(leader)
			if node.PID() != supervisorPID {
				t.Errorf("%s: supervisor pid changed %d -> %d", node.ID, supervisorPID, node.PID())
			}
			t.Logf("after killing %s: VIP on %s, cluster whole %s after the kill",
				plugin, sc.Node(holder).ID, time.Since(killedAt).Round(time.Millisecond))
		})
	}
}

func TestFailingCheckMovesVIP(t *testing.T) {
	c := StartCluster(t, 3)
	leader := c.WaitSingleHolder(electionBound, nil)
	c.WaitClientReachesBackend(reachBound)
	node := c.Node(leader)
	c.WaitPlugins(leader, processBound)

	prober := c.Client.StartProber(c.VIPAddr())
	defer prober.Stop()
	time.Sleep(300 * time.Millisecond)
	failedAt := time.Now()
	node.Health.Stop()
	t.Logf("%s: health endpoint %s stopped", node.ID, healthAddr)

	newLeader := c.WaitSingleHolder(electionBound, func(i int) bool { return i != leader })
	t.Logf("VIP moved %s -> %s %s after the health endpoint stopped",
		node.ID, c.Node(newLeader).ID, time.Since(failedAt).Round(time.Millisecond))
	c.WaitClientReachesBackend(reachBound)
	time.Sleep(500 * time.Millisecond)
	report := prober.Stop()
	t.Logf("client-visible outage on a failing leader check: %s", report.LongestGap.Round(time.Millisecond))
	t.Logf("prober: %s", report)

	// The unhealthy node keeps its supervisor but leaves the election.
	mustWaitFor(t, processBound, node.ID+" to stop its elector", func() (bool, string) {
		if !node.SupervisorRunning() {
			return false, "supervisor is gone"
		}
		kids, err := node.PluginChildren()
		if err != nil {
			return false, err.Error()
		}
		return len(kids["keep-vip-elector"]) == 0, fmt.Sprintf("elector still running: %s", describeProcesses(kids["keep-vip-elector"]))
	})
	c.RequireSupervisorRunning(leader)
	t.Logf("%s: supervisor %d still running, no keep-vip-elector child", node.ID, node.PID())

	healedAt := time.Now()
	node.Health.Start()
	t.Logf("%s: health endpoint %s started again", node.ID, healthAddr)
	took := mustWaitFor(t, processBound, node.ID+" to start its elector again", func() (bool, string) {
		pid, err := node.PluginPID("keep-vip-elector")
		if err != nil {
			return false, err.Error()
		}
		return pid > 0, ""
	})
	t.Logf("%s: keep-vip-elector back %s after the health endpoint came back", node.ID, took.Round(time.Millisecond))

	// It rejoins as a follower: the VIP stays where it went, for a while.
	hold := c.WaitSingleHolder(electionBound, nil)
	if hold != newLeader {
		t.Errorf("VIP on %s after %s rejoined, want it to stay on %s", c.Node(hold).ID, node.ID, c.Node(newLeader).ID)
	}
	const watchFor = 3 * time.Second
	_, moved, detail := waitFor(t, watchFor, func() (bool, string) {
		hs, err := c.VIPHolders()
		if err != nil {
			return false, err.Error()
		}
		return !slices.Equal(hs, []int{newLeader}), fmt.Sprintf("holders %v", hs)
	})
	if moved {
		t.Errorf("within %s of %s rejoining the VIP left %s: %s", watchFor, node.ID, c.Node(newLeader).ID, detail)
	}
	c.WaitLeaderMetric(newLeader, 1, metricsBound)
	v, found, err := node.IsLeaderMetric()
	switch {
	case err != nil:
		t.Errorf("%s: fetch /metrics: %v", node.ID, err)
	case found && v == 1:
		t.Errorf("%s rejoined but reports keep_vip_member_is_leader 1", node.ID)
	}
	c.RequireSupervisorRunning(leader)
	t.Logf("%s is a follower again %s after healing; leader %s", node.ID,
		time.Since(healedAt).Round(time.Millisecond), c.Node(newLeader).ID)
}

// kill9Plugin SIGKILLs node's running plugin (a binary name of pluginNames)
// and returns its pid and when it was killed.
func kill9Plugin(t *testing.T, node *Node, plugin string) (int, time.Time) {
	t.Helper()
	pid := 0
	mustWaitFor(t, processBound, node.ID+"'s "+plugin, func() (bool, string) {
		p, err := node.PluginPID(plugin)
		if err != nil {
			return false, err.Error()
		}
		pid = p
		return true, ""
	})
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %s[%d] on %s: %v", plugin, pid, node.ID, err)
	}
	return pid, time.Now()
}

// waitPluginRestarted waits until node's supervisor (still supervisorPID)
// runs plugin again under a new pid, and returns that pid and the wait.
func waitPluginRestarted(t *testing.T, node *Node, plugin string, oldPID, supervisorPID int) (int, time.Duration) {
	t.Helper()
	newPID := 0
	took := mustWaitFor(t, processBound, node.ID+" to restart "+plugin, func() (bool, string) {
		if !node.SupervisorRunning() || !processAlive(supervisorPID) {
			return false, "supervisor is gone"
		}
		if processAlive(oldPID) {
			return false, fmt.Sprintf("old %s[%d] still alive", plugin, oldPID)
		}
		pid, err := node.PluginPID(plugin)
		if err != nil {
			return false, err.Error()
		}
		newPID = pid
		return pid != oldPID, fmt.Sprintf("%s pid still %d", plugin, pid)
	})
	return newPID, took
}
