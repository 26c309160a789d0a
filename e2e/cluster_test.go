package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Cluster is a running keep-vip cluster in its own Net, with the split-brain
// Sampler and a Client in the client namespace.
type Cluster struct {
	t       *testing.T
	Net     *Net
	Bins    Binaries
	Nodes   []*Node // Nodes[i-1] is node i
	Sampler *Sampler
	Client  *Client
	Started time.Time
	vip     netip.Addr
	// nodesDir holds each node's config, data dir and log.
	nodesDir string
}

// StartCluster starts size nodes; the last one has no id in its config so
// the supervisor's id auto-detection is exercised.
func StartCluster(t *testing.T, size int) *Cluster {
	t.Helper()
	return StartClusterWith(t, size, nil)
}

// StartClusterWith is StartCluster with each node's config adjusted by
// adjust (when not nil) before it is written.
func StartClusterWith(t *testing.T, size int, adjust func(*NodeConfig)) *Cluster {
	t.Helper()
	c := NewIdleCluster(t, size)
	for i := 1; i <= size; i++ {
		cfg := NodeConfig{Cluster: c.Name(), Index: i, Members: size, OmitID: i == size}
		if adjust != nil {
			adjust(&cfg)
		}
		c.Nodes[i-1] = StartNode(t, c.Net, c.Bins, c.nodesDir, cfg)
	}
	return c
}

// Name is the cluster's name in every node's config.
func (c *Cluster) Name() string { return "e2e-" + c.Net.Suffix }

// StartSlot starts node i (1-based) of a cluster made by NewIdleCluster.
func (c *Cluster) StartSlot(cfg NodeConfig) *Node {
	c.t.Helper()
	cfg.Cluster = c.Name()
	n := StartNode(c.t, c.Net, c.Bins, c.nodesDir, cfg)
	c.Nodes[cfg.Index-1] = n
	return n
}

// NewIdleCluster makes the network, sampler and client for slots nodes but
// starts none (StartSlot does); Nodes[i] stays nil until node i+1 starts.
func NewIdleCluster(t *testing.T, slots int) *Cluster {
	t.Helper()
	requireRoot(t)
	bins := binariesForTest(t)
	n := NewNet(t, slots)
	c := &Cluster{t: t, Net: n, Bins: bins, vip: netip.MustParseAddr(n.VIP())}
	// Cleanups run last-in first-out: this one runs after the nodes are
	// stopped and the Sampler has had its say, so it sees every failure,
	// and before the TempDir holding the logs (made just before) goes.
	nodesDir := t.TempDir()
	t.Cleanup(c.logTailsIfFailed)
	// Sample from before the first supervisor starts until the last one is
	// stopped, so a double VIP at startup or shutdown is caught too.
	c.Sampler = StartSampler(t, n.VIP(), n.NodeNS)
	c.Client = NewClient(t, n.ClientNS)
	c.Started = time.Now()
	c.nodesDir = nodesDir
	c.Nodes = make([]*Node, slots)
	return c
}

func (c *Cluster) logTailsIfFailed() {
	if !c.t.Failed() {
		return
	}
	for _, n := range c.Nodes {
		if n == nil {
			continue
		}
		c.t.Logf("%s: tail of %s:\n%s", n.ID, n.LogPath, n.LogTail(60))
	}
}

// VIPAddr is VIP:8080, the load balancer's address as the client sees it.
func (c *Cluster) VIPAddr() string {
	return net.JoinHostPort(c.Net.VIP(), strconv.Itoa(lbPort))
}

// Node returns node i (1-based).
func (c *Cluster) Node(i int) *Node { return c.Nodes[i-1] }

// VIPHolders lists the (1-based) nodes whose eth0 has the VIP now.
func (c *Cluster) VIPHolders() ([]int, error) {
	r, err := newEth0AddrReader(c.Net.NodeNS)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var holders []int
	for i := range c.Nodes {
		held, err := r.Holds(i, c.vip)
		if err != nil {
			return nil, err
		}
		if held {
			holders = append(holders, i+1)
		}
	}
	return holders, nil
}

// NodeHoldsVIP tells whether node i's eth0 has the VIP.
func (c *Cluster) NodeHoldsVIP(i int) (bool, error) {
	addrs, err := c.Net.Eth0Addrs(c.Net.NodeNS[i-1])
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if a == c.vip {
			return true, nil
		}
	}
	return false, nil
}

// WaitSingleHolder waits until exactly one node, accepted by ok (nil: any),
// holds the VIP, and still does stableFor later; it returns that node.
func (c *Cluster) WaitSingleHolder(timeout time.Duration, ok func(node int) bool) int {
	c.t.Helper()
	const stableFor = time.Second
	holder, since := 0, time.Time{}
	took := mustWaitFor(c.t, timeout, "exactly one VIP holder", func() (bool, string) {
		hs, err := c.VIPHolders()
		if err != nil {
			return false, err.Error()
		}
		if len(hs) != 1 || (ok != nil && !ok(hs[0])) {
			holder = 0
			return false, fmt.Sprintf("VIP holders %v", hs)
		}
		if hs[0] != holder {
			holder, since = hs[0], time.Now()
		}
		if time.Since(since) < stableFor {
			return false, fmt.Sprintf("node %d holds the VIP for %s only", holder, time.Since(since).Round(time.Millisecond))
		}
		return true, ""
	})
	c.t.Logf("VIP held by node %d (%s) alone; waited %s (%s since cluster start)", holder,
		c.Node(holder).ID, took.Round(time.Millisecond), time.Since(c.Started).Round(time.Millisecond))
	return holder
}

// WaitClientReachesBackend waits until the client gets a backend's answer
// through VIP:8080 and returns the answering backend's node id.
func (c *Cluster) WaitClientReachesBackend(timeout time.Duration) string {
	c.t.Helper()
	valid := map[string]bool{}
	for i := range c.Nodes {
		valid[fmt.Sprintf("server%d", i+1)] = true
	}
	var reply string
	took := mustWaitFor(c.t, timeout, "the client to reach a backend through "+c.VIPAddr(), func() (bool, string) {
		r, err := c.Client.Ask(c.VIPAddr(), time.Second)
		if err != nil {
			return false, err.Error()
		}
		if !valid[r] {
			return false, fmt.Sprintf("unexpected reply %q", r)
		}
		reply = r
		return true, ""
	})
	c.t.Logf("client reached backend %s through %s after %s", reply, c.VIPAddr(), took.Round(time.Millisecond))
	return reply
}

// WaitLeaderMetric waits until node i's keep_vip_member_is_leader is want.
func (c *Cluster) WaitLeaderMetric(i int, want float64, timeout time.Duration) {
	c.t.Helper()
	node := c.Node(i)
	mustWaitFor(c.t, timeout, fmt.Sprintf("%s keep_vip_member_is_leader == %g", node.ID, want), func() (bool, string) {
		v, found, err := node.IsLeaderMetric()
		switch {
		case err != nil:
			return false, err.Error()
		case !found:
			return false, "keep_vip_member_is_leader not in /metrics"
		case v != want:
			return false, fmt.Sprintf("keep_vip_member_is_leader = %g", v)
		}
		return true, ""
	})
}

// WaitPlugins waits until node i's supervisor has one child per plugin and
// returns their pids by binary name.
func (c *Cluster) WaitPlugins(i int, timeout time.Duration) map[string]int {
	c.t.Helper()
	node := c.Node(i)
	pids := map[string]int{}
	mustWaitFor(c.t, timeout, node.ID+"'s four plugins", func() (bool, string) {
		var missing []string
		for _, name := range pluginNames {
			pid, err := node.PluginPID(name)
			if err != nil {
				missing = append(missing, err.Error())
				continue
			}
			pids[name] = pid
		}
		return len(missing) == 0, strings.Join(missing, "; ")
	})
	return pids
}

// RequireSupervisorRunning fails the test now if node i's supervisor died.
func (c *Cluster) RequireSupervisorRunning(i int) {
	c.t.Helper()
	node := c.Node(i)
	if !node.SupervisorRunning() {
		c.t.Fatalf("%s: supervisor (pid %d) is not running", node.ID, node.PID())
	}
}
