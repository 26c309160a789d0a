package e2e

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBalancerReloadOnSIGHUP: SIGHUP makes every supervisor re-read its
// config. A new load balancer starts on the VIP and the existing one goes
// on serving; a config that does not validate is refused on one log line
// while the running one stays; a change that needs a restart is logged as
// such and not applied.
func TestBalancerReloadOnSIGHUP(t *testing.T) {
	c := StartCluster(t, 3)
	c.WaitSingleHolder(30*time.Second, nil)
	c.WaitClientReachesBackend(15 * time.Second)

	const newPort = lbPort + 1
	newAddr := net.JoinHostPort(c.Net.VIP(), strconv.Itoa(newPort))
	// Node 2's backend alone behind the new load balancer, so its answer
	// shows which config served it.
	extra := fmt.Sprintf("  - name: only2\n    bindAddress: 0.0.0.0:%d\n    type: tcp\n    algorithm: leastconn\n    backends:\n      - name: b2\n        address: %s:%d\n",
		newPort, c.Net.NodeIP(2), backendPort)
	original := map[int]string{}
	rewrite := func(edit func(i int, yaml string) string) {
		t.Helper()
		for _, n := range c.Nodes {
			data, err := os.ReadFile(n.ConfigPath)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := original[n.Index]; !ok {
				original[n.Index] = string(data)
			}
			if err := os.WriteFile(n.ConfigPath, []byte(edit(n.Index, original[n.Index])), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	hup := func() {
		t.Helper()
		for _, n := range c.Nodes {
			if err := syscall.Kill(n.PID(), syscall.SIGHUP); err != nil {
				t.Fatalf("SIGHUP %s: %v", n.ID, err)
			}
		}
	}
	waitLog := func(what string, count int) {
		t.Helper()
		mustWaitFor(t, 10*time.Second, fmt.Sprintf("%q %d times in every log", what, count), func() (bool, string) {
			for _, n := range c.Nodes {
				data, _ := os.ReadFile(n.LogPath)
				if got := strings.Count(string(data), what); got < count {
					return false, fmt.Sprintf("%s: %d", n.ID, got)
				}
			}
			return true, ""
		})
	}

	// 1. A new load balancer, added by a reload.
	withNew := func(_ int, yaml string) string {
		return strings.Replace(yaml, "loadBalancers:\n", "loadBalancers:\n"+extra, 1)
	}
	rewrite(withNew)
	hup()
	waitLog("config reloaded", 1)
	mustWaitFor(t, 10*time.Second, "the new load balancer to answer", func() (bool, string) {
		r, err := c.Client.Ask(newAddr, time.Second)
		if err != nil {
			return false, err.Error()
		}
		return r == "server2", "answer " + r
	})
	if r, err := c.Client.Ask(c.VIPAddr(), 2*time.Second); err != nil {
		t.Errorf("the first load balancer after the reload: %v", err)
	} else {
		t.Logf("first load balancer still answers (%s)", r)
	}

	// 2. An invalid config: refused, the running one stays.
	rewrite(func(i int, yaml string) string {
		return strings.Replace(withNew(i, yaml), "algorithm: leastconn", "algorithm: fastest", 1)
	})
	hup()
	waitLog("reload refused", 1)
	for _, n := range c.Nodes {
		c.RequireSupervisorRunning(n.Index)
	}
	if r, err := c.Client.Ask(newAddr, 2*time.Second); err != nil || r != "server2" {
		t.Errorf("after a refused reload: %q, %v", r, err)
	}

	// 3. A change that needs a restart: logged, not applied; the rest is.
	rewrite(func(i int, yaml string) string {
		return strings.Replace(yaml, "ChecksInterval: 0.5", "ChecksInterval: 0.6", 1)
	})
	hup()
	waitLog("need a restart", 1)
	waitLog("config reloaded", 2)
	mustWaitFor(t, 10*time.Second, "the added load balancer to be removed again", func() (bool, string) {
		_, err := c.Client.Ask(newAddr, 500*time.Millisecond)
		return err != nil, "still answers"
	})
	if _, err := c.Client.Ask(c.VIPAddr(), 2*time.Second); err != nil {
		t.Errorf("the first load balancer after the last reload: %v", err)
	}
}
