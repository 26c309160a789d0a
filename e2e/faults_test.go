package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// Faults a member cannot fix by itself: a VIP it cannot hold, an interface
// renamed under it, a plugin that cannot start. Each makes it unhealthy
// under a named reason, with the VIP on one other member only.

// unhealthyBecause is a status condition: unhealthy, out of the election,
// with a reason containing every fragment.
func unhealthyBecause(fragments ...string) func(st opsStatus) (bool, string) {
	return func(st opsStatus) (bool, string) {
		why := strings.Join(st.Unhealthy, "; ")
		for _, f := range fragments {
			if !strings.Contains(why, f) {
				return false, fmt.Sprintf("healthy %v, in election %v, unhealthy %q", st.Healthy, st.InElection, why)
			}
		}
		return st.Ready && !st.Healthy && !st.InElection && !st.HoldsVIP, fmt.Sprintf("%+v", st)
	}
}

func is(want float64) func(float64) bool { return func(v float64) bool { return v == want } }

// logLines decodes a node's JSON log, failing on a line that is not JSON.
func logLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Errorf("%s:%d is not a JSON log line: %q", path, n, sc.Text())
			continue
		}
		out = append(out, m)
	}
	return out
}

// findLog is the first line with message msg whose fields include want.
func findLog(lines []map[string]any, msg string, want map[string]string) map[string]any {
	for _, l := range lines {
		if l["message"] != msg {
			continue
		}
		ok := true
		for k, v := range want {
			if s, _ := l[k].(string); !strings.Contains(s, v) {
				ok = false
			}
		}
		if ok {
			return l
		}
	}
	return nil
}

// TestVIPCannotBeHeld: node 1 runs without CAP_NET_ADMIN, so its announcer
// cannot add the VIP, and it is the preferred holder (raft.preempt), so
// leadership keeps coming to it. Each time, within the bound, it hands
// leadership over and leaves the election, saying why in status, metrics
// and the journal; its probe then keeps it out rather than let leadership
// come back, so the holder does not change; the VIP is never on two
// members (the sampler).
func TestVIPCannotBeHeld(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv (util-linux) not found")
	}
	c := StartClusterWith(t, 3, func(cfg *NodeConfig) {
		cfg.Raft = "  heartbeatTimeout: 500ms\n  electionTimeout: 500ms\n  leaderLeaseTimeout: 250ms\n  preempt: true\n  preemptDelay: 1s\n"
		cfg.Render = func(c NodeConfig, n *Net) string {
			c.Render = nil
			return strings.Replace(c.YAML(n), "  - id: server1\n", "  - id: server1\n    priority: 100\n", 1)
		}
		if cfg.Index == 1 {
			// Root without CAP_NET_ADMIN, as under a unit or in a
			// container that does not grant it.
			cfg.Inner = []string{"setpriv", "--inh-caps", "-net_admin", "--bounding-set", "-net_admin"}
		}
	})
	start := time.Now()
	st := c.waitStatus(1, "unhealthy: cannot hold the VIP", unhealthyBecause("cannot hold the VIP", "operation not permitted"))
	t.Logf("server1 out of the election %s after start: %q", time.Since(start).Round(time.Millisecond), st.Unhealthy)
	holder := c.WaitSingleHolder(electionBound, func(n int) bool { return n != 1 })
	waitMetricSample(t, c.Node(1), "keep_vip_supervisor_unhealthy", is(1), "reason=vip")
	waitMetricSample(t, c.Node(1), "keep_vip_supervisor_healthy", is(0))

	lines := logLines(t, c.Node(1).LogPath)
	if l := findLog(lines, "cannot hold the VIP: releasing it and leaving the election",
		map[string]string{"vip": c.Net.VIP(), "plugin": "announcer", "error": "operation not permitted", "member": "server1"}); l == nil {
		t.Errorf("server1's log has no \"cannot hold the VIP\" line with vip, plugin, member and the error")
	} else {
		t.Logf("log: %v", l)
	}

	// Past vipRetryAfter (10s) the probe fails too: server1 stays out and
	// the VIP stays where it is.
	deadline := time.Now().Add(13 * time.Second)
	for time.Now().Before(deadline) {
		hs, err := c.VIPHolders()
		if err == nil && !slices.Equal(hs, []int{holder}) {
			t.Fatalf("VIP holders %v, want [%d] throughout: server1 came back for the VIP", hs, holder)
		}
		time.Sleep(200 * time.Millisecond)
	}
	st, err := c.Node(1).Status()
	if ok, why := unhealthyBecause("cannot hold the VIP", "operation not permitted")(st); err != nil || !ok {
		t.Errorf("server1 13s later: %v %s", err, why)
	}
}

// TestInterfaceRenamed: the holder's interface is renamed under it and
// brought up again under the new name: it is unhealthy (interface gone),
// the VIP moves, and none stays on the renamed interface, which still
// carries traffic; renamed back, the member rejoins the election.
func TestInterfaceRenamed(t *testing.T) {
	c := StartCluster(t, 3)
	h := c.WaitSingleHolder(electionBound, nil)
	node := c.Node(h)
	const renamed = "kvren0"
	ip := func(args ...string) {
		t.Helper()
		if out, err := runIP(append([]string{"-n", node.NS}, args...)...); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	ip("link", "set", nodeIfName, "down")
	ip("link", "set", nodeIfName, "name", renamed)
	ip("link", "set", renamed, "up")
	t.Cleanup(func() {
		_, _ = runIP("-n", node.NS, "link", "set", renamed, "down")
		_, _ = runIP("-n", node.NS, "link", "set", renamed, "name", nodeIfName)
		_, _ = runIP("-n", node.NS, "link", "set", nodeIfName, "up")
	})
	c.waitStatus(h, "unhealthy: interface gone", unhealthyBecause("interface "+nodeIfName+" unusable"))
	// eth0 is gone from h's namespace: ask the others only.
	next := 0
	mustWaitFor(t, electionBound, "one other member holding the VIP", func() (bool, string) {
		var hs []int
		for i := range c.Nodes {
			if i+1 == h {
				continue
			}
			if held, err := c.NodeHoldsVIP(i + 1); err != nil {
				return false, err.Error()
			} else if held {
				hs = append(hs, i+1)
			}
		}
		if len(hs) == 1 {
			next = hs[0]
		}
		return len(hs) == 1, fmt.Sprintf("holders among the others: %v", hs)
	})
	mustWaitFor(t, processBound, "no VIP on the renamed "+renamed, func() (bool, string) {
		out, err := runIP("-n", node.NS, "-o", "addr", "show", "dev", renamed)
		return err == nil && !strings.Contains(out, c.Net.VIP()+"/"), out
	})
	t.Logf("VIP moved from %s to %s; none left on %s", node.ID, c.Node(next).ID, renamed)

	ip("link", "set", renamed, "down")
	ip("link", "set", renamed, "name", nodeIfName)
	ip("link", "set", nodeIfName, "up")
	c.waitStatus(h, "healthy again, in the election", func(st opsStatus) (bool, string) {
		return st.Healthy && st.InElection && len(st.Unhealthy) == 0, fmt.Sprintf("%+v", st)
	})
	c.WaitSingleHolder(electionBound, nil)
}

// TestPluginCannotStart: an elector whose Raft store is corrupt cannot
// start: the member is ready but unhealthy, saying why (status, metrics,
// journal); once the store is gone the next start works and it leads.
func TestPluginCannotStart(t *testing.T) {
	c := StartClusterWith(t, 1, func(cfg *NodeConfig) {
		cfg.Render = func(c NodeConfig, n *Net) string {
			if err := os.WriteFile(filepath.Join(c.DataDir, "raft.db"), []byte(strings.Repeat("not a bolt database\n", 512)), 0o600); err != nil {
				t.Fatal(err)
			}
			c.Render = nil
			return c.YAML(n)
		}
	})
	node := c.Node(1)
	st := c.waitStatus(1, "elector cannot start", func(st opsStatus) (bool, string) {
		why := strings.Join(st.Unhealthy, "; ")
		return st.Ready && !st.Healthy && strings.Contains(why, "elector cannot start") && strings.Contains(why, "invalid database"),
			fmt.Sprintf("%+v", st)
	})
	t.Logf("status: unhealthy %q", st.Unhealthy)
	for _, p := range st.Plugins {
		if p.Name == "elector" && (p.Up || !strings.Contains(p.Error, "invalid database")) {
			t.Errorf("status plugin elector: %+v, want down with the error", p)
		}
	}
	waitMetricSample(t, node, "keep_vip_supervisor_unhealthy", is(1), "reason=elector_start")
	if l := findLog(logLines(t, node.LogPath), "plugin cannot start: this member is unhealthy until it does",
		map[string]string{"plugin": "elector", "error": "invalid database", "member": node.ID}); l == nil {
		t.Errorf("no \"plugin cannot start\" log line naming the elector and the error")
	}
	if out, err := node.supervisorCLI("status"); err != nil || !strings.Contains(out, "elector cannot start") {
		t.Errorf("status: %v\n%s", err, out)
	}

	// A one-member cluster may start afresh; see README "Health" for a
	// real one.
	if err := os.Remove(filepath.Join(filepath.Dir(node.ConfigPath), "data", "raft.db")); err != nil {
		t.Fatal(err)
	}
	c.waitStatus(1, "leader after the store is gone", func(st opsStatus) (bool, string) {
		return st.Healthy && st.Role == "leader" && st.HoldsVIP && len(st.Unhealthy) == 0, fmt.Sprintf("%+v", st)
	})
	waitMetricSample(t, node, "keep_vip_supervisor_unhealthy", is(0), "reason=elector_start")
}

// roleWords are the only values ROLE (and FROM_ROLE) take.
var roleWords = []string{"follower", "candidate", "leader", "shutdown", "unknown", "out"}

var vipLine = regexp.MustCompile(`(?i)acquir|releas`)

// checkLogVocabulary reads every line of a node's JSON log (the journal's
// fields are these keys in upper case) and fails on one without member and
// cluster, with a role spelt otherwise, with a leader id under another key
// (raft's leader-id) or a leader that is no id, or about acquiring
// or releasing the VIP without vip and plugin.
func checkLogVocabulary(t *testing.T, path, member, cluster string) {
	t.Helper()
	lines := logLines(t, path)
	bad := 0
	for i, l := range lines {
		var why []string
		if l["member"] != member || l["cluster"] != cluster {
			why = append(why, "member/cluster")
		}
		for _, k := range []string{"role", "from_role"} {
			if v, ok := l[k]; ok && !slices.Contains(roleWords, fmt.Sprint(v)) {
				why = append(why, k+" "+fmt.Sprint(v))
			}
		}
		for k, v := range l {
			// The journal's key: upper case, dashes as underscores.
			switch jk := strings.ToUpper(strings.ReplaceAll(k, "-", "_")); {
			case jk == "LEADER_ID":
				why = append(why, k+" instead of leader")
			case jk == "LEADER":
				if _, ok := v.(string); !ok {
					why = append(why, fmt.Sprintf("leader %v is not an id", v))
				}
			}
		}
		if msg, _ := l["message"].(string); vipLine.MatchString(msg) && (l["vip"] == nil || l["plugin"] == nil) {
			why = append(why, "VIP line without vip and plugin")
		}
		if len(why) > 0 {
			bad++
			if bad <= 20 {
				t.Errorf("%s line %d: %s: %v", filepath.Base(path), i+1, strings.Join(why, ", "), l)
			}
		}
	}
	t.Logf("%s: %d lines, %d off the vocabulary", path, len(lines), bad)
	if len(lines) < 20 {
		t.Errorf("only %d log lines: not a full run", len(lines))
	}
}

// TestNoChecksReloadAndLogVocabulary: a member with no checks is healthy
// and takes the VIP; `reload` returns 0 once applied and 1 with the reason
// when refused; and every line of the whole run, `cleanup` included,
// speaks one vocabulary.
func TestNoChecksReloadAndLogVocabulary(t *testing.T) {
	c := StartClusterWith(t, 1, func(cfg *NodeConfig) {
		cfg.Render = func(c NodeConfig, n *Net) string {
			c.Render = nil
			y := c.YAML(n)
			a, b := strings.Index(y, "checks:\n"), strings.Index(y, "members:\n")
			return y[:a] + y[b:]
		}
	})
	node := c.Node(1)
	c.WaitSingleHolder(electionBound, nil)
	st := c.waitStatus(1, "healthy leader with no checks", func(st opsStatus) (bool, string) {
		return st.Healthy && st.Role == "leader" && st.HoldsVIP && len(st.Checks) == 0, fmt.Sprintf("%+v", st)
	})
	t.Logf("no checks: %s leads, healthy %v", st.Member, st.Healthy)

	good, err := os.ReadFile(node.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	withCheck := strings.Replace(string(good), "members:\n", fmt.Sprintf("checks:\n  - name: added\n    protocol: tcp\n    address: %s\n    timeout: 0.2\nmembers:\n", healthAddr), 1)
	if err := os.WriteFile(node.ConfigPath, []byte(withCheck), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := node.supervisorCLI("reload")
	if err != nil || !strings.Contains(out, "config reloaded") {
		t.Fatalf("reload of a good config: %v: %s", err, out)
	}
	// Applied when reload returned: the checker has the new check.
	c.waitStatus(1, "the reloaded check", func(st opsStatus) (bool, string) {
		return len(st.Checks) == 1 && st.Checks[0].Name == "added", fmt.Sprintf("%+v", st.Checks)
	})
	if err := os.WriteFile(node.ConfigPath, []byte(withCheck+"bogusKey: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A config that does not load names no socket: the supervisor's is
	// given, and the supervisor says what is wrong.
	out, err = node.supervisorCLI("reload", "--socket", node.AdminSocket)
	if err == nil || !strings.Contains(err.Error(), "reload refused") || !strings.Contains(err.Error(), "bogusKey") || !strings.Contains(err.Error(), "exit status 1") {
		t.Errorf("reload of a bad config: %v, want exit status 1 naming bogusKey; stdout %q", err, out)
	} else {
		t.Logf("refused: %v", err)
	}
	if err := os.WriteFile(node.ConfigPath, good, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, on := range []string{"on", "off"} {
		if _, err := node.supervisorCLI("maintenance", on); err != nil {
			t.Fatal(err)
		}
	}
	c.WaitSingleHolder(electionBound, nil)
	node.Stop()

	// ExecStopPost's cleanup logs to the same place.
	f, err := os.OpenFile(node.LogPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", node.NS, c.Bins.Supervisor(), "cleanup", "-c", node.ConfigPath)
	cmd.Stdout, cmd.Stderr = f, f
	err = cmd.Run()
	f.Close()
	if err != nil {
		t.Fatalf("cleanup: %v", err)
	}
	lines := logLines(t, node.LogPath)
	for _, msg := range []string{"VIP acquired", "VIP released", "acquired", "released", "leadership", "leadership changed", "VIPs removed", "reloading the config", "reload refused: the config is not valid; still running the previous one", "starting", "stopped by signal"} {
		if findLog(lines, msg, nil) == nil {
			t.Errorf("no %q line in the run", msg)
		}
	}
	checkLogVocabulary(t, node.LogPath, node.ID, "e2e-"+c.Net.Suffix)
}

// TestHeldVIPCannotBeAddedBack: IPv6 turned off on the holder's interface
// takes its IPv6 VIP away and refuses it back while the link stays up. The
// holder finds the VIP missing, cannot add it back within the bound, and
// hands over, saying why; with IPv6 on again its probe lets it rejoin.
func TestHeldVIPCannotBeAddedBack(t *testing.T) {
	c := startAnnounceCluster(t, true, func(n *Net) string { return fmt.Sprintf("vips:\n  - %q\n", vip6(n)) })
	v6 := netip.MustParseAddr(vip6(c.Net))
	h := c.WaitSingleHolder(electionBound, nil)
	node := c.Node(h)
	mustWaitFor(t, processBound, "the IPv6 VIP on the holder", func() (bool, string) {
		held, err := holdsAddr(node.NS, v6)
		return err == nil && held, fmt.Sprintf("held %v, %v", held, err)
	})
	sysctl := func(v string) {
		t.Helper()
		if out, err := c.Net.Exec(node.NS, "sysctl", "-qw", "net.ipv6.conf."+nodeIfName+".disable_ipv6="+v); err != nil {
			t.Fatalf("sysctl: %v: %s", err, out)
		}
	}
	off := time.Now()
	sysctl("1")
	t.Cleanup(func() { _, _ = c.Net.Exec(node.NS, "sysctl", "-qw", "net.ipv6.conf."+nodeIfName+".disable_ipv6=0") })
	st := c.waitStatus(h, "unhealthy: IPv6 VIP missing", unhealthyBecause("cannot hold the VIP", "VIP "+v6.String()+" missing from "+nodeIfName))
	t.Logf("%s out %s after IPv6 went off: %q", node.ID, time.Since(off).Round(time.Millisecond), st.Unhealthy)
	next := c.WaitSingleHolder(electionBound, func(n int) bool { return n != h })
	t.Logf("the VIP moved to %s", c.Node(next).ID)
	if l := findLog(logLines(t, node.LogPath), "cannot hold the VIP: releasing it and leaving the election",
		map[string]string{"vip": c.Net.VIP(), "plugin": "announcer", "error": v6.String()}); l == nil {
		t.Errorf("no \"cannot hold the VIP\" line naming the IPv6 VIP")
	}

	sysctl("0")
	on := time.Now()
	c.waitStatus(h, "back in the election", func(st opsStatus) (bool, string) {
		return st.Healthy && st.InElection && len(st.Unhealthy) == 0, fmt.Sprintf("%+v", st)
	})
	t.Logf("%s rejoined %s after IPv6 came back (probe every 10s)", node.ID, time.Since(on).Round(time.Millisecond))
	c.WaitSingleHolder(electionBound, func(n int) bool { return n == next })
}

// TestBalancerCannotStart: a load balancer whose port is taken makes the
// balancer's Configure fail: the member is ready but unhealthy, out of the
// election, saying why; a reload with a free port is picked up by the
// balancer's next start, and the member leads.
func TestBalancerCannotStart(t *testing.T) {
	c := StartClusterWith(t, 1, func(cfg *NodeConfig) {
		cfg.Render = func(c NodeConfig, n *Net) string {
			c.Render = nil
			// The health endpoint's port, which its server holds.
			return strings.Replace(c.YAML(n), fmt.Sprintf("bindAddress: 0.0.0.0:%d", lbPort), "bindAddress: "+healthAddr, 1)
		}
	})
	node := c.Node(1)
	st := c.waitStatus(1, "balancer cannot start", unhealthyBecause("balancer cannot start", "address already in use"))
	t.Logf("status: unhealthy %q", st.Unhealthy)
	waitMetricSample(t, node, "keep_vip_supervisor_unhealthy", is(1), "reason=balancer_start")
	if held, err := c.NodeHoldsVIP(1); err != nil || held {
		t.Errorf("VIP on the member whose balancer cannot start (%v)", err)
	}

	raw, err := os.ReadFile(node.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	fixed := strings.Replace(string(raw), "bindAddress: "+healthAddr, fmt.Sprintf("bindAddress: 0.0.0.0:%d", lbPort), 1)
	if err := os.WriteFile(node.ConfigPath, []byte(fixed), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := node.supervisorCLI("reload"); err != nil {
		t.Fatalf("reload: %v: %s", err, out)
	}
	c.waitStatus(1, "leader once the balancer starts", func(st opsStatus) (bool, string) {
		return st.Healthy && st.Role == "leader" && st.HoldsVIP && len(st.Unhealthy) == 0, fmt.Sprintf("%+v", st)
	})
	c.WaitClientReachesBackend(reachBound)
}
