package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCheckerPythonSwappedByConfig swaps in the Python example checker
// (plugins/example-checker-python, go-plugin's side written by hand) by
// plugins.checker: deleting the leader's file moves the VIP, and when the
// supervisors stop, each stops it by go-plugin's Shutdown, not SIGKILL.
func TestCheckerPythonSwappedByConfig(t *testing.T) {
	requireRoot(t)
	script := buildPythonChecker(t)
	c := StartCluster(t, 3)

	flags := restartWithFileChecker(c, script, nil)

	leader := c.WaitSingleHolder(electionBound, nil)
	c.WaitClientReachesBackend(reachBound)
	node := c.Node(leader)
	for i := range c.Nodes {
		// A script's process is its interpreter's.
		waitCheckerBinary(c, i+1, "python3")
	}
	failedAt := time.Now()
	if err := os.Remove(flags[leader-1]); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: VIP gone from eth0 %s after the file was removed", node.ID, waitDropsVIP(c, leader, failedAt).Round(time.Millisecond))
	newLeader := c.WaitSingleHolder(electionBound, func(i int) bool { return i != leader })
	t.Logf("VIP moved %s -> %s %s after the file was removed", node.ID, c.Node(newLeader).ID, time.Since(failedAt).Round(time.Millisecond))
	c.WaitClientReachesBackend(reachBound)
	waitNoElector(c, leader)
	c.RequireSupervisorRunning(leader)

	for _, n := range c.Nodes {
		n.Stop()
		exits := pluginStopExits(t, n, script)
		if len(exits) == 0 {
			t.Errorf("%s: no \"plugin stopped\" line for %s in %s", n.ID, script, n.LogPath)
		}
		for _, e := range exits {
			if e != "exit status 0" {
				t.Errorf("%s: the Python checker stopped with %q, want exit status 0 (Shutdown served, no SIGKILL)", n.ID, e)
			}
		}
		t.Logf("%s: checker stops: %v", n.ID, exits)
	}
}

// pluginStopExits reads the "exit" of every "plugin stopped" line, in n's
// log, of a plugin started from path.
func pluginStopExits(t *testing.T, n *Node, path string) []string {
	t.Helper()
	raw, err := os.ReadFile(n.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	started := map[int]bool{}
	for _, line := range strings.Split(string(raw), "\n") {
		var m struct {
			Message, Path, Exit string
			PID                 int
		}
		switch {
		case json.Unmarshal([]byte(line), &m) != nil:
		case m.Message == "plugin started" && m.Path == path:
			started[m.PID] = true
		case m.Message == "plugin stopped" && started[m.PID]:
			out = append(out, m.Exit)
		}
	}
	return out
}

// buildPythonChecker runs plugins/example-checker-python/build.sh into a
// temporary directory and returns the script; it skips without what the
// checker needs (make deps installs it).
func buildPythonChecker(t *testing.T) string {
	t.Helper()
	if err := exec.Command("/usr/bin/python3", "-c", "import grpc, google.protobuf, cryptography").Run(); err != nil {
		t.Skip("python3-grpcio, python3-protobuf or python3-cryptography missing (make deps)")
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, filepath.Join(root, "plugins", "example-checker-python", "build.sh"), dir).CombinedOutput(); err != nil {
		t.Fatalf("build.sh: %v\n%s", err, out)
	}
	// The supervisor needs an absolute path it can stat from any namespace.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "checker.py")
}
