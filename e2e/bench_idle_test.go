package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// idleWindow is how long an idle cluster is measured.
const idleWindow = 20 * time.Second

// TestBenchIdle measures what an idle 3-member cluster costs, with the
// default timings, one tcp check every ChecksInterval (2s) and one tcp load
// balancer: per process of the leader and of a follower, resident memory
// and CPU over idleWindow, and the leader elector's CPU per Raft RPC round
// trip (heartbeats and commit-timeout AppendEntries, counted by an nftables
// counter on the leader's Raft traffic). keepalived (VRRPv3, advert_int 1,
// its default, with the same check as a vrrp_script) is measured beside it
// in namespaces of its own.
//
// KEEPVIP_BENCH_ONLY=keepvip or keepalived runs one of them.
func TestBenchIdle(t *testing.T) {
	_, only := benchKnobs(t)
	var b strings.Builder
	fmt.Fprintf(&b, "\nidle benchmark: 3 members, default timings, one tcp check every 2s, one tcp load balancer; %s measured\n", idleWindow)
	fmt.Fprintf(&b, "%-10s %-22s %10s %8s %8s %10s %8s %10s\n", "member", "process", "RSS MB", "anon", "file", "CPU ms", "CPU %", "switches/s")
	if only == "" || only == "keepvip" {
		t.Run("keepvip", func(t *testing.T) { idleKeepVIP(t, &b) })
	}
	if only == "" || only == "keepalived" {
		t.Run("keepalived", func(t *testing.T) { idleKeepalived(t, &b) })
	}
	t.Log(b.String())
	fmt.Print(b.String())
}

// residentKB is a process's resident memory in kB: all of it, its
// anonymous part (heap, stacks, the runtime's own, relocated data) and the
// pages of mapped files (its executable's code and read-only data).
type residentKB struct {
	all, anon, file int64
}

// residentOf reads pid's resident memory.
func residentOf(pid int) (rss residentKB) {
	if f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if !ok || len(strings.Fields(v)) == 0 {
				continue
			}
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			switch k {
			case "VmRSS":
				rss.all = n
			case "RssAnon":
				rss.anon = n
			case "RssFile":
				rss.file = n
			}
		}
		f.Close()
	}
	return rss
}

// threadsUsage sums, over pid's threads, the CPU time the scheduler
// accounted to them (schedstat, in nanoseconds: the tick-based utime and
// stime of /proc/PID/stat move in 10ms steps, which is most of a small
// process's idle figure) and their context switches, voluntary or not
// (each is a wake-up, which on a virtual machine costs far more than the
// work of a heartbeat). Threads that exited are not counted; a Go process
// keeps its threads.
func threadsUsage(pid int) (cpu time.Duration, switches int64) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, 0
	}
	for _, task := range tasks {
		dir := fmt.Sprintf("/proc/%d/task/%s/", pid, task.Name())
		if b, err := os.ReadFile(dir + "schedstat"); err == nil {
			if f := strings.Fields(string(b)); len(f) > 0 {
				ns, _ := strconv.ParseInt(f[0], 10, 64)
				cpu += time.Duration(ns)
			}
		}
		if b, err := os.ReadFile(dir + "status"); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if k, v, ok := strings.Cut(line, ":"); ok && strings.HasSuffix(k, "ctxt_switches") {
					n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
					switches += n
				}
			}
		}
	}
	return cpu, switches
}

// measureIdle samples pids (name → pid) over idleWindow and writes a row
// each, and a total.
func measureIdle(b *strings.Builder, member string, pids map[string]int) (elector time.Duration, electorSwitches int64) {
	names := make([]string, 0, len(pids))
	for n := range pids {
		names = append(names, n)
	}
	slices.Sort(names)
	before, beforeSw := map[string]time.Duration{}, map[string]int64{}
	for _, n := range names {
		before[n], beforeSw[n] = threadsUsage(pids[n])
	}
	time.Sleep(idleWindow)
	var total residentKB
	var totalCPU time.Duration
	var totalSw int64
	row := func(name string, r residentKB, d time.Duration, sw int64) {
		fmt.Fprintf(b, "%-10s %-22s %10.1f %8.1f %8.1f %10.1f %8.2f %10.0f\n", member, name,
			float64(r.all)/1024, float64(r.anon)/1024, float64(r.file)/1024, float64(d.Microseconds())/1000,
			100*d.Seconds()/idleWindow.Seconds(), float64(sw)/idleWindow.Seconds())
	}
	for _, n := range names {
		rss := residentOf(pids[n])
		cpu, sw := threadsUsage(pids[n])
		d, dsw := cpu-before[n], sw-beforeSw[n]
		total.all, total.anon, total.file = total.all+rss.all, total.anon+rss.anon, total.file+rss.file
		totalCPU += d
		totalSw += dsw
		if n == "keep-vip-elector" {
			elector, electorSwitches = d, dsw
		}
		row(n, rss, d, dsw)
	}
	row("all", total, totalCPU, totalSw)
	return elector, electorSwitches
}

func idleKeepVIP(t *testing.T, b *strings.Builder) {
	c := StartClusterWith(t, 3, func(cfg *NodeConfig) {
		cfg.Render = func(nc NodeConfig, n *Net) string {
			nc.Render, nc.Raft = nil, RaftDefaults
			y := nc.YAML(n)
			y = strings.Replace(y, "ChecksInterval: 0.5\n", "ChecksInterval: 2\n", 1)
			y = strings.Replace(y, "log:\n  level: debug\n", "", 1)
			return strings.Replace(y, "    timeout: 0.2\n", "    timeout: 1\n", 1)
		}
	})
	leader := c.WaitSingleHolder(electionBound, nil)
	follower := 1 + leader%3
	// Past the start: plugins up, first rounds, the GC's first cycles.
	time.Sleep(5 * time.Second)
	// Count the leader's Raft RPCs (AppendEntries: heartbeats and the
	// commit timeout's) by the segments it sends to the Raft port with
	// data in them.
	ns := c.Node(leader).NS
	table := "kvidle" + c.Net.Suffix
	nft := func(stdin string, args ...string) (string, error) {
		cmd := exec.Command("ip", append([]string{"netns", "exec", ns, "nft"}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// Segments with data: longer than the IPv4 and TCP headers (with the
	// timestamp option) of a bare ACK.
	rules := fmt.Sprintf("table inet %[1]s { chain out { type filter hook output priority 0; tcp dport %[2]d ip length > 52 counter; }; }", table, raftPort)
	if out, err := nft(rules, "-f", "-"); err != nil {
		t.Fatalf("nft in %s: %v: %s", ns, err, out)
	}
	t.Cleanup(func() { _, _ = nft("", "delete", "table", "inet", table) })
	counter := func() int64 {
		out, _ := nft("", "list", "table", "inet", table)
		i := strings.Index(out, "packets ")
		if i < 0 {
			return 0
		}
		n, _ := strconv.ParseInt(strings.Fields(out[i+len("packets "):])[0], 10, 64)
		return n
	}
	for _, who := range []struct {
		label string
		node  int
	}{{"leader", leader}, {"follower", follower}} {
		node := c.Node(who.node)
		pids := map[string]int{"keep-vip-supervisor": node.PID()}
		for _, name := range pluginNames {
			pid, err := node.PluginPID(name)
			if err != nil {
				t.Fatalf("%s: %v", node.ID, err)
			}
			pids[name] = pid
		}
		rpcs0 := counter()
		elector, switches := measureIdle(b, who.label, pids)
		if who.label == "leader" {
			rpcs := counter() - rpcs0
			if rpcs > 0 {
				fmt.Fprintf(b, "%-10s elector: %d Raft RPCs sent in %s (%.0f/s), %.1f µs CPU and %.1f context switches per RPC round trip\n", who.label, rpcs, idleWindow,
					float64(rpcs)/idleWindow.Seconds(), float64(elector.Microseconds())/float64(rpcs), float64(switches)/float64(rpcs))
			}
		}
	}
}

func idleKeepalived(t *testing.T, b *strings.Builder) {
	sys := startKeepalivedFailoverWith(t, 1, true, 2*time.Second)
	k := sys.(*keepalivedFailover)
	holder := failoverHolder(t, sys, 0)
	time.Sleep(5 * time.Second)
	for _, who := range []struct {
		label string
		node  int
	}{{"master", holder}, {"backup", 1 + holder%3}} {
		procs, err := processesInNetns(k.n.NodeNS[who.node-1])
		if err != nil {
			t.Fatal(err)
		}
		pids := map[string]int{}
		for _, p := range procs {
			if isKeepalived(p) {
				name := "keepalived (parent)"
				if slices.ContainsFunc(procs, func(q procInfo) bool { return q.PID == p.PPID && isKeepalived(q) }) {
					name = "keepalived (vrrp)"
				}
				pids[name] = p.PID
			}
		}
		if len(pids) == 0 {
			t.Fatalf("no keepalived in node %d", who.node)
		}
		measureIdle(b, "ka "+who.label, pids)
	}
}
