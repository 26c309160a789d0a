package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fileCheckerName is what the example third-party checker is built as: not
// a keep-vip-* name, as a user's own checker would not be.
const fileCheckerName = "my-file-checker"

// TestCheckerSwappedByConfig swaps the built-in checker for the example
// third-party one (plugins/example-checker, built on the SDK alone) by the
// config key plugins.checker, and shows that a failure it reports moves the
// VIP: each node's check passes while a file of its own exists, and
// deleting the leader's file is all it takes. A second check, whose file
// never exists, is not required and must not keep anyone unhealthy.
func TestCheckerSwappedByConfig(t *testing.T) {
	requireRoot(t)
	bin := buildExampleChecker(t)
	c := StartCluster(t, 3)

	flags := restartWithFileChecker(c, bin, func(dir string) string {
		return fmt.Sprintf(`  - name: optional
    protocol: file
    address: %s
    timeout: 0.2
    required: false
`, filepath.Join(dir, "never-there"))
	})

	leader := c.WaitSingleHolder(electionBound, nil)
	c.WaitClientReachesBackend(reachBound)
	node := c.Node(leader)
	for i := range c.Nodes {
		waitCheckerBinary(c, i+1, fileCheckerName)
	}
	// The third-party checker's own metric reaches /metrics through the
	// supervisor, with the required check up and the optional one down.
	waitMetric(c, leader, `filecheck_check_up{check="in_service"}`, 1)
	waitMetric(c, leader, `filecheck_check_up{check="optional"}`, 0)
	t.Logf("%s: %s runs the checks; in_service up, optional (not required) down, still leader", node.ID, fileCheckerName)

	prober := c.Client.StartProber(c.VIPAddr())
	defer prober.Stop()
	time.Sleep(300 * time.Millisecond)
	failedAt := time.Now()
	if err := os.Remove(flags[leader-1]); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: removed %s", node.ID, flags[leader-1])
	t.Logf("%s: VIP gone from eth0 %s after the file was removed", node.ID, waitDropsVIP(c, leader, failedAt).Round(time.Millisecond))

	newLeader := c.WaitSingleHolder(electionBound, func(i int) bool { return i != leader })
	t.Logf("VIP moved %s -> %s, held there steadily (1s) %s after the file was removed",
		node.ID, c.Node(newLeader).ID, time.Since(failedAt).Round(time.Millisecond))
	c.WaitClientReachesBackend(reachBound)
	time.Sleep(500 * time.Millisecond)
	report := prober.Stop()
	t.Logf("client-visible outage on a failing third-party check: %s", report.LongestGap.Round(time.Millisecond))
	waitMetric(c, leader, `filecheck_check_up{check="in_service"}`, 0)
	waitNoElector(c, leader)

	healedAt := time.Now()
	if err := os.WriteFile(flags[leader-1], nil, 0o644); err != nil {
		t.Fatal(err)
	}
	took := mustWaitFor(t, processBound, node.ID+" to start its elector again", func() (bool, string) {
		pid, err := node.PluginPID("keep-vip-elector")
		if err != nil {
			return false, err.Error()
		}
		return pid > 0, ""
	})
	t.Logf("%s: file back, keep-vip-elector back %s later", node.ID, took.Round(time.Millisecond))
	if hold := c.WaitSingleHolder(electionBound, nil); hold != newLeader {
		t.Errorf("VIP on %s after %s rejoined, want it to stay on %s", c.Node(hold).ID, node.ID, c.Node(newLeader).ID)
	}
	c.RequireSupervisorRunning(leader)
	t.Logf("%s is a follower again %s after healing", node.ID, time.Since(healedAt).Round(time.Millisecond))
}

// TestCheckerBuiltinExecWithFall runs the built-in checker's exec type in
// the real plugin: the check passes while a file exists (test -e, no
// shell), with fall 3 at a 100ms interval, so the VIP moves only after
// three failed runs in a row, and a not-required http check that always
// fails (the health endpoint speaks no HTTP) changes nothing.
func TestCheckerBuiltinExecWithFall(t *testing.T) {
	requireRoot(t)
	testBin, err := exec.LookPath("test")
	if err != nil {
		t.Skip("no test command")
	}
	c := StartCluster(t, 3)

	flags := make([]string, len(c.Nodes))
	restartWithChecks(c, func(n *Node) string {
		flags[n.Index-1] = filepath.Join(filepath.Dir(n.ConfigPath), "ready")
		if err := os.WriteFile(flags[n.Index-1], nil, 0o644); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf(`checks:
  - name: ready
    protocol: exec
    command: %s
    args: [-e, %s]
    interval: 100ms
    timeout: 50ms
    fall: 3
  - name: web
    protocol: http
    address: %s
    path: /health
    timeout: 0.2
    required: false
`, testBin, flags[n.Index-1], healthAddr)
	})

	leader := c.WaitSingleHolder(electionBound, nil)
	c.WaitClientReachesBackend(reachBound)
	node := c.Node(leader)
	waitMetric(c, leader, `keep_vip_checker_check_up{check="ready"}`, 1)
	waitMetric(c, leader, `keep_vip_checker_check_up{check="web"}`, 0)
	waitMetric(c, leader, `keep_vip_checker_check_required{check="web"}`, 0)

	failedAt := time.Now()
	if err := os.Remove(flags[leader-1]); err != nil {
		t.Fatal(err)
	}
	dropped := waitDropsVIP(c, leader, failedAt)
	t.Logf("%s: VIP gone from eth0 %s after the file was removed (fall 3 at 100ms)", node.ID, dropped.Round(time.Millisecond))
	// Three failed runs 100ms apart: the first may come at once, the third
	// no sooner than 200ms later. One run (fall 1) would drop it sooner.
	if dropped < 190*time.Millisecond {
		t.Errorf("VIP dropped %s after the file went, want at least the 200ms of three failed runs", dropped)
	}
	newLeader := c.WaitSingleHolder(electionBound, func(i int) bool { return i != leader })
	t.Logf("VIP moved %s -> %s", node.ID, c.Node(newLeader).ID)
	// Failures counted while damping: at least the three that turned it.
	waitMetricAtLeast(c, leader, `keep_vip_checker_check_failures_total{check="ready"}`, 3)
	waitNoElector(c, leader)
	c.RequireSupervisorRunning(leader)
}

// buildExampleChecker builds plugins/example-checker as fileCheckerName
// into a temporary directory.
func buildExampleChecker(t *testing.T) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), fileCheckerName)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// A module of its own, built against the SDK module alone.
	cmd := exec.CommandContext(ctx, goCommand(), "build", "-o", bin, ".")
	cmd.Dir = filepath.Join(root, "plugins", "example-checker")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build in plugins/example-checker: %v\n%s", err, tail(string(out), 4000))
	}
	// The supervisor needs an absolute path it can stat from any namespace.
	if err := os.Chmod(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// restartWithFileChecker restarts every node with the third-party checker
// bin and a required file check, in_service, that passes while the file
// returned for that node exists (created here); more(dir) adds checks,
// given the node's directory.
func restartWithFileChecker(c *Cluster, bin string, more func(dir string) string) []string {
	c.t.Helper()
	flags := make([]string, len(c.Nodes))
	restartWithChecks(c, func(n *Node) string {
		dir := filepath.Dir(n.ConfigPath)
		flags[n.Index-1] = filepath.Join(dir, "in-service")
		if err := os.WriteFile(flags[n.Index-1], nil, 0o644); err != nil {
			c.t.Fatal(err)
		}
		extra := ""
		if more != nil {
			extra = more(dir)
		}
		return fmt.Sprintf(`checks:
  - name: in_service
    protocol: file
    address: %s
    timeout: 0.2
%splugins:
  checker: %s
`, flags[n.Index-1], extra, bin)
	})
	return flags
}

// restartWithChecks stops every node's supervisor, gives its config the
// checks (and any other top-level keys) that section(node) returns in place
// of the harness's own checks, and starts the supervisors again. The
// harness's configs are rewritten rather than extended so that its files
// stay as they are.
func restartWithChecks(c *Cluster, section func(*Node) string) {
	c.t.Helper()
	for _, n := range c.Nodes {
		n.Stop()
	}
	for _, n := range c.Nodes {
		raw, err := os.ReadFile(n.ConfigPath)
		if err != nil {
			c.t.Fatal(err)
		}
		extra := section(n)
		// Members sharing a host need an admin socket each; a harness
		// config that does not say so gets one in the node's directory.
		if !strings.Contains("\n"+strings.ToLower(string(raw)), "\nadminsocket:") {
			extra += fmt.Sprintf("adminSocket: %s\n", filepath.Join(filepath.Dir(n.ConfigPath), "admin.sock"))
		}
		yaml, err := replaceTopLevelKey(string(raw), "checks", extra)
		if err != nil {
			c.t.Fatalf("%s: %v", n.ConfigPath, err)
		}
		if err := os.WriteFile(n.ConfigPath, []byte(yaml), 0o644); err != nil {
			c.t.Fatal(err)
		}
	}
	for _, n := range c.Nodes {
		n.startSupervisor()
	}
	c.t.Logf("restarted %d supervisors with new checks; node 1's config:\n%s", len(c.Nodes), mustRead(c.t, c.Node(1).ConfigPath))
}

// replaceTopLevelKey removes top-level key (its line and the indented lines
// under it) from a YAML document and appends section. It refuses a section
// that would set a top-level key the document already has.
func replaceTopLevelKey(doc, key, section string) (string, error) {
	var out []string
	in := false
	found := false
	for _, line := range strings.Split(strings.TrimRight(doc, "\n"), "\n") {
		top := line != "" && line[0] != ' ' && line[0] != '-' && line[0] != '#'
		if top {
			in = strings.HasPrefix(line, key+":")
			found = found || in
		}
		if !in {
			out = append(out, line)
		}
	}
	if !found {
		return "", fmt.Errorf("no top-level %q in the config", key)
	}
	kept := strings.Join(out, "\n") + "\n"
	for _, line := range strings.Split(section, "\n") {
		if line != "" && line[0] != ' ' && line[0] != '-' {
			k, _, _ := strings.Cut(line, ":")
			if k != key && strings.Contains("\n"+kept, "\n"+k+":") {
				return "", fmt.Errorf("the config already has %q; extend the rewrite", k)
			}
		}
	}
	return kept + section, nil
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitCheckerBinary waits until node i's supervisor runs its checker from
// binary name, and not the built-in keep-vip-checker.
func waitCheckerBinary(c *Cluster, i int, name string) {
	c.t.Helper()
	node := c.Node(i)
	mustWaitFor(c.t, processBound, node.ID+" to run "+name, func() (bool, string) {
		kids, err := node.PluginChildren()
		if err != nil {
			return false, err.Error()
		}
		if len(kids["keep-vip-checker"]) > 0 {
			return false, "the built-in keep-vip-checker runs"
		}
		return len(kids[name]) == 1, fmt.Sprintf("%s children: %s", name, describeProcesses(kids[name]))
	})
}

// waitDropsVIP waits until node i no longer holds the VIP and returns the
// time since since.
func waitDropsVIP(c *Cluster, i int, since time.Time) time.Duration {
	c.t.Helper()
	node := c.Node(i)
	var gone time.Duration
	mustWaitFor(c.t, electionBound, node.ID+" to drop the VIP", func() (bool, string) {
		held, err := c.NodeHoldsVIP(i)
		if err != nil {
			return false, err.Error()
		}
		gone = time.Since(since)
		return !held, "VIP still on " + node.ID
	})
	return gone
}

// waitNoElector waits until node i has left the election (no elector
// child) while its supervisor keeps running.
func waitNoElector(c *Cluster, i int) {
	c.t.Helper()
	node := c.Node(i)
	mustWaitFor(c.t, processBound, node.ID+" to stop its elector", func() (bool, string) {
		if !node.SupervisorRunning() {
			return false, "supervisor is gone"
		}
		kids, err := node.PluginChildren()
		if err != nil {
			return false, err.Error()
		}
		return len(kids["keep-vip-elector"]) == 0, "elector still running: " + describeProcesses(kids["keep-vip-elector"])
	})
}

// sample finds one series, written as name{labels} exactly as exposed, in
// a Prometheus text exposition.
func sample(body, series string) (float64, bool) {
	for _, line := range strings.Split(body, "\n") {
		rest, ok := strings.CutPrefix(line, series+" ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
		return v, err == nil
	}
	return 0, false
}

func waitMetric(c *Cluster, i int, series string, want float64) {
	c.t.Helper()
	waitMetricCond(c, i, series, fmt.Sprintf("== %g", want), func(v float64) bool { return v == want })
}

func waitMetricAtLeast(c *Cluster, i int, series string, want float64) {
	c.t.Helper()
	waitMetricCond(c, i, series, fmt.Sprintf(">= %g", want), func(v float64) bool { return v >= want })
}

func waitMetricCond(c *Cluster, i int, series, what string, ok func(float64) bool) {
	c.t.Helper()
	node := c.Node(i)
	mustWaitFor(c.t, metricsBound, fmt.Sprintf("%s %s %s", node.ID, series, what), func() (bool, string) {
		body, err := node.Metrics()
		if err != nil {
			return false, err.Error()
		}
		v, found := sample(body, series)
		if !found {
			var near []string
			name, _, _ := strings.Cut(series, "{")
			for _, line := range strings.Split(body, "\n") {
				if strings.HasPrefix(line, name) {
					near = append(near, line)
				}
			}
			return false, fmt.Sprintf("%s not in /metrics; %s series: %v", series, name, slices.Clip(near))
		}
		return ok(v), fmt.Sprintf("%s = %g", series, v)
	})
}
