package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math/rand"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBenchFailover is the failover benchmark of `make bench`
// (KEEPVIP_BENCH=1): 3-node clusters in namespaces, each node running "the
// service" on port 9002 of every address (it answers the node's id, so the
// answer shows who holds the VIP), each node's check watching that service
// at 127.0.0.1:9002 every second, a client connecting to VIP:9002 every
// 10ms, and 20 trials each of
//
//	(a) node lost: kill -9 of the holder's processes and its link down (and
//	    the VIP gone from its interface, as after a power cut);
//	(b) check fails: the holder's service stops.
//
// It prints min, median, p95 and max of the client-visible outage (the
// longest time without an answer; for (b) it includes the wait for the
// next check round, up to the 1s interval), and for keep-vip's (b) the handover:
// from the check's failure verdict (the old holder's log) to the VIP on the
// new holder (its log). The same trials run on keepalived (unicast VRRP, a
// vrrp_script running the same TCP check at the same interval) with its
// default advert_int 1 and with VRRPv3 advert_int 0.1, and on keep-vip with
// its default timings and with timings tuned for speed; then the ratios.
//
// KEEPVIP_BENCH_TRIALS overrides the 20 trials; KEEPVIP_BENCH_ONLY=name
// runs one system (keepvip, keepvip-tuned, keepalived, keepalived-v3);
// KEEPVIP_BENCH_FAST_HEARTBEAT sets keepvip-tuned's heartbeat timeout.
func TestBenchFailover(t *testing.T) {
	trials, only := benchKnobs(t)
	systems := []struct {
		key  string
		name string
		run  func(t *testing.T) failoverSystem
	}{
		{"keepvip", "keep-vip, default timings (heartbeat 300ms)", func(t *testing.T) failoverSystem { return startKeepVIPFailover(t, "") }},
		{"keepvip-tuned", "keep-vip, tuned (heartbeat " + benchFastHeartbeat() + ")", func(t *testing.T) failoverSystem {
			return startKeepVIPFailover(t, benchFastRaft())
		}},
		{"keepalived", "keepalived, advert_int 1 (default)", func(t *testing.T) failoverSystem { return startKeepalivedFailover(t, 1, false) }},
		{"keepalived-v3", "keepalived, VRRPv3 advert_int 0.1", func(t *testing.T) failoverSystem { return startKeepalivedFailover(t, 0.1, true) }},
	}
	if _, err := exec.LookPath("keepalived"); err != nil && (only == "" || strings.HasPrefix(only, "keepalived")) {
		t.Logf("bench: installing keepalived with apt-get")
		if err := benchAptInstall("keepalived"); err != nil {
			t.Logf("keepalived not installed, its runs are skipped: %v", err)
		}
	}
	if _, err := exec.LookPath("keepalived"); err != nil {
		systems = systems[:2]
	}
	var results []failoverResult
	for _, s := range systems {
		if only != "" && only != s.key {
			continue
		}
		t.Run(s.key, func(t *testing.T) {
			start := time.Now()
			sys := s.run(t)
			r := runFailoverTrials(t, sys, s.name, trials)
			r.key = s.key
			results = append(results, r)
			t.Logf("%s: %d trials of each in %s", s.name, trials, time.Since(start).Round(time.Second))
		})
	}
	printFailoverTable(t, results)
}

// benchKnobs skips the test unless KEEPVIP_BENCH is set, and reads the
// trial benches' knobs: KEEPVIP_BENCH_TRIALS (default 20) and
// KEEPVIP_BENCH_ONLY (one system's key).
func benchKnobs(t *testing.T) (trials int, only string) {
	t.Helper()
	if os.Getenv("KEEPVIP_BENCH") == "" {
		t.Skip("benchmarks run with KEEPVIP_BENCH=1 (make bench)")
	}
	requireRoot(t)
	trials = 20
	if v, err := strconv.Atoi(os.Getenv("KEEPVIP_BENCH_TRIALS")); err == nil && v > 0 {
		trials = v
	}
	return trials, os.Getenv("KEEPVIP_BENCH_ONLY")
}

// failoverSystem is one HA implementation under test.
type failoverSystem interface {
	net() *Net
	holders() ([]int, error)
	// loseNode takes node i's link down and kills its HA processes.
	loseNode(i int)
	restoreNode(i int)
	failCheck(i int)
	restoreCheck(i int)
	// handover is the time from node old's check verdict to the VIP on
	// node next, from their logs, if the system logs both.
	handover(old, next int, since time.Time) (time.Duration, bool)
	// splitBrainSamples counts the Sampler's double-holder samples so far.
	splitBrainSamples() int
	// sampler is the system's split-brain Sampler, for VIP timelines.
	sampler() *Sampler
}

type failoverResult struct {
	key, name                     string
	nodeLost, checkFail, handover []time.Duration
	vipGap                        []time.Duration // (b): VIP off the old holder → on the new
	splitBrain                    int
}

const (
	failoverAnyPort       = 9002
	failoverProbeInterval = 10 * time.Millisecond
	failoverProbeTimeout  = time.Second
	failoverMoveBound     = 20 * time.Second
	failoverSettle        = 1500 * time.Millisecond
	// failoverCheckInterval is the failover bench's check interval, whole
	// seconds because keepalived's vrrp_script takes nothing else.
	failoverCheckInterval = time.Second
)

// failoverHolder waits until exactly one node holds the VIP, stable for 300ms.
func failoverHolder(t *testing.T, sys failoverSystem, not int) int {
	t.Helper()
	holder, since := 0, time.Time{}
	mustWaitFor(t, failoverMoveBound, "one VIP holder", func() (bool, string) {
		hs, err := sys.holders()
		if err != nil || len(hs) != 1 || hs[0] == not {
			holder = 0
			return false, fmt.Sprintf("holders %v %v", hs, err)
		}
		if hs[0] != holder {
			holder, since = hs[0], time.Now()
		}
		return time.Since(since) >= 300*time.Millisecond, ""
	})
	return holder
}

func runFailoverTrials(t *testing.T, sys failoverSystem, name string, trials int) failoverResult {
	return runTrials(t, sys, name, trialPlan{nodeLost: trials, checkFail: trials, phase: failoverCheckInterval})
}

// trialPlan says how many trials of each kind to run, and over how long a
// span to spread the fault's phase against the check rounds (the check
// interval).
type trialPlan struct {
	nodeLost, checkFail int
	phase               time.Duration
}

func runTrials(t *testing.T, sys failoverSystem, name string, plan trialPlan) failoverResult {
	r := failoverResult{name: name}
	// Past the first election and its aftermath (keepalived's backups
	// settle their timers on the first adverts).
	failoverHolder(t, sys, 0)
	time.Sleep(3 * time.Second)
	n := sys.net()
	addr := net.JoinHostPort(n.VIP(), strconv.Itoa(failoverAnyPort))
	trial := func(kind string, fault, restore func(int)) (time.Duration, int, int, time.Time) {
		t.Helper()
		h := failoverHolder(t, sys, 0)
		p, err := StartFastProber(n.ClientNS, addr, failoverProbeInterval, failoverProbeTimeout)
		if err != nil {
			t.Fatal(err)
		}
		// A random phase against the check interval and the heartbeats,
		// so the wait for the next check round is spread over the interval.
		time.Sleep(300*time.Millisecond + time.Duration(rand.Int63n(int64(plan.phase))))
		t0 := time.Now()
		fault(h)
		next := failoverHolder(t, sys, h)
		// Let the client see the new holder.
		mustWaitFor(t, failoverMoveBound, "an answer from the new holder", func() (bool, string) {
			p.mu.Lock()
			defer p.mu.Unlock()
			for _, pr := range p.results {
				if pr.OK && pr.End.After(t0) && pr.Reply == fmt.Sprintf("server%d", next) {
					return true, ""
				}
			}
			return false, "none yet"
		})
		time.Sleep(200 * time.Millisecond)
		probes := p.Stop()
		gap, _, ok := probeOutage(probes, t0)
		if !ok {
			t.Fatalf("%s: no answer after the fault", kind)
		}
		restore(h)
		time.Sleep(failoverSettle)
		return gap, h, next, t0
	}
	for i := range plan.nodeLost {
		gap, h, next, _ := trial("node lost", sys.loseNode, sys.restoreNode)
		r.nodeLost = append(r.nodeLost, gap)
		t.Logf("%s, node lost %d/%d: node %d → node %d, outage %s", name, i+1, plan.nodeLost, h, next, gap.Round(time.Millisecond))
	}
	for i := range plan.checkFail {
		gap, h, next, t0 := trial("check fails", sys.failCheck, sys.restoreCheck)
		r.checkFail = append(r.checkFail, gap)
		msg := fmt.Sprintf("%s, check fails %d/%d: node %d → node %d, outage %s", name, i+1, plan.checkFail, h, next, gap.Round(time.Millisecond))
		if d, ok := sys.handover(h, next, t0); ok {
			r.handover = append(r.handover, d)
			msg += fmt.Sprintf(", handover %s after the verdict", d.Round(100*time.Microsecond))
		}
		var off, on time.Time
		for _, ch := range sys.sampler().TimelineSince(t0) {
			if off.IsZero() && !slices.Contains(ch.Holders, h) {
				off = ch.At
			}
			if on.IsZero() && slices.Contains(ch.Holders, next) {
				on = ch.At
			}
		}
		if !off.IsZero() && !on.IsZero() && !on.Before(off) {
			r.vipGap = append(r.vipGap, on.Sub(off))
			msg += fmt.Sprintf(", VIP off the old holder → on the new in %s", on.Sub(off).Round(time.Millisecond))
		}
		t.Log(msg)
	}
	r.splitBrain = sys.splitBrainSamples()
	return r
}

type failoverStats struct{ min, median, p95, max time.Duration }

func failoverStatsOf(ds []time.Duration) failoverStats {
	if len(ds) == 0 {
		return failoverStats{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	p95 := s[min(len(s)-1, (len(s)*95+99)/100-1)]
	return failoverStats{s[0], s[len(s)/2], p95, s[len(s)-1]}
}

func msString(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64)
}

func printFailoverTable(t *testing.T, rs []failoverResult) {
	var b strings.Builder
	fmt.Fprintf(&b, "\nfailover benchmark: client-visible outage in ms (client connects to VIP every %s)\n", failoverProbeInterval)
	fmt.Fprintf(&b, "%-44s %-34s %6s %8s %8s %8s %8s\n", "system", "trial", "n", "min", "median", "p95", "max")
	row := func(sys, kind string, ds []time.Duration) {
		if len(ds) == 0 {
			return
		}
		s := failoverStatsOf(ds)
		fmt.Fprintf(&b, "%-44s %-34s %6d %8s %8s %8s %8s\n", sys, kind, len(ds), msString(s.min), msString(s.median), msString(s.p95), msString(s.max))
	}
	for _, r := range rs {
		row(r.name, "(a) node lost", r.nodeLost)
		row(r.name, "(b) check fails", r.checkFail)
		row(r.name, "(b) handover: verdict → VIP moved", r.handover)
		row(r.name, "(b) VIP off old holder → on new", r.vipGap)
		fmt.Fprintf(&b, "%-44s %-34s %6d\n", r.name, "samples with two VIP holders", r.splitBrain)
	}
	by := map[string]failoverResult{}
	for _, r := range rs {
		by[r.key] = r
	}
	ratio := func(ours, theirs []time.Duration) string {
		a, c := failoverStatsOf(ours), failoverStatsOf(theirs)
		if c.median == 0 || c.max == 0 {
			return "-"
		}
		return fmt.Sprintf("median %.2f, max %.2f", float64(a.median)/float64(c.median), float64(a.max)/float64(c.max))
	}
	b.WriteString("\nratios, ours / theirs (below 1: we are faster)\n")
	for _, ours := range []string{"keepvip", "keepvip-tuned"} {
		for _, theirs := range []string{"keepalived", "keepalived-v3"} {
			o, ok1 := by[ours]
			k, ok2 := by[theirs]
			if !ok1 || !ok2 {
				continue
			}
			fmt.Fprintf(&b, "%-30s / %-36s node lost: %s; check fails: %s; VIP off→on: %s\n", o.name, k.name,
				ratio(o.nodeLost, k.nodeLost), ratio(o.checkFail, k.checkFail), ratio(o.vipGap, k.vipGap))
		}
	}
	t.Log(b.String())
	fmt.Print(b.String())
}

// ---------------------------------------------------------------- keep-vip

type keepVIPFailover struct {
	t       *testing.T
	c       *Cluster
	service []*ServerProcess
}

// failoverRender is the harness config with a check of the service every
// interval (whole seconds: keepalived's vrrp_script takes nothing else),
// check keys extra (YAML, indented for the check) and raft timings raft (""
// = defaults).
func failoverRender(raft string, interval time.Duration, extra string) func(NodeConfig, *Net) string {
	return func(c NodeConfig, n *Net) string {
		c.Render = nil
		c.Raft = RaftDefaults
		if raft != "" {
			c.Raft = raft
		}
		y := c.YAML(n)
		y = strings.Replace(y, "ChecksInterval: 0.5\n", fmt.Sprintf("ChecksInterval: %g\n", interval.Seconds()), 1)
		y = strings.Replace(y, "address: "+healthAddr+"\n", fmt.Sprintf("address: 127.0.0.1:%d\n", failoverAnyPort), 1)
		return strings.Replace(y, "    timeout: 0.2\n", "    timeout: 0.5\n"+extra, 1)
	}
}

func startKeepVIPFailover(t *testing.T, raft string) failoverSystem {
	return startKeepVIPFailoverWith(t, raft, failoverCheckInterval, "")
}

func startKeepVIPFailoverWith(t *testing.T, raft string, interval time.Duration, checkExtra string) failoverSystem {
	c := StartClusterWith(t, 3, func(cfg *NodeConfig) { cfg.Render = failoverRender(raft, interval, checkExtra) })
	keepLogs(t, c)
	k := &keepVIPFailover{t: t, c: c}
	for _, node := range c.Nodes {
		k.service = append(k.service, NewServerProcess(t, node.NS, fmt.Sprintf("0.0.0.0:%d", failoverAnyPort), node.ID))
	}
	c.WaitSingleHolder(electionBound, nil)
	return k
}

func (k *keepVIPFailover) net() *Net               { return k.c.Net }
func (k *keepVIPFailover) holders() ([]int, error) { return k.c.VIPHolders() }
func (k *keepVIPFailover) failCheck(i int)         { k.service[i-1].Stop() }
func (k *keepVIPFailover) restoreCheck(i int)      { k.service[i-1].Start() }
func (k *keepVIPFailover) splitBrainSamples() int  { return samplerViolations(k.c.Sampler) }
func samplerViolations(s *Sampler) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.report.Violations)
}
func (k *keepVIPFailover) loseNode(i int) {
	failoverLoseNode(k.t, k.c.Net, k.c.Node(i).NS, k.c.Bins.Dir, nil)
}
func (k *keepVIPFailover) restoreNodeLink(i int) { setNSLink(k.t, k.c.Node(i).NS, "up") }
func (k *keepVIPFailover) restoreNode(i int) {
	k.restoreNodeLink(i)
	node := k.c.Node(i)
	restartSupervisor(node)
	mustWaitFor(k.t, processBound, node.ID+"'s elector", func() (bool, string) {
		_, err := node.PluginPID("keep-vip-elector")
		return err == nil, fmt.Sprint(err)
	})
}

// handover reads the old holder's check verdict and the new holder's VIP
// from their logs.
func (k *keepVIPFailover) handover(old, next int, since time.Time) (time.Duration, bool) {
	verdict, ok1 := firstLogTime(k.c.Node(old).LogPath, since, func(m map[string]any) bool {
		h, _ := m["healthy"].(bool)
		return m["message"] == "checks changed" && !h
	})
	acquired, ok2 := firstLogTime(k.c.Node(next).LogPath, since, func(m map[string]any) bool { return m["message"] == "VIP acquired" })
	if !ok1 || !ok2 {
		return 0, false
	}
	return acquired.Sub(verdict), true
}

// firstLogTime is the time of the first JSON log line at or after since that
// match accepts.
func firstLogTime(path string, since time.Time, match func(map[string]any) bool) (time.Time, bool) {
	f, err := os.Open(path)
	if err != nil {
		return time.Time{}, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		ts, _ := m["time"].(string)
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil || at.Before(since) || !match(m) {
			continue
		}
		return at, true
	}
	return time.Time{}, false
}

// failoverLoseNode takes ns's link down, kills every process of ns that
// match (nil: keep-vip's) and removes the VIP from it, as a power cut
// would. The link goes first so that nothing a dying process says (such as
// keepalived's child resigning with a priority-0 advert when its parent
// dies) reaches the others.
func failoverLoseNode(t *testing.T, n *Net, ns, binDir string, match func(procInfo) bool) {
	t.Helper()
	setNSLink(t, ns, "down")
	procs, err := processesInNetns(ns)
	if err != nil {
		t.Fatal(err)
	}
	kv, _ := keepVIPProcessesInNetns(ns, binDir)
	for _, p := range procs {
		if (match == nil && slices.ContainsFunc(kv, func(q procInfo) bool { return q.PID == p.PID })) || (match != nil && match(p)) {
			_ = syscall.Kill(p.PID, syscall.SIGKILL)
		}
	}
	_, _ = runIP("-n", ns, "addr", "del", n.VIP()+"/32", "dev", nodeIfName)
}

func setNSLink(t *testing.T, ns, state string) {
	t.Helper()
	if out, err := runIP("-n", ns, "link", "set", nodeIfName, state); err != nil {
		t.Fatalf("ip -n %s link set %s %s: %v: %s", ns, nodeIfName, state, err, out)
	}
}

// ---------------------------------------------------------------- keepalived

type keepalivedFailover struct {
	t       *testing.T
	n       *Net
	dir     string
	advert  float64
	v3      bool
	vrid    int
	service []*ServerProcess
	samp    *Sampler
	// interval is vrrp_script's, in whole seconds.
	interval int
}

func startKeepalivedFailover(t *testing.T, advert float64, v3 bool) failoverSystem {
	return startKeepalivedFailoverWith(t, advert, v3, failoverCheckInterval)
}

func startKeepalivedFailoverWith(t *testing.T, advert float64, v3 bool, interval time.Duration) failoverSystem {
	requireRoot(t)
	n := NewNet(t, 3)
	k := &keepalivedFailover{t: t, n: n, dir: t.TempDir(), advert: advert, v3: v3, vrid: 1 + rand.Intn(254), interval: int(interval.Seconds())}
	s, err := startSampling(n.VIP(), n.NodeNS)
	if err != nil {
		t.Fatal(err)
	}
	k.samp = s
	t.Cleanup(func() {
		keep := os.Getenv(keepLogsEnv)
		for i := 1; i <= 3; i++ {
			path := filepath.Join(k.dir, fmt.Sprintf("keepalived%d.log", i))
			b, _ := os.ReadFile(path)
			if t.Failed() {
				t.Logf("keepalived on node %d, tail of its log:\n%s", i, tailLines(string(b), 40))
			}
			if keep != "" {
				dst := filepath.Join(keep, strings.ReplaceAll(t.Name(), "/", "_"))
				_ = os.MkdirAll(dst, 0o755)
				_ = os.WriteFile(filepath.Join(dst, fmt.Sprintf("keepalived%d.log", i)), b, 0o644)
			}
		}
	})
	t.Cleanup(func() {
		r := s.Stop()
		t.Logf("sampler (keepalived, not enforced): %d samples over %s, %d with two VIP holders; VIP holders: %s",
			r.Samples, r.Duration.Round(time.Millisecond), len(r.Violations), r.describeTimeline())
	})
	check := filepath.Join(k.dir, "check.sh")
	// The same check as keep-vip's: a TCP connect to the health endpoint
	// within half the interval.
	script := fmt.Sprintf("#!/bin/bash\nexec timeout 0.5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d'\n", failoverAnyPort)
	if err := os.WriteFile(check, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		ns := n.NodeNS[i-1]
		k.service = append(k.service, NewServerProcess(t, ns, fmt.Sprintf("0.0.0.0:%d", failoverAnyPort), fmt.Sprintf("server%d", i)))
		k.writeConfig(i, check)
		k.start(i)
	}
	// Processes go with the namespaces (Net's cleanup kills what is left).
	return k
}

func (k *keepalivedFailover) writeConfig(i int, check string) {
	var peers []string
	for j := 1; j <= 3; j++ {
		if j != i {
			peers = append(peers, "    "+k.n.NodeIP(j))
		}
	}
	version := ""
	if k.v3 {
		version = "  vrrp_version 3\n"
	}
	cfg := fmt.Sprintf(`global_defs {
  router_id kv%[1]sn%[2]d
%[3]s}
vrrp_script chk {
  script "%[4]s"
  interval %[12]d
  timeout 1
  fall 1
  rise 1
}
vrrp_instance VI_1 {
  state BACKUP
  nopreempt
  interface %[5]s
  virtual_router_id %[6]d
  priority %[7]d
  advert_int %[8]s
  unicast_src_ip %[9]s
  unicast_peer {
%[10]s
  }
  virtual_ipaddress {
    %[11]s/32 dev %[5]s
  }
  track_script {
    chk
  }
}
`, k.n.Suffix, i, version, check, nodeIfName, k.vrid, 110-10*i, strconv.FormatFloat(k.advert, 'f', -1, 64),
		k.n.NodeIP(i), strings.Join(peers, "\n"), k.n.VIP(), k.interval)
	if err := os.WriteFile(k.confPath(i), []byte(cfg), 0o644); err != nil {
		k.t.Fatal(err)
	}
}

func (k *keepalivedFailover) confPath(i int) string {
	return filepath.Join(k.dir, fmt.Sprintf("keepalived%d.conf", i))
}

func (k *keepalivedFailover) start(i int) {
	k.t.Helper()
	// A kill -9 leaves the pid files, and keepalived refuses to start if
	// their pids now belong to another process.
	for _, f := range []string{"k%d.pid", "k%d-vrrp.pid"} {
		_ = os.Remove(filepath.Join(k.dir, fmt.Sprintf(f, i)))
	}
	f, err := os.OpenFile(filepath.Join(k.dir, fmt.Sprintf("keepalived%d.log", i)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		k.t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("ip", "netns", "exec", k.n.NodeNS[i-1], "keepalived", "-n", "-l", "-D", "-G", "-P",
		"-f", k.confPath(i),
		"-p", filepath.Join(k.dir, fmt.Sprintf("k%d.pid", i)),
		"-r", filepath.Join(k.dir, fmt.Sprintf("k%d-vrrp.pid", i)))
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		k.t.Fatalf("start keepalived in %s: %v", k.n.NodeNS[i-1], err)
	}
	go func() { _ = cmd.Wait() }()
}

func isKeepalived(p procInfo) bool { return p.Name() == "keepalived" }

func (k *keepalivedFailover) net() *Net               { return k.n }
func (k *keepalivedFailover) holders() ([]int, error) { return vipHoldersIn(k.n) }
func (k *keepalivedFailover) failCheck(i int)         { k.service[i-1].Stop() }
func (k *keepalivedFailover) restoreCheck(i int)      { k.service[i-1].Start() }
func (k *keepalivedFailover) splitBrainSamples() int  { return samplerViolations(k.samp) }
func (k *keepalivedFailover) loseNode(i int) {
	failoverLoseNode(k.t, k.n, k.n.NodeNS[i-1], "", isKeepalived)
}

func (k *keepalivedFailover) restoreNode(i int) {
	ns := k.n.NodeNS[i-1]
	mustWaitFor(k.t, processBound, "keepalived gone from "+ns, func() (bool, string) {
		procs, _ := processesInNetns(ns)
		return !slices.ContainsFunc(procs, isKeepalived), "still running"
	})
	setNSLink(k.t, ns, "up")
	k.start(i)
}

// keepalived logs no times of its own; the handover is not measured.
func (k *keepalivedFailover) handover(int, int, time.Time) (time.Duration, bool) { return 0, false }

// vipHoldersIn lists the nodes of n whose eth0 has the VIP.
func vipHoldersIn(n *Net) ([]int, error) {
	r, err := newEth0AddrReader(n.NodeNS)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	vip := netip.MustParseAddr(n.VIP())
	var hs []int
	for i := range n.NodeNS {
		held, err := r.Holds(i, vip)
		if err != nil {
			return nil, err
		}
		if held {
			hs = append(hs, i+1)
		}
	}
	return hs, nil
}

func (k *keepVIPFailover) sampler() *Sampler    { return k.c.Sampler }
func (k *keepalivedFailover) sampler() *Sampler { return k.samp }
