package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/keep-vip/keep-vip/etc"
)

// demoConfig is the embedded default config (etc/config.yaml), with the
// original example config's addresses swapped for this run's namespaced ones.
func demoConfig(c NodeConfig, n *Net) string {
	r := []string{
		"interface: ens33", "interface: " + nodeIfName,
		"172.16.0.100", n.VIP(),
		"127.0.0.1:80", healthAddr,
		"0.0.0.0:9195", fmt.Sprintf("%s:%d", n.NodeIP(c.Index), metricsPort),
	}
	for i := 1; i <= 3; i++ {
		r = append(r,
			fmt.Sprintf("172.16.0.1%d:20000", i), fmt.Sprintf("%s:%d", n.NodeIP(i), raftPort),
			fmt.Sprintf("172.16.0.1%d:80", i), fmt.Sprintf("%s:%d", n.NodeIP(i), backendPort))
	}
	return strings.NewReplacer(r...).Replace(string(etc.DefaultConfig)) +
		fmt.Sprintf("dataDir: %s\n", c.DataDir)
}

// TestDemo is `make demo`: three members started with the default config,
// then the VIP is made to move twice, once by a failing check and once by
// killing the holder, while a client keeps asking through the VIP.
func TestDemo(t *testing.T) {
	if os.Getenv("KEEPVIP_DEMO") == "" {
		t.Skip("the demo runs with KEEPVIP_DEMO=1 (make demo)")
	}
	say := func(format string, args ...any) { fmt.Printf("demo: "+format+"\n", args...) }
	c := StartClusterWith(t, 3, func(cfg *NodeConfig) { cfg.Render = demoConfig; cfg.OmitID = true })
	say("3 members in namespaces %s, VIP %s, load balancer on VIP:%d", strings.Join(c.Net.NodeNS, " "), c.Net.VIP(), lbPort)

	holder := c.WaitSingleHolder(electionBound, nil)
	say("%s was elected and holds the VIP (%.1fs after start)", c.Node(holder).ID, time.Since(c.Started).Seconds())
	say("client -> %s answered by backend %s", c.VIPAddr(), c.WaitClientReachesBackend(reachBound))

	prober := c.Client.StartProber(c.VIPAddr())
	say("stopping the service %s checks on %s ...", healthAddr, c.Node(holder).ID)
	c.Node(holder).Health.Stop()
	next := c.WaitSingleHolder(electionBound, func(n int) bool { return n != holder })
	say("%s gave the VIP up; %s holds it now", c.Node(holder).ID, c.Node(next).ID)
	c.Node(holder).Health.Start()
	say("service back on %s: it rejoins as a follower", c.Node(holder).ID)

	say("kill -9 of %s's supervisor ...", c.Node(next).ID)
	c.Node(next).Kill9()
	last := c.WaitSingleHolder(electionBound, func(n int) bool { return n != next })
	say("%s holds the VIP now", c.Node(last).ID)
	say("client -> %s answered by backend %s", c.VIPAddr(), c.WaitClientReachesBackend(reachBound))
	rep := prober.Stop()
	say("client view over both moves: %s", rep)
	say("split-brain samples so far: no two holders (checked every few ms); cleaning up")
}
