package e2e

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// watchHTTPAddr is where the watch test's nodes serve their checked HTTP
// service.
const watchHTTPAddr = "127.0.0.1:9101"

// TestCheckWatchDeathAndHang: with ChecksInterval 2s and an http check of a
// local service, killing the holder's service moves the VIP through the
// checker's death watch (its wake-up counter says so), and a service that
// hangs (SIGSTOP: its sockets stay open, the watch sees nothing) is still
// found by the regular round, within interval + timeout.
func TestCheckWatchDeathAndHang(t *testing.T) {
	const interval, timeout = 2 * time.Second, 200 * time.Millisecond
	c := StartClusterWith(t, 3, func(cfg *NodeConfig) {
		cfg.Render = func(nc NodeConfig, n *Net) string {
			nc.Render = nil
			y := nc.YAML(n)
			y = strings.Replace(y, "ChecksInterval: 0.5\n", "ChecksInterval: 2\n", 1)
			return strings.Replace(y, "    protocol: tcp\n    address: "+healthAddr+"\n", "    protocol: http\n    address: "+watchHTTPAddr+"\n", 1)
		}
	})
	services := map[int]*ServerProcess{}
	for _, n := range c.Nodes {
		services[n.Index] = NewHTTPServerProcess(t, n.NS, watchHTTPAddr)
	}
	holder := c.WaitSingleHolder(electionBound, nil)
	wakeups := `keep_vip_checker_watch_wakeups_total`

	// Death: the watch runs the check at once.
	killed := time.Now()
	services[holder].Stop()
	next, at := waitNewHolder(t, c, c.vip, holder, electionBound)
	t.Logf("service of %s killed: VIP on %s %s later (interval %s)", c.Node(holder).ID, c.Node(next).ID, at.Sub(killed).Round(time.Millisecond), interval)
	waitMetricSample(t, c.Node(holder), wakeups, func(v float64) bool { return v >= 1 }, "check=health")

	services[holder].Start()
	c.waitStatus(holder, "healthy again", func(st opsStatus) (bool, string) { return st.Healthy, "unhealthy" })

	// Hang: only the round finds it.
	body, err := c.Node(next).Metrics()
	if err != nil {
		t.Fatal(err)
	}
	before, _ := metricSample(body, wakeups, "check=health")
	stopped := time.Now()
	services[next].Signal(syscall.SIGSTOP)
	t.Cleanup(func() { services[next].Signal(syscall.SIGCONT) })
	third, at := waitNewHolder(t, c, c.vip, next, interval+timeout+electionBound)
	took := at.Sub(stopped)
	t.Logf("service of %s stopped (SIGSTOP): VIP on %s %s later (interval %s + timeout %s)", c.Node(next).ID, c.Node(third).ID, took.Round(time.Millisecond), interval, timeout)
	if took > interval+timeout+2*time.Second {
		t.Errorf("a hung service was found after %s, want within interval + timeout (%s) and a handover", took, interval+timeout)
	}
	body, err = c.Node(next).Metrics()
	if err != nil {
		t.Fatal(err)
	}
	if after, _ := metricSample(body, wakeups, "check=health"); after != before {
		t.Errorf("%s on %s went from %g to %g: the watch fired for a service that only hangs", wakeups, c.Node(next).ID, before, after)
	}
	services[next].Signal(syscall.SIGCONT)
}
