package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	raftPort    = 20000
	backendPort = 9000
	metricsPort = 9195
	lbPort      = 8080
	healthAddr  = "127.0.0.1:9100"
)

// NodeConfig is what one node's keep-vip.yaml is made of.
type NodeConfig struct {
	Cluster string
	Index   int  // 1-based; the node is server<Index> at 198.18.X.(10+Index)
	OmitID  bool // leave id out so the supervisor must work it out
	Members int  // cluster size
	DataDir string
	// Render, if set, writes the config instead of YAML's default.
	Render func(c NodeConfig, n *Net) string
	// AdminSocket is the node's own admin socket (the nodes share one
	// filesystem); StartNode sets it and adds it to the config.
	AdminSocket string
	// Extra is YAML appended to the config.
	Extra string
	// Raft is the body of the raft: block (indented two spaces); empty: the
	// harness's 500ms/500ms/250ms; RaftDefaults: no block, the product's
	// defaults.
	Raft string
	// Wrap, if set, is a command line the supervisor's `ip netns exec`
	// command is run under (it must exec its arguments).
	Wrap []string
	// Inner, if set, is a command line the supervisor is run under inside
	// the namespace (it must exec its arguments).
	Inner []string
	// MemberIDs, if set, lists the members (1-based node indices) instead
	// of 1..Members; Addrs overrides a member's IP (default: NodeIP).
	MemberIDs []int
	Addrs     map[int]string
}

// memberIndices are the nodes the config lists as members.
func (c NodeConfig) memberIndices() []int {
	if len(c.MemberIDs) > 0 {
		return c.MemberIDs
	}
	out := make([]int, c.Members)
	for i := range out {
		out[i] = i + 1
	}
	return out
}

// memberIP is member i's address in this config.
func (c NodeConfig) memberIP(n *Net, i int) string {
	if a, ok := c.Addrs[i]; ok {
		return a
	}
	return n.NodeIP(i)
}

// RaftDefaults as NodeConfig.Raft leaves the raft timings to the defaults.
const RaftDefaults = "-"

// YAML renders the config in the supervisor's schema.
func (c NodeConfig) YAML(n *Net) string {
	if c.Render != nil {
		return c.Render(c, n)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "cluster: %s\n", c.Cluster)
	fmt.Fprintf(&b, "interface: %s\n", nodeIfName)
	fmt.Fprintf(&b, "vip: %s\n", n.VIP())
	b.WriteString("ChecksInterval: 0.5\n")
	if !c.OmitID {
		fmt.Fprintf(&b, "id: server%d\n", c.Index)
	}
	fmt.Fprintf(&b, "dataDir: %s\n", c.DataDir)
	switch c.Raft {
	case "":
		b.WriteString("raft:\n  heartbeatTimeout: 500ms\n  electionTimeout: 500ms\n  leaderLeaseTimeout: 250ms\n")
	case RaftDefaults:
	default:
		b.WriteString("raft:\n" + c.Raft)
	}
	b.WriteString("log:\n  level: debug\n")
	fmt.Fprintf(&b, "prometheus:\n  enabled: true\n  address: %s:%d\n", n.NodeIP(c.Index), metricsPort)
	fmt.Fprintf(&b, "checks:\n  - name: health\n    protocol: tcp\n    address: %s\n    timeout: 0.2\n", healthAddr)
	b.WriteString("members:\n")
	for _, i := range c.memberIndices() {
		fmt.Fprintf(&b, "  - id: server%d\n    address: %s:%d\n", i, c.memberIP(n, i), raftPort)
	}
	b.WriteString("loadBalancers:\n  - name: web\n    bindAddress: 0.0.0.0:" + strconv.Itoa(lbPort) + "\n    type: tcp\n    backends:\n")
	for _, i := range c.memberIndices() {
		fmt.Fprintf(&b, "      - name: b%d\n        address: %s:%d\n", i, n.NodeIP(i), backendPort)
	}
	return b.String()
}

// Node is one cluster member: its namespace, its supervisor process (which
// runs the plugins), its backend service and its health endpoint.
type Node struct {
	t          *testing.T
	Index      int
	ID         string // server<Index>
	NS         string
	IP         string
	ConfigPath string
	LogPath    string
	// AdminSocket is where `keep-vip-supervisor status` reaches this node.
	AdminSocket string
	bins        Binaries
	wrap, inner []string
	// cfg and net render the node's config again (Rewrite).
	cfg NodeConfig
	net *Net

	Backend *ServerProcess // answers "<ID>\n" on IP:9000
	Health  *ServerProcess // what the node's tcp check watches

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	logFile *os.File
}

// StartNode writes node index's config under baseDir, starts its backend
// and health endpoint and then its supervisor. t.Cleanup stops all of it.
func StartNode(t *testing.T, n *Net, bins Binaries, baseDir string, cfg NodeConfig) *Node {
	t.Helper()
	dir := filepath.Join(baseDir, fmt.Sprintf("node%d", cfg.Index))
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.AdminSocket = filepath.Join(dir, "admin.sock")
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	node := &Node{
		t: t, Index: cfg.Index, ID: fmt.Sprintf("server%d", cfg.Index), NS: n.NodeNS[cfg.Index-1],
		IP: n.NodeIP(cfg.Index), ConfigPath: filepath.Join(dir, "keep-vip.yaml"),
		LogPath: filepath.Join(dir, "supervisor.log"), bins: bins,
		AdminSocket: cfg.AdminSocket, wrap: cfg.Wrap, inner: cfg.Inner,
		cfg: cfg, net: n,
	}
	node.writeConfig()
	t.Cleanup(node.cleanup)
	node.Backend = NewServerProcess(t, node.NS, fmt.Sprintf("%s:%d", node.IP, backendPort), node.ID)
	node.Health = NewServerProcess(t, node.NS, healthAddr, "")
	node.startSupervisor()
	return node
}

// writeConfig renders n.cfg into n.ConfigPath.
func (n *Node) writeConfig() {
	n.t.Helper()
	yaml := n.cfg.YAML(n.net)
	if !strings.Contains(strings.ToLower(yaml), "adminsocket:") {
		yaml += "adminSocket: " + n.cfg.AdminSocket + "\n"
	}
	yaml += n.cfg.Extra
	if err := os.WriteFile(n.ConfigPath, []byte(yaml), 0o644); err != nil {
		n.t.Fatal(err)
	}
}

// Rewrite changes the node's config file (not the running supervisor's:
// Reload or a restart applies it).
func (n *Node) Rewrite(adjust func(*NodeConfig)) {
	n.t.Helper()
	adjust(&n.cfg)
	n.writeConfig()
}

// Reload sends SIGHUP, as systemctl reload does.
func (n *Node) Reload() {
	n.t.Helper()
	if err := syscall.Kill(n.PID(), syscall.SIGHUP); err != nil {
		n.t.Fatalf("SIGHUP %s: %v", n.ID, err)
	}
}

func (n *Node) startSupervisor() {
	n.t.Helper()
	f, err := os.OpenFile(n.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		n.t.Fatal(err)
	}
	// ip netns exec execs the supervisor in place, so cmd's pid is the
	// supervisor's own.
	args := append(append(append(append([]string{}, n.wrap...), "ip", "netns", "exec", n.NS), n.inner...),
		n.bins.Supervisor(), "start", "-c", n.ConfigPath)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = filepath.Dir(n.ConfigPath)
	cmd.Stdout, cmd.Stderr = f, f
	// Should the test process die without cleanups, take the supervisor
	// (and through its Pdeathsig, the plugins) with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		n.t.Fatalf("start supervisor of %s: %v", n.ID, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	n.mu.Lock()
	n.cmd, n.exited, n.logFile = cmd, exited, f
	n.mu.Unlock()
	n.t.Logf("%s: supervisor pid %d in %s, config %s", n.ID, cmd.Process.Pid, n.NS, n.ConfigPath)
}

// PID is the supervisor's pid.
func (n *Node) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// SupervisorRunning tells whether the supervisor process is still alive.
func (n *Node) SupervisorRunning() bool {
	n.mu.Lock()
	exited := n.exited
	n.mu.Unlock()
	if exited == nil {
		return false
	}
	select {
	case <-exited:
		return false
	default:
		return true
	}
}

// Kill9 SIGKILLs the supervisor and waits (bounded) until it is reaped.
func (n *Node) Kill9() {
	n.t.Helper()
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		n.t.Logf("%s: kill -9 supervisor: %v", n.ID, err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		n.t.Errorf("%s: supervisor pid %d not gone 10s after SIGKILL", n.ID, cmd.Process.Pid)
	}
}

// Stop sends SIGTERM, waits up to 15s, then SIGKILLs; then gives the
// plugins (which get SIGTERM through their Pdeathsig) 10s to go before
// killing whatever keep-vip process is left in the namespace.
func (n *Node) Stop() {
	n.mu.Lock()
	cmd, exited, logFile := n.cmd, n.exited, n.logFile
	n.cmd, n.exited, n.logFile = nil, nil, nil
	n.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			n.t.Errorf("%s: supervisor pid %d ignored SIGTERM for 15s; killing it", n.ID, cmd.Process.Pid)
			_ = cmd.Process.Kill()
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				n.t.Errorf("%s: supervisor pid %d not gone after SIGKILL", n.ID, cmd.Process.Pid)
			}
		}
	}
	if logFile != nil {
		_ = logFile.Close()
	}
	var left []procInfo
	for i := range 200 {
		var err error
		if left, err = keepVIPProcessesInNetns(n.NS, n.bins.Dir); err != nil || len(left) == 0 {
			return
		}
		if i == 199 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	n.t.Errorf("%s: keep-vip processes still running 10s after the supervisor stopped: %s; killing them", n.ID, describeProcesses(left))
	for _, p := range left {
		_ = syscall.Kill(p.PID, syscall.SIGKILL)
	}
}

func (n *Node) cleanup() { n.Stop() }

// LogTail is the last lines of the supervisor's log (plugins log into it
// through the supervisor).
func (n *Node) LogTail(lines int) string {
	data, err := os.ReadFile(n.LogPath)
	if err != nil {
		return fmt.Sprintf("read %s: %v", n.LogPath, err)
	}
	return tailLines(string(data), lines)
}

// PluginChildren maps plugin binary name to the supervisor's live children
// running it.
func (n *Node) PluginChildren() (map[string][]procInfo, error) {
	pid := n.PID()
	if pid == 0 {
		return nil, fmt.Errorf("%s: supervisor not started", n.ID)
	}
	kids, err := childrenOf(pid)
	if err != nil {
		return nil, err
	}
	byName := map[string][]procInfo{}
	for _, k := range kids {
		byName[k.Name()] = append(byName[k.Name()], k)
	}
	return byName, nil
}

// PluginPID is the pid of the supervisor's one child running plugin name.
func (n *Node) PluginPID(name string) (int, error) {
	byName, err := n.PluginChildren()
	if err != nil {
		return 0, err
	}
	switch kids := byName[name]; len(kids) {
	case 0:
		return 0, fmt.Errorf("%s: no %s child of supervisor %d", n.ID, name, n.PID())
	case 1:
		return kids[0].PID, nil
	default:
		return 0, fmt.Errorf("%s: %d %s children of supervisor %d: %s", n.ID, len(kids), name, n.PID(), describeProcesses(kids))
	}
}

// Metrics fetches the node's /metrics from inside its namespace.
func (n *Node) Metrics() (string, error) {
	out, err := runHelperOnce(n.NS, 15*time.Second, helperGet, fmt.Sprintf("http://%s:%d/metrics", n.IP, metricsPort))
	return string(out), err
}

// IsLeaderMetric reads keep_vip_member_is_leader from the node's /metrics;
// found is false when the metric is absent.
func (n *Node) IsLeaderMetric() (value float64, found bool, err error) {
	body, err := n.Metrics()
	if err != nil {
		return 0, false, err
	}
	value, found = metricValue(body, "keep_vip_member_is_leader")
	return value, found, nil
}

// metricValue returns the value of the first sample of metric name in a
// Prometheus text exposition.
func metricValue(body, name string) (float64, bool) {
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		switch {
		case strings.HasPrefix(rest, "{"):
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				continue
			}
			rest = rest[end+1:]
		case strings.HasPrefix(rest, " "):
		default:
			continue // another metric whose name starts with name
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		return v, true
	}
	return 0, false
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d lines before)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
