package packaging

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The operator's story of README "Install, run and operate", under a real
// systemd: a Debian booted with systemd as PID 1 (container_test.go), the
// .deb installed in it, and the unit as shipped.

const (
	sdAddr = "198.18.250.11" // the member, on the container's eth0
	sdPeer = "198.18.250.1"  // the other end of eth0, in the same namespace
	sdVIP  = "198.18.250.100"
	sdUnit = "keep-vip-supervisor"
	// healthFlag is what the member's one check looks for, so the test can
	// make it fail and pass.
	// It is the operator's file, not the package's: outside /etc/keep-vip,
	// which purge removes only when empty.
	healthFlag = "/etc/keep-vip-test-healthy"
	// storyBound bounds every wait of the story.
	storyBound = 30 * time.Second
)

var sdConfig = fmt.Sprintf(`cluster: sdtest
interface: eth0
vip: %s
ChecksInterval: 0.5
prometheus:
  enabled: true
  address: 127.0.0.1:9195
checks:
  - name: flag
    protocol: exec
    command: /usr/bin/test
    args: ["-e", "%s"]
members:
  - id: server1
    address: %s:20000
`, sdVIP, healthFlag, sdAddr)

// sdStatus is what the story reads of `keep-vip-supervisor status --json`.
type sdStatus struct {
	Role      string     `json:"role"`
	HoldsVIP  bool       `json:"holds_vip"`
	Healthy   bool       `json:"healthy"`
	Unhealthy []string   `json:"unhealthy"`
	Plugins   []sdPlugin `json:"plugins"`
}

type sdPlugin struct {
	Name     string `json:"name"`
	Up       bool   `json:"up"`
	PID      int    `json:"pid"`
	Restarts int    `json:"restarts"`
	Error    string `json:"error"`
}

type story struct {
	*container
	t *testing.T
}

func (s story) status() (sdStatus, error) {
	var st sdStatus
	out, err := s.run(20*time.Second, "keep-vip-supervisor", "status", "--json")
	if err != nil {
		return st, fmt.Errorf("%w: %s", err, out)
	}
	return st, json.Unmarshal([]byte(out), &st)
}

// show is one property of the unit (`systemctl show -P`).
func (s story) show(prop string) string {
	out, _ := s.run(10*time.Second, "systemctl", "show", "-P", prop, sdUnit)
	return strings.TrimSpace(out)
}

// vipOnEth0 reads the namespace's eth0 from here.
func (s story) vipOnEth0() bool {
	out, _ := runFor(10*time.Second, nil, "ip", "-n", s.NS, "-o", "addr", "show", "dev", "eth0")
	return strings.Contains(out, " "+sdVIP+"/32 ")
}

// metric is one sample of the member's /metrics, fetched inside the
// container by bash's /dev/tcp (the rootfs has no HTTP client).
func (s story) metric(sample string) string {
	out, _ := s.run(10*time.Second, "bash", "-c",
		`exec 3<>/dev/tcp/127.0.0.1/9195 && printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3 && cat <&3`)
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), sample+" "); ok {
			return v
		}
	}
	return ""
}

// waitLeader waits until the member leads, holds the VIP, and
// `systemctl status` says so.
func (s story) waitLeader(why string) time.Duration {
	s.t.Helper()
	return s.waitFor(storyBound, "leader holding the VIP ("+why+")", func() (bool, string) {
		st, err := s.status()
		text := s.show("StatusText")
		ok := err == nil && st.Role == "leader" && st.HoldsVIP && st.Healthy && s.vipOnEth0() &&
			strings.HasPrefix(text, "leader, holding VIP "+sdVIP)
		return ok, fmt.Sprintf("status %+v %v; Status=%q; VIP on eth0 %v", st, err, text, s.vipOnEth0())
	})
}

// waitUnhealthy waits until the member is out, without the VIP, with a
// reason holding every fragment in status and in systemd's Status=.
func (s story) waitUnhealthy(fragments ...string) string {
	s.t.Helper()
	var text string
	s.waitFor(storyBound, "unhealthy: "+strings.Join(fragments, ", "), func() (bool, string) {
		st, err := s.status()
		text = s.show("StatusText")
		why := strings.Join(st.Unhealthy, "; ")
		ok := err == nil && !st.Healthy && !st.HoldsVIP && !s.vipOnEth0() && strings.HasPrefix(text, "unhealthy (")
		for _, f := range fragments {
			ok = ok && strings.Contains(why, f) && strings.Contains(text, f)
		}
		return ok, fmt.Sprintf("status %+v %v; Status=%q", st, err, text)
	})
	return text
}

// journal is the unit's journal as JSON objects, with journalctl's
// further arguments (matches, --since ...).
func (s story) journal(args ...string) []map[string]any {
	s.t.Helper()
	out := s.must(append([]string{"journalctl", "--no-pager", "-o", "json", "-u", sdUnit}, args...)...)
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(l, "{") {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				s.t.Fatalf("journalctl -o json: %v: %s", err, l)
			}
			lines = append(lines, m)
		}
	}
	return lines
}

func field(m map[string]any, k string) string { v, _ := m[k].(string); return v }

// step runs one part of the story and logs how long it took.
func (s story) step(name string, f func()) {
	s.t.Helper()
	start := time.Now()
	f()
	s.t.Logf("step %-28s %s", name, time.Since(start).Round(time.Millisecond))
}

// dropIn puts a drop-in for the unit in place (content "" removes it) and
// reloads systemd.
func (s story) dropIn(name, content string) {
	s.t.Helper()
	p := "/etc/systemd/system/" + sdUnit + ".service.d/" + name + ".conf"
	if content == "" {
		_ = os.Remove(filepath.Join(s.Root, p))
	} else {
		s.write(p, "[Service]\n"+content, 0o644)
	}
	s.must("systemctl", "daemon-reload")
}

// TestSystemdOperatorStory boots Debian with systemd, installs the .deb and
// follows the README as an operator would: install starts nothing, enable
// --now is READY with the VIP on the interface, status, the journal's
// fields, reload accepted and refused, unhealthy and back (a failing check,
// a VIP the member may not add, a corrupt Raft store), kill -9 of the
// supervisor and of a plugin, the watchdog, stop, the unit's exposure and
// purge. It needs root, debootstrap and systemd-nspawn (make deps).
func TestSystemdOperatorStory(t *testing.T) {
	deb := pkg(t, "keep-vip_*.deb")
	if os.Geteuid() != 0 {
		t.Skip("boots a container: needs root")
	}
	need(t, "debootstrap", "systemd-nspawn", "nsenter", "ip")
	start := time.Now()
	rootfs := debianRootfs(t)
	t.Logf("rootfs ready after %s", time.Since(start).Round(time.Millisecond))
	boot := time.Now()
	c := bootContainer(t, rootfs, sdAddr, sdPeer)
	t.Logf("container %s booted (systemd running) in %s", c.NS, time.Since(boot).Round(time.Millisecond))
	s := story{c, t}
	defer func() { t.Logf("story took %s in all", time.Since(start).Round(time.Millisecond)) }()

	s.step("install", func() {
		s.write("/var/cache/keep-vip-test/"+filepath.Base(deb), mustRead(t, deb), 0o644)
		s.must("dpkg", "-i", "/var/cache/keep-vip-test/"+filepath.Base(deb))
		if st := s.show("ActiveState"); st != "inactive" {
			t.Errorf("after install the unit is %s, want inactive", st)
		}
		if out, _ := s.run(10*time.Second, "systemctl", "is-enabled", sdUnit); strings.TrimSpace(out) != "disabled" {
			t.Errorf("after install is-enabled says %q, want disabled", out)
		}
		for _, p := range []string{"/var/lib/keep-vip", "/var/lib/private/keep-vip"} {
			if s.exists(p) {
				t.Errorf("the install made %s; it is the unit's StateDirectory", p)
			}
		}
	})

	s.step("enable --now", func() {
		s.write("/etc/keep-vip/config.yaml", sdConfig, 0o644)
		s.write(healthFlag, "", 0o644)
		t0 := time.Now()
		s.must("systemctl", "enable", "--now", sdUnit)
		t.Logf("systemctl enable --now returned (READY=1) after %s; Status=%q", time.Since(t0).Round(time.Millisecond), s.show("StatusText"))
		took := s.waitLeader("first start")
		t.Logf("VIP %s on eth0, leader, %s after READY", sdVIP, took.Round(time.Millisecond))
	})

	s.step("status", func() {
		out := s.must("keep-vip-supervisor", "status")
		for _, want := range []string{"role         leader", "held by this member", "health       healthy"} {
			if !strings.Contains(out, want) {
				t.Errorf("status lacks %q:\n%s", want, out)
			}
		}
	})

	s.step("scheduling", func() {
		// The unit grants CAP_SYS_NICE, sched_setattr and realtime: every
		// thread of the supervisor, elector and announcer runs SCHED_RR 1
		// under RLIMIT_RTTIME 200ms/1s, but one of the supervisor's (the
		// thread it starts the plugins and hooks from; the elector and the
		// announcer are raised once configured); the
		// balancer's and checker's run in the normal class at nice 0.
		if len(s.journal("MESSAGE=scheduling: realtime for the supervisor, elector and announcer")) == 0 {
			t.Errorf("journal: no \"scheduling: realtime\" line:\n%s",
				grepLines(s.must("journalctl", "--no-pager", "-u", sdUnit, "-o", "cat"), "scheduling"))
		}
		// Per thread: comm (15 characters at most), then stat's fields from
		// the state on (nice is field 19, rt_priority 40, policy 41).
		out := s.must("sh", "-c", `for f in /proc/[0-9]*/task/[0-9]*/stat; do `+
			`l=$(cat "$f" 2>/dev/null) || continue; c=${l#*(}; echo "${c%%)*} ${l##*) }"; done`)
		type class struct{ policy, rtprio, nice string }
		seen := map[string]map[class]int{}
		for _, l := range strings.Split(out, "\n") {
			f := strings.Fields(l)
			if len(f) < 40 || !strings.HasPrefix(f[0], "keep-vip-") {
				continue
			}
			c := class{policy: f[39], rtprio: f[38], nice: f[17]}
			if seen[f[0]] == nil {
				seen[f[0]] = map[class]int{}
			}
			seen[f[0]][c]++
		}
		rr, other := class{policy: "2", rtprio: "1", nice: "0"}, class{policy: "0", rtprio: "0", nice: "0"}
		for comm, want := range map[string]class{"keep-vip-superv": rr, "keep-vip-electo": rr,
			"keep-vip-announ": rr, "keep-vip-balanc": other, "keep-vip-checke": other} {
			got := maps.Clone(seen[comm])
			if comm == "keep-vip-superv" && got[other] == 1 {
				delete(got, other) // the spawner thread
			}
			if len(got) != 1 || got[want] == 0 {
				t.Errorf("%s's threads (policy, rt priority, nice: count) %v, want all %v", comm, seen[comm], want)
			}
		}
		// RLIMIT_RTTIME, soft and hard in µs, of each realtime process.
		lim := s.must("sh", "-c", `for p in $(pgrep '^keep-vip-'); do echo "$(cat /proc/$p/comm) $(grep 'Max realtime timeout' /proc/$p/limits)"; done`)
		for _, comm := range []string{"keep-vip-superv", "keep-vip-electo", "keep-vip-announ"} {
			if !regexp.MustCompile(`(?m)^` + comm + ` Max realtime timeout\s+200000\s+1000000\s+us`).MatchString(lim) {
				t.Errorf("%s: RLIMIT_RTTIME not 200000/1000000 us:\n%s", comm, lim)
			}
		}
	})

	s.step("journal fields", func() {
		el := s.journal("PLUGIN=elector")
		if len(el) == 0 {
			t.Fatal("journalctl -u keep-vip-supervisor PLUGIN=elector: nothing")
		}
		for _, l := range el {
			if field(l, "PLUGIN") != "elector" || field(l, "MEMBER") != "server1" {
				t.Errorf("PLUGIN=elector line %v", l)
			}
		}
		// ROLE=leader finds the elector's line and the supervisor's.
		who := map[string]bool{}
		for _, l := range s.journal("ROLE=leader") {
			who[field(l, "PLUGIN")] = true
		}
		if !who["elector"] || !who[""] {
			t.Errorf("ROLE=leader lines of the elector %v and of the supervisor %v, want both", who["elector"], who[""])
		}
		boot := s.must("journalctl", "--no-pager", "-b", "-o", "cat")
		for _, bad := range []string{"pre-existing", "DynamicUser= turned off"} {
			if strings.Contains(boot, bad) {
				t.Errorf("the journal of the first start says %q:\n%s", bad, grepLines(boot, bad))
			}
		}
		if !s.exists("/var/lib/private/keep-vip") {
			t.Errorf("no /var/lib/private/keep-vip after the first start")
		}
	})

	s.step("reload accepted, refused", func() {
		withDrain := sdConfig + "drainTimeout: 3s\n"
		s.write("/etc/keep-vip/config.yaml", withDrain, 0o644)
		if out, err := s.run(storyBound, "systemctl", "reload", sdUnit); err != nil {
			t.Errorf("systemctl reload of a good config: %v\n%s", err, out)
		}
		s.write("/etc/keep-vip/config.yaml", withDrain+"bogusKey: 1\n", 0o644)
		out, err := s.run(storyBound, "systemctl", "reload", sdUnit)
		if exitCode(err) == 0 {
			t.Errorf("systemctl reload of a config with bogusKey exited 0:\n%s", out)
		} else {
			t.Logf("refused reload: exit %d", exitCode(err))
		}
		var refused []string
		for _, l := range s.journal("MESSAGE=reload refused") {
			refused = append(refused, field(l, "ERROR"))
		}
		if len(refused) == 0 || !strings.Contains(refused[0], "bogusKey") {
			t.Errorf("journal: reload refused lines %q, want one naming bogusKey", refused)
		}
		if st := s.show("ActiveState"); st != "active" {
			t.Errorf("after a refused reload the unit is %s", st)
		}
		s.write("/etc/keep-vip/config.yaml", sdConfig, 0o644)
		s.must("systemctl", "reload", sdUnit)
	})

	s.step("unhealthy and back", func() {
		_ = os.Remove(filepath.Join(s.Root, healthFlag))
		text := s.waitUnhealthy("checks failing: flag")
		t.Logf("Status=%q", text)
		if v := s.metric(`keep_vip_supervisor_unhealthy{reason="checks"}`); v != "1" {
			t.Errorf(`keep_vip_supervisor_unhealthy{reason="checks"} = %q, want 1`, v)
		}
		s.write(healthFlag, "", 0o644)
		s.waitLeader("checks pass again")
	})

	s.step("VIP cannot be held", func() {
		// As in a container or a drop-in that does not grant it: no
		// CAP_NET_ADMIN.
		s.dropIn("nocap", "CapabilityBoundingSet=\nCapabilityBoundingSet=CAP_NET_RAW CAP_NET_BIND_SERVICE\n"+
			"AmbientCapabilities=\nAmbientCapabilities=CAP_NET_RAW CAP_NET_BIND_SERVICE\n")
		since := s.sinceNow()
		s.must("systemctl", "restart", sdUnit)
		text := s.waitUnhealthy("cannot hold the VIP", "operation not permitted")
		t.Logf("Status=%q", text)
		if v := s.metric(`keep_vip_supervisor_unhealthy{reason="vip"}`); v != "1" {
			t.Errorf(`keep_vip_supervisor_unhealthy{reason="vip"} = %q, want 1`, v)
		}
		if v := s.metric("keep_vip_supervisor_healthy"); v != "0" {
			t.Errorf("keep_vip_supervisor_healthy = %q, want 0", v)
		}
		lines := s.journal("--since", since, "MESSAGE=cannot hold the VIP: releasing it and leaving the election")
		if len(lines) == 0 || field(lines[0], "VIP") != sdVIP || field(lines[0], "PLUGIN") != "announcer" ||
			!strings.Contains(field(lines[0], "ERROR"), "operation not permitted") {
			t.Errorf("journal: %v, want a \"cannot hold the VIP\" line with VIP, PLUGIN and the error", lines)
		}
		s.dropIn("nocap", "")
		s.must("systemctl", "restart", sdUnit)
		s.waitLeader("CAP_NET_ADMIN back")
	})

	s.step("corrupt dataDir", func() {
		s.must("systemctl", "stop", sdUnit)
		db := "/var/lib/private/keep-vip/raft.db"
		s.write(db, strings.Repeat("not a bolt database\n", 512), 0o600)
		dir, err := os.Stat(filepath.Join(s.Root, filepath.Dir(db)))
		if err != nil {
			t.Fatal(err)
		}
		uid := dir.Sys().(*syscall.Stat_t).Uid
		if err := os.Chown(filepath.Join(s.Root, db), int(uid), int(uid)); err != nil {
			t.Fatal(err)
		}
		// The start is not held up: READY=1 comes with the reason.
		s.must("systemctl", "start", sdUnit)
		text := s.waitUnhealthy("elector cannot start", "invalid database")
		t.Logf("Status=%q", text)
		if v := s.metric(`keep_vip_supervisor_unhealthy{reason="elector_start"}`); v != "1" {
			t.Errorf(`keep_vip_supervisor_unhealthy{reason="elector_start"} = %q, want 1`, v)
		}
		s.must("systemctl", "stop", sdUnit)
		_ = os.Remove(filepath.Join(s.Root, db))
		s.must("systemctl", "start", sdUnit)
		s.waitLeader("store removed (one member)")
	})

	s.step("kill -9 supervisor", func() {
		since := s.sinceNow()
		took := s.signalMain("-9")
		s.waitLeader("after kill -9 of the supervisor")
		t.Logf("restarted %s after kill -9 (RestartSec=2s)", took.Round(time.Millisecond))
		if len(s.journal("--since", since, "MESSAGE=VIPs removed")) == 0 {
			t.Errorf("no \"VIPs removed\" line: ExecStopPost's cleanup did not run after kill -9")
		}
	})

	s.step("kill -9 announcer", func() {
		st, err := s.status()
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(st.Plugins, func(p sdPlugin) bool { return p.Name == "announcer" })
		if i < 0 || st.Plugins[i].PID == 0 {
			t.Fatalf("no announcer pid in %+v", st)
		}
		s.must("kill", "-9", strconv.Itoa(st.Plugins[i].PID))
		s.waitFor(storyBound, "the announcer restarted", func() (bool, string) {
			st, err := s.status()
			if err != nil {
				return false, err.Error()
			}
			for _, p := range st.Plugins {
				if p.Name == "announcer" {
					return p.Up && p.Restarts >= 1, fmt.Sprintf("%+v", p)
				}
			}
			return false, "no announcer"
		})
		s.waitLeader("after kill -9 of the announcer")
	})

	s.step("one journal vocabulary", func() {
		lines := s.journal()
		n := 0
		for _, l := range lines {
			if field(l, "_PID") == "1" {
				continue // systemd's own lines about the unit
			}
			n++
			var why []string
			if field(l, "MEMBER") != "server1" || field(l, "CLUSTER") != "sdtest" {
				why = append(why, "MEMBER/CLUSTER")
			}
			for _, k := range []string{"ROLE", "FROM_ROLE"} {
				if v, ok := l[k]; ok && !slices.Contains([]string{"follower", "candidate", "leader", "shutdown", "unknown"}, fmt.Sprint(v)) {
					why = append(why, k+"="+fmt.Sprint(v))
				}
			}
			if _, ok := l["LEADER_ID"]; ok {
				why = append(why, "LEADER_ID")
			}
			if regexp.MustCompile(`(?i)acquir|releas`).MatchString(field(l, "MESSAGE")) && (field(l, "VIP") == "" || field(l, "PLUGIN") == "") {
				why = append(why, "VIP line without VIP and PLUGIN")
			}
			if len(why) > 0 {
				t.Errorf("journal line off the vocabulary (%s): %s %q", strings.Join(why, ", "), field(l, "_COMM"), field(l, "MESSAGE"))
			}
		}
		t.Logf("journal: %d lines of the unit's processes, every one with MEMBER and CLUSTER", n)
		if n < 50 {
			t.Errorf("only %d journal lines: not a full run", n)
		}
	})

	s.step("watchdog", func() {
		// 3s instead of 30s, to keep the test short.
		s.dropIn("watchdog", "WatchdogSec=3s\n")
		s.must("systemctl", "restart", sdUnit)
		s.waitLeader("restart with WatchdogSec=3s")
		since := s.sinceNow()
		took := s.signalMain("-STOP")
		t.Logf("a SIGSTOPped supervisor restarted %s later", took.Round(time.Millisecond))
		out := s.must("journalctl", "--no-pager", "-o", "cat", "-u", sdUnit, "--since", since)
		if !strings.Contains(out, "Watchdog timeout") {
			t.Errorf("no watchdog timeout in the journal:\n%s", tail(out, 20))
		}
		if !strings.Contains(out, "goroutine ") {
			t.Errorf("no goroutine dump (SIGABRT) in the journal")
		}
		s.dropIn("watchdog", "")
		s.waitLeader("after the watchdog")
	})

	s.step("stop", func() {
		s.must("systemctl", "stop", sdUnit)
		if s.vipOnEth0() {
			t.Errorf("VIP still on eth0 after systemctl stop")
		}
		if out, err := s.run(10*time.Second, "pgrep", "-a", "keep-vip"); err == nil {
			t.Errorf("keep-vip processes after stop:\n%s", out)
		}
	})

	s.step("exposure", func() {
		out := s.must("systemd-analyze", "security", sdUnit)
		m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("systemd-analyze security:\n%s", out)
		}
		t.Logf("systemd-analyze security %s: exposure %s (booted)", sdUnit, m[1])
		readme := string(mustRead(t, "../README.md"))
		q := regexp.MustCompile(`rates its exposure ([0-9.]+)`).FindStringSubmatch(readme)
		if q == nil || q[1] != m[1] {
			t.Errorf("README quotes exposure %v, measured %s: the README must say what is measured", q, m[1])
		}
	})

	s.step("purge", func() {
		s.must("dpkg", "--purge", "keep-vip")
		for _, p := range []string{"/etc/keep-vip", "/usr/bin/keep-vip-supervisor", "/usr/libexec/keep-vip",
			"/lib/systemd/system/keep-vip-supervisor.service", "/var/lib/keep-vip", "/var/lib/private/keep-vip",
			"/etc/systemd/system/multi-user.target.wants/keep-vip-supervisor.service",
			"/etc/systemd/system/keep-vip-supervisor.service.d", "/usr/share/doc/keep-vip"} {
			if s.exists(p) {
				t.Errorf("purge left %s", p)
			}
		}
		if out, err := s.run(10*time.Second, "systemctl", "cat", sdUnit); err == nil {
			t.Errorf("systemd still knows the unit after purge:\n%s", out)
		}
	})
}

// signalMain sends the supervisor signal (a kill option) and waits until
// systemd runs a new one.
func (s story) signalMain(signal string) time.Duration {
	s.t.Helper()
	old := s.show("MainPID")
	s.must("kill", signal, old)
	return s.waitFor(storyBound, "a new supervisor after kill "+signal, func() (bool, string) {
		pid := s.show("MainPID")
		return pid != old && pid != "0" && s.show("ActiveState") == "active", "MainPID " + pid
	})
}

// sinceNow is the container's clock now, for journalctl --since.
func (s story) sinceNow() string {
	out := s.must("date", "+%Y-%m-%d %H:%M:%S")
	return strings.TrimSpace(out)
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
