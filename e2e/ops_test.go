package e2e

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// opsStatus is the part of `keep-vip-supervisor status --json` the tests
// read.
type opsStatus struct {
	Member      string   `json:"member"`
	PID         int      `json:"pid"`
	Ready       bool     `json:"ready"`
	Role        string   `json:"role"`
	Term        uint64   `json:"term"`
	Leader      string   `json:"leader"`
	VIPHolder   string   `json:"vip_holder"`
	HoldsVIP    bool     `json:"holds_vip"`
	InElection  bool     `json:"in_election"`
	Healthy     bool     `json:"healthy"`
	Unhealthy   []string `json:"unhealthy"`
	Maintenance struct {
		On     bool   `json:"on"`
		Reason string `json:"reason"`
	} `json:"maintenance"`
	Checks []struct {
		Name    string `json:"name"`
		Healthy bool   `json:"healthy"`
	} `json:"checks"`
	Plugins []struct {
		Name     string `json:"name"`
		Up       bool   `json:"up"`
		PID      int    `json:"pid"`
		Restarts int    `json:"restarts"`
		Error    string `json:"error"`
	} `json:"plugins"`
	Hooks []struct {
		Event    string `json:"event"`
		Runs     int64  `json:"runs"`
		Failures int64  `json:"failures"`
	} `json:"hooks"`
	Raft *struct {
		State       string `json:"state"`
		Voters      string `json:"voters"`
		Nonvoters   string `json:"nonvoters"`
		Differences string `json:"differences"`
	} `json:"raft"`
}

// supervisorCLI runs `keep-vip-supervisor args...` for node (from the root
// namespace: the admin socket is a file) and returns stdout.
func (n *Node) supervisorCLI(args ...string) (string, error) {
	args = append(args, "-c", n.ConfigPath)
	cmd := exec.Command(n.bins.Supervisor(), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		return "", err
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return out.String(), fmt.Errorf("keep-vip-supervisor %s: %v: %s", strings.Join(args, " "), err, errb.String())
		}
		return out.String(), nil
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		return "", fmt.Errorf("keep-vip-supervisor %s: no answer in 30s", strings.Join(args, " "))
	}
}

// Status is the node's `status --json`.
func (n *Node) Status() (opsStatus, error) {
	out, err := n.supervisorCLI("status", "--json")
	if err != nil {
		return opsStatus{}, err
	}
	var st opsStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return opsStatus{}, fmt.Errorf("status --json: %v: %q", err, out)
	}
	return st, nil
}

func (c *Cluster) waitStatus(i int, what string, cond func(st opsStatus) (bool, string)) opsStatus {
	c.t.Helper()
	var last opsStatus
	mustWaitFor(c.t, electionBound, c.Node(i).ID+" status: "+what, func() (bool, string) {
		st, err := c.Node(i).Status()
		if err != nil {
			return false, err.Error()
		}
		last = st
		return cond(st)
	})
	return last
}

// TestStatusMaintenanceAndHooks: status shows each member's role, leader,
// VIP and plugins; maintenance on the leader moves the VIP away and keeps
// the member out of the election, across a supervisor restart, until it is
// turned off, when it rejoins as a follower; acquire and release hooks run.
func TestStatusMaintenanceAndHooks(t *testing.T) {
	hookDir := t.TempDir()
	hookLog := filepath.Join(hookDir, "hooks.log")
	hook := filepath.Join(hookDir, "hook.sh")
	script := fmt.Sprintf("#!/bin/sh\necho \"$KEEPVIP_MEMBER $KEEPVIP_EVENT $1 $KEEPVIP_VIP\" >> %s\n", hookLog)
	if err := os.WriteFile(hook, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	c := StartClusterWith(t, 3, func(cfg *NodeConfig) {
		cfg.Extra = fmt.Sprintf("hooks:\n  timeout: 5s\n  acquire: [%s]\n  release: [%s]\n", hook, hook)
	})
	leader := c.WaitSingleHolder(electionBound, nil)
	ln := c.Node(leader)
	c.WaitPlugins(leader, processBound)

	// Status of every member agrees on the leader.
	for i := 1; i <= 3; i++ {
		st := c.waitStatus(i, "settled with leader "+ln.ID, func(st opsStatus) (bool, string) {
			return st.Ready && st.Leader == ln.ID && len(st.Checks) == 1 && st.Checks[0].Healthy,
				fmt.Sprintf("ready %v role %s leader %q checks %+v", st.Ready, st.Role, st.Leader, st.Checks)
		})
		wantRole := "follower"
		if i == leader {
			wantRole = "leader"
		}
		if st.Role != wantRole || st.VIPHolder != ln.ID || st.HoldsVIP != (i == leader) || !st.InElection || st.Term == 0 || st.Maintenance.On {
			t.Errorf("%s status: %+v", c.Node(i).ID, st)
		}
		if st.PID != c.Node(i).PID() {
			t.Errorf("%s status pid %d, supervisor pid %d", c.Node(i).ID, st.PID, c.Node(i).PID())
		}
		for _, p := range st.Plugins {
			want, err := c.Node(i).PluginPID("keep-vip-" + p.Name)
			if err != nil || !p.Up || p.PID != want || p.Restarts != 0 {
				t.Errorf("%s plugin %s in status: %+v; pid seen %d (%v)", c.Node(i).ID, p.Name, p, want, err)
			}
		}
	}
	human, err := ln.supervisorCLI("status")
	if err != nil || !strings.Contains(human, "leader, term") || !strings.Contains(human, "held by this member") {
		t.Errorf("status for people: %v\n%s", err, human)
	}
	t.Logf("%s status:\n%s", ln.ID, human)

	// Maintenance on the leader: it gives the VIP up before the command
	// returns, and another member takes it.
	out, err := ln.supervisorCLI("maintenance", "on", "--reason", "e2e")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("maintenance on: %s", strings.TrimSpace(out))
	if held, err := c.NodeHoldsVIP(leader); err != nil || held {
		t.Errorf("%s still holds the VIP after maintenance on returned (%v)", ln.ID, err)
	}
	next := c.WaitSingleHolder(electionBound, func(i int) bool { return i != leader })
	st := c.waitStatus(leader, "in maintenance, out of the election", func(st opsStatus) (bool, string) {
		return st.Maintenance.On && st.Role == "out" && !st.InElection && !st.HoldsVIP, fmt.Sprintf("%+v", st)
	})
	if st.Maintenance.Reason != "e2e" {
		t.Errorf("maintenance reason %q", st.Maintenance.Reason)
	}
	if _, err := ln.PluginPID("keep-vip-elector"); err == nil {
		t.Errorf("%s in maintenance still runs its elector", ln.ID)
	}

	// It stays out across a restart of its supervisor.
	ln.Stop()
	ln.startSupervisor()
	c.waitStatus(leader, "in maintenance after a restart", func(st opsStatus) (bool, string) {
		return st.Ready && st.Maintenance.On && !st.InElection, fmt.Sprintf("%+v", st)
	})
	time.Sleep(2 * time.Second)
	if hs, err := c.VIPHolders(); err != nil || len(hs) != 1 || hs[0] != next {
		t.Errorf("VIP holders %v (%v) with %s in maintenance, want [%d]", hs, err, ln.ID, next)
	}

	// Off: it rejoins as a follower of the new leader; the VIP stays put.
	if _, err := ln.supervisorCLI("maintenance", "off"); err != nil {
		t.Fatal(err)
	}
	c.waitStatus(leader, "rejoined as a follower", func(st opsStatus) (bool, string) {
		return !st.Maintenance.On && st.InElection && st.Role == "follower" && st.Leader == c.Node(next).ID,
			fmt.Sprintf("%+v", st)
	})
	if h := c.WaitSingleHolder(electionBound, nil); h != next {
		t.Errorf("VIP moved to node %d after maintenance off, want it to stay on %d", h, next)
	}

	// Hooks: the first leader acquired then released; the next acquired.
	raw, _ := os.ReadFile(hookLog)
	log := string(raw)
	t.Logf("hooks ran:\n%s", log)
	for _, want := range []string{
		fmt.Sprintf("%s acquire acquire %s", ln.ID, c.Net.VIP()),
		fmt.Sprintf("%s release release %s", ln.ID, c.Net.VIP()),
		fmt.Sprintf("%s acquire acquire %s", c.Node(next).ID, c.Net.VIP()),
	} {
		if !strings.Contains(log, want) {
			t.Errorf("hook log lacks %q", want)
		}
	}
}

// TestJournaldFields runs a member with log.format journal; a listener of
// the test's, bind-mounted over /run/systemd/journal/socket in a private
// mount namespace around the supervisor, reads what it sends: native fields
// that `journalctl PLUGIN=elector MEMBER=server1` can match.
func TestJournaldFields(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) not found")
	}
	sockPath := filepath.Join(t.TempDir(), "journal.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_ = ln.SetReadBuffer(4 << 20)
	stand := `set -e
sock=$1; shift
mkdir -p /run/systemd
mount -t tmpfs -o mode=0755 tmpfs /run/systemd
mkdir /run/systemd/journal
touch /run/systemd/journal/socket
mount --bind "$sock" /run/systemd/journal/socket
exec "$@"`
	c := StartClusterWith(t, 1, func(cfg *NodeConfig) {
		cfg.Wrap = []string{"unshare", "--mount", "--propagation", "private", "sh", "-c", stand, "sh", sockPath}
		cfg.Render = func(c NodeConfig, n *Net) string {
			c.Render = nil
			return strings.Replace(c.YAML(n), "log:\n  level: debug\n", "log:\n  level: debug\n  format: journal\n", 1)
		}
	})

	// Read until the elector's lines, a leadership line with its term and
	// the VIP line have come, bounded in time and count.
	seen := map[string]map[string]string{}
	want := map[string]func(f map[string]string) bool{
		"elector line": func(f map[string]string) bool {
			return f["PLUGIN"] == "elector" && f["MEMBER"] == "server1"
		},
		"leadership with term": func(f map[string]string) bool {
			return f["MESSAGE"] == "leadership" && f["ROLE"] == "leader" && f["TERM"] != "" && f["MEMBER"] == "server1"
		},
		"VIP acquired": func(f map[string]string) bool {
			return f["MESSAGE"] == "VIP acquired" && f["VIP"] == c.Net.VIP() && f["PRIORITY"] == "6"
		},
	}
	buf := make([]byte, 1<<16)
	deadline := time.Now().Add(electionBound)
	n := 0
	for ; len(seen) < len(want) && n < 100000 && time.Now().Before(deadline); n++ {
		_ = ln.SetReadDeadline(deadline)
		k, _, err := ln.ReadFromUnix(buf)
		if err != nil {
			break
		}
		f, err := parseJournalNative(buf[:k])
		if err != nil {
			t.Fatalf("datagram %d: %v: %q", n, err, buf[:k])
		}
		if f["SYSLOG_IDENTIFIER"] != "keep-vip-supervisor" || f["MESSAGE"] == "" || f["PRIORITY"] == "" {
			t.Errorf("datagram %d lacks SYSLOG_IDENTIFIER, MESSAGE or PRIORITY: %v", n, f)
		}
		for name, ok := range want {
			if _, done := seen[name]; !done && ok(f) {
				seen[name] = f
				delete(f, "JSON")
				t.Logf("%s: %v", name, f)
			}
		}
	}
	for name := range want {
		if _, ok := seen[name]; !ok {
			t.Errorf("no %s among %d journal datagrams", name, n)
		}
	}
	c.WaitSingleHolder(electionBound, nil)
}

// parseJournalNative decodes journald's native protocol: KEY=value lines,
// or KEY, newline, a little-endian uint64 length, the value and a newline.
func parseJournalNative(b []byte) (map[string]string, error) {
	out := map[string]string{}
	for len(b) > 0 {
		nl := bytes.IndexByte(b, '\n')
		if nl < 0 {
			return nil, fmt.Errorf("unterminated field")
		}
		line := b[:nl]
		b = b[nl+1:]
		if k, v, ok := bytes.Cut(line, []byte("=")); ok {
			out[string(k)] = string(v)
			continue
		}
		if len(b) < 8 {
			return nil, fmt.Errorf("short binary field %s", line)
		}
		size := binary.LittleEndian.Uint64(b[:8])
		b = b[8:]
		if uint64(len(b)) < size+1 {
			return nil, fmt.Errorf("short binary field %s", line)
		}
		out[string(line)] = string(b[:size])
		b = b[size+1:]
	}
	return out, nil
}

// TestUnprivilegedMember runs a member the way the packaged unit does: as
// an unprivileged user holding only CAP_NET_ADMIN, CAP_NET_RAW and
// CAP_NET_BIND_SERVICE as ambient capabilities (the unit's DynamicUser= and
// AmbientCapabilities=), and checks it takes the VIP and answers status.
func TestUnprivilegedMember(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv (util-linux) not found")
	}
	const uid = 65534 // nobody
	caps := "+net_admin,+net_raw,+net_bind_service"
	c := StartClusterWith(t, 1, func(cfg *NodeConfig) {
		cfg.Inner = []string{"setpriv", "--reuid", strconv.Itoa(uid), "--regid", strconv.Itoa(uid), "--clear-groups",
			"--inh-caps", "-all," + caps, "--ambient-caps", caps, "--bounding-set", "-all," + caps, "--no-new-privs"}
		cfg.Render = func(c NodeConfig, n *Net) string {
			// The node's directory, its own user's, as StateDirectory= and
			// RuntimeDirectory= make them; the ones above it traversable.
			dir := filepath.Dir(c.DataDir)
			for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
				if st, err := os.Stat(d); err == nil && st.Mode().Perm()&0o001 == 0 {
					_ = os.Chmod(d, st.Mode().Perm()|0o011)
				}
			}
			for _, d := range []string{dir, c.DataDir} {
				if err := os.Chown(d, uid, uid); err != nil {
					t.Fatal(err)
				}
			}
			c.Render = nil
			return c.YAML(n)
		}
	})
	// The binaries may live under a directory nobody cannot read.
	if err := exec.Command("setpriv", "--reuid", strconv.Itoa(uid), "--regid", strconv.Itoa(uid), "--clear-groups",
		"test", "-x", c.Bins.Supervisor()).Run(); err != nil {
		t.Skipf("%s is not executable by uid %d here", c.Bins.Supervisor(), uid)
	}
	c.WaitSingleHolder(electionBound, nil)
	node := c.Node(1)
	st := c.waitStatus(1, "leader holding the VIP", func(st opsStatus) (bool, string) {
		return st.Ready && st.Role == "leader" && st.HoldsVIP, fmt.Sprintf("%+v", st)
	})
	for _, p := range append([]int{st.PID}, pluginPIDs(st)...) {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(status), "\n") {
			f := strings.Fields(line)
			switch {
			case len(f) > 1 && f[0] == "Uid:" && f[2] != strconv.Itoa(uid):
				t.Errorf("pid %d runs as uid %s, want %d", p, f[2], uid)
			case len(f) > 1 && f[0] == "CapEff:":
				// net_bind_service 10, net_raw 13, net_admin 12.
				if f[1] != "0000000000003400" {
					t.Errorf("pid %d CapEff %s, want only net_admin, net_raw, net_bind_service (0000000000003400)", p, f[1])
				}
			}
		}
	}
	if info, err := os.Stat(node.AdminSocket); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("admin socket %s: %v %v", node.AdminSocket, info, err)
	}
}

func pluginPIDs(st opsStatus) []int {
	var out []int
	for _, p := range st.Plugins {
		if p.PID > 0 {
			out = append(out, p.PID)
		}
	}
	return out
}

// TestSystemdNotify runs a member the way Type=notify and WatchdogSec= do:
// NOTIFY_SOCKET and WATCHDOG_USEC name a socket of the test's, which gets
// READY=1 once the plugins are up, STATUS= lines, WATCHDOG=1 from the
// policy loop, and STOPPING=1 on the way out.
func TestSystemdNotify(t *testing.T) {
	requireRoot(t)
	sockPath := filepath.Join(t.TempDir(), "notify.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	msgs := make(chan string, 1000)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := ln.ReadFromUnix(buf)
			if err != nil {
				close(msgs)
				return
			}
			select {
			case msgs <- string(buf[:n]):
			default:
			}
		}
	}()
	c := StartClusterWith(t, 1, func(cfg *NodeConfig) {
		cfg.Inner = []string{"env", "NOTIFY_SOCKET=" + sockPath, "WATCHDOG_USEC=900000"}
	})
	start := time.Now()
	var ready, leaderStatus time.Time
	feeds := 0
	deadline := time.After(electionBound)
	for feeds < 5 || ready.IsZero() || leaderStatus.IsZero() {
		select {
		case m := <-msgs:
			switch {
			case m == "READY=1":
				ready = time.Now()
				t.Logf("READY=1 %s after start", ready.Sub(start).Round(time.Millisecond))
			case m == "WATCHDOG=1":
				feeds++
			case strings.HasPrefix(m, "STATUS="):
				t.Logf("%s", m)
				if strings.HasPrefix(m, "STATUS=leader, holding VIP "+c.Net.VIP()) {
					leaderStatus = time.Now()
				}
			}
		case <-deadline:
			t.Fatalf("after %s: ready %v, leader status %v, %d watchdog feeds", electionBound, !ready.IsZero(), !leaderStatus.IsZero(), feeds)
		}
	}
	if leaderStatus.Before(ready) {
		t.Errorf("STATUS said leader before READY=1")
	}
	c.Node(1).Stop()
	for m := range msgs {
		if strings.HasPrefix(m, "STOPPING=1") {
			t.Logf("%q", m)
			return
		}
		if len(msgs) == 0 {
			break
		}
	}
	t.Errorf("no STOPPING=1 after SIGTERM")
}
