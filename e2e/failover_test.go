package e2e

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Failover paths of issue 3 on real binaries: the handover on a failing
// check (release, then a leadership transfer to a member in contact, then
// the elector stops), the failover metrics, and the preferred holder.

// metricSample reads the value of metric name whose labels include every
// "key=value" of want, from a Prometheus text exposition.
func metricSample(body, name string, want ...string) (float64, bool) {
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name) || strings.HasPrefix(line, "#") {
			continue
		}
		rest := line[len(name):]
		labels := ""
		switch {
		case strings.HasPrefix(rest, "{"):
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				continue
			}
			labels, rest = rest[1:end], rest[end+1:]
		case strings.HasPrefix(rest, " "):
		default:
			continue
		}
		ok := true
		for _, kv := range want {
			k, v, _ := strings.Cut(kv, "=")
			ok = ok && strings.Contains(labels, k+`="`+v+`"`)
		}
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			return v, true
		}
	}
	return 0, false
}

// waitMetricSample waits until node's metric (with labels) satisfies ok.
func waitMetricSample(t *testing.T, n *Node, name string, ok func(float64) bool, labels ...string) float64 {
	t.Helper()
	var v float64
	mustWaitFor(t, metricsBound, fmt.Sprintf("%s %s%v", n.ID, name, labels), func() (bool, string) {
		body, err := n.Metrics()
		if err != nil {
			return false, err.Error()
		}
		var found bool
		v, found = metricSample(body, name, labels...)
		return found && ok(v), fmt.Sprintf("found=%v value=%g", found, v)
	})
	return v
}

// A leader whose check fails hands the VIP over within milliseconds of the
// verdict: it releases the VIP, transfers leadership to a member in
// contact and only then stops its elector. Measured from the verdict (the
// old holder's log) to the VIP on the new holder (its log), over several
// trials; the elector's restart is counted as unhealthy, the handover as ok.
func TestHandoverOnFailingCheck(t *testing.T) {
	c := StartClusterWith(t, 3, raftDefaults)
	keepLogs(t, c)
	c.WaitSingleHolder(electionBound, nil)
	const trials = 4
	var took []time.Duration
	for i := range trials {
		old := c.WaitSingleHolder(electionBound, nil)
		node := c.Node(old)
		t0 := time.Now()
		node.Health.Stop()
		next := c.WaitSingleHolder(electionBound, func(n int) bool { return n != old })
		verdict, ok1 := firstLogTime(node.LogPath, t0, func(m map[string]any) bool {
			h, _ := m["healthy"].(bool)
			return m["message"] == "checks changed" && !h
		})
		acquired, ok2 := firstLogTime(c.Node(next).LogPath, t0, func(m map[string]any) bool { return m["message"] == "VIP acquired" })
		if !ok1 || !ok2 {
			t.Fatalf("trial %d: verdict in %s's log: %v; VIP acquired in %s's log: %v", i, node.ID, ok1, c.Node(next).ID, ok2)
		}
		d := acquired.Sub(verdict)
		took = append(took, d)
		t.Logf("trial %d: %s's check failed; %s held the VIP %s after the verdict (%s after the service stopped)",
			i, node.ID, c.Node(next).ID, d.Round(100*time.Microsecond), acquired.Sub(t0).Round(time.Millisecond))
		// A transfer, not an election after a timeout.
		if d > time.Second {
			t.Errorf("trial %d: handover took %s, want a leadership transfer (well under a heartbeat timeout)", i, d)
		}
		waitMetricSample(t, node, "keep_vip_supervisor_handovers_total", func(v float64) bool { return v >= 1 }, "reason=unhealthy", "result=ok")
		node.Health.Start()
		waitMetricSample(t, node, "keep_vip_supervisor_elector_restarts_total", func(v float64) bool { return v >= 1 }, "cause=unhealthy")
		time.Sleep(time.Second) // the elector's start quarantine, and a few heartbeats
	}
	slices.Sort(took)
	t.Logf("handover on a failing check, verdict → VIP on the new holder: min %s, median %s, max %s over %d trials",
		took[0].Round(100*time.Microsecond), took[len(took)/2].Round(100*time.Microsecond), took[len(took)-1].Round(100*time.Microsecond), trials)
}

// When the leader dies, the new holder reports how long the failover took
// as it saw it (from its last contact with the old leader to holding the
// VIP): about one heartbeat timeout with the defaults. A crashed elector's
// restart is counted as a crash.
func TestFailoverMetrics(t *testing.T) {
	c := StartClusterWith(t, 3, raftDefaults)
	keepLogs(t, c)
	old := c.WaitSingleHolder(electionBound, nil)
	c.WaitPlugins(old, processBound)
	c.Node(old).Kill9()
	next := c.WaitSingleHolder(electionBound, func(n int) bool { return n != old })
	v := waitMetricSample(t, c.Node(next), "keep_vip_supervisor_last_failover_seconds", func(v float64) bool { return v > 0 })
	t.Logf("%s: keep_vip_supervisor_last_failover_seconds %.3f after kill -9 of %s's supervisor", c.Node(next).ID, v, c.Node(old).ID)
	if v < 0.2 || v > 3 {
		t.Errorf("last failover %.3fs, want about one heartbeat timeout (0.3s)", v)
	}
	waitMetricSample(t, c.Node(next), "keep_vip_elector_leader_changes_total", func(v float64) bool { return v >= 2 })

	// kill -9 of a follower's elector: restarted, counted as a crash.
	follower := others(c, old, next)[0]
	pid, err := c.Node(follower).PluginPID("keep-vip-elector")
	if err != nil {
		t.Fatal(err)
	}
	if err := killPID(pid); err != nil {
		t.Fatal(err)
	}
	waitMetricSample(t, c.Node(follower), "keep_vip_supervisor_elector_restarts_total", func(v float64) bool { return v >= 1 }, "cause=crash")
	c.RequireSupervisorRunning(follower)
}

// With preemption, the VIP settles on the member of highest priority; when
// that member's check fails the VIP moves away, and once it is healthy
// again for preemptDelay the VIP moves back by a planned handover (the
// Sampler checks it is never on two members on the way).
func TestPreemptPreferredHolder(t *testing.T) {
	const top = 2
	c := StartClusterWith(t, 3, func(cfg *NodeConfig) {
		cfg.Raft = "  heartbeatTimeout: 300ms\n  preempt: true\n  preemptDelay: 1s\n"
		cfg.Render = func(nc NodeConfig, n *Net) string {
			nc.Render = nil
			y := nc.YAML(n)
			for i := 1; i <= nc.Members; i++ {
				prio := 10
				if i == top {
					prio = 100
				}
				y = strings.Replace(y, fmt.Sprintf("  - id: server%d\n    address: %s:%d\n", i, n.NodeIP(i), raftPort),
					fmt.Sprintf("  - id: server%d\n    address: %s:%d\n    priority: %d\n", i, n.NodeIP(i), raftPort, prio), 1)
			}
			return y
		}
	})
	keepLogs(t, c)
	c.WaitSingleHolder(electionBound, func(n int) bool { return n == top })
	t.Logf("the VIP settled on %s (priority 100)", c.Node(top).ID)

	c.Node(top).Health.Stop()
	away := c.WaitSingleHolder(electionBound, func(n int) bool { return n != top })
	t.Logf("%s's check failed: the VIP moved to %s", c.Node(top).ID, c.Node(away).ID)

	p, err := StartFastProber(c.Net.ClientNS, c.VIPAddr(), 10*time.Millisecond, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	c.Node(top).Health.Start()
	c.WaitSingleHolder(electionBound, func(n int) bool { return n == top })
	t.Logf("the VIP is back on %s %s after its check passed again", c.Node(top).ID, time.Since(back).Round(time.Millisecond))
	time.Sleep(300 * time.Millisecond)
	gap, _, ok := probeOutage(p.Stop(), back)
	if !ok {
		t.Fatalf("the client got no answer after the handover")
	}
	t.Logf("client-visible outage of the planned handover back: %s", gap.Round(time.Millisecond))
	if gap > time.Second {
		t.Errorf("the planned handover cost the client %s, more than an election would", gap)
	}
	waitMetricSample(t, c.Node(away), "keep_vip_supervisor_handovers_total", func(v float64) bool { return v >= 1 }, "reason=preempt", "result=ok")
}

func killPID(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }
