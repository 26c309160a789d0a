package supervisor

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/keep-vip/keep-vip/rpc"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
	"github.com/keep-vip/keep-vip/supervisor/config"
)

// opsPolicy is testPolicy with ops attached: hooks per hooks (argv by
// event), maintenance kept in a temporary data directory, an admin socket.
func opsPolicy(t *testing.T, hooks map[string][]string, timeout time.Duration) (*policy, *callLog) {
	t.Helper()
	p, j := testPolicy(t)
	dir := t.TempDir()
	p.s.cfg.DataDir = filepath.Join(dir, "data")
	p.s.cfg.AdminSocket = filepath.Join(dir, "admin.sock")
	p.s.cfg.Hooks = config.Hooks{Timeout: timeout, Acquire: hooks["acquire"], Release: hooks["release"], Unhealthy: hooks["unhealthy"]}
	p.s.local = p.s.cfg.Members[0]
	p.s.metrics = newMetrics(p.s.cfg, p.s.local)
	if err := p.s.startOps(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.s.stopOps)
	return p, j
}

func healthyLeader(p *policy, j *callLog) {
	for _, ev := range []event{{kind: rpc.KindChecker, gen: 1, up: true, impl: fakeReporter{}}, health(true),
		{kind: rpc.KindElector, gen: 1, up: true, impl: fakeElector{j: j}}, leader(1)} {
		p.handle(ev)
	}
}

// hookScript writes a hook that appends its arguments and KEEPVIP_
// environment to out, one run per line.
func hookScript(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hook.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func waitFile(t *testing.T, path string, lines int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		raw, _ := os.ReadFile(path)
		got := strings.Split(strings.TrimSpace(string(raw)), "\n")
		if len(raw) > 0 && len(got) >= lines {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: want %d lines, have %q", path, lines, raw)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestHooksFireOnTransitions(t *testing.T) {
	out := filepath.Join(t.TempDir(), "runs")
	script := hookScript(t, `echo "$* event=$KEEPVIP_EVENT vip=$KEEPVIP_VIP member=$KEEPVIP_MEMBER reason=$KEEPVIP_REASON" >> `+out)
	argv := []string{script, "--flag"}
	p, j := opsPolicy(t, map[string][]string{"acquire": argv, "release": argv, "unhealthy": argv}, 5*time.Second)
	healthyLeader(p, j)
	p.handle(event{kind: rpc.KindChecker, gen: 1, health: &pb.Health{Healthy: false, Checks: []*pb.CheckResult{
		{Name: "web", Address: "127.0.0.1:80", Error: "connection refused"}, {Name: "db", Healthy: true}}}})
	got := waitFile(t, out, 3)
	want := []string{
		"--flag acquire event=acquire vip=198.18.0.100 member=a reason=",
		"--flag release event=release vip=198.18.0.100 member=a reason=",
		"--flag unhealthy event=unhealthy vip=198.18.0.100 member=a reason=checks failing: web",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("hook runs:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if c := strings.Join(j.calls, " "); c != "acquire release transfer" {
		t.Errorf("calls %q", c)
	}
	st := p.s.ops.status()
	if len(st.Hooks) != 3 || st.Hooks[0].Runs != 1 || st.Hooks[0].Failures != 0 {
		t.Errorf("hook counts in status: %+v", st.Hooks)
	}
}

// A hook that hangs (and leaves a child behind) neither delays the policy
// nor outlives its timeout; it counts as a failure.
func TestHookTimeoutKillsGroupAndNeverBlocksPolicy(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	script := hookScript(t, "sleep 60 & echo $! > "+pidFile+"\nsleep 60")
	p, j := opsPolicy(t, map[string][]string{"acquire": {script}, "release": {script}}, 300*time.Millisecond)
	start := time.Now()
	healthyLeader(p, j)
	p.handle(follower(1))
	healthyLeader(p, j)
	if took := time.Since(start); took > 200*time.Millisecond {
		t.Fatalf("policy passes took %s with hanging hooks", took)
	}
	failures := p.s.ops.hooks.failures.WithLabelValues("acquire")
	deadline := time.Now().Add(15 * time.Second)
	for testutil.ToFloat64(failures) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("acquire hook failures %g, want 2", testutil.ToFloat64(failures))
		}
		time.Sleep(20 * time.Millisecond)
	}
	raw, _ := os.ReadFile(pidFile)
	var pid int
	for _, c := range strings.TrimSpace(string(raw)) {
		pid = pid*10 + int(c-'0')
	}
	if pid > 0 {
		for i := 0; syscall.Kill(pid, 0) == nil; i++ {
			if i > 100 {
				t.Fatalf("the hook's background child %d outlived the timeout", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if v := testutil.ToFloat64(p.s.ops.hooks.failures.WithLabelValues("release")); v != 1 {
		t.Errorf("release hook failures %g, want 1", v)
	}
}

func TestMaintenance(t *testing.T) {
	p, j := opsPolicy(t, nil, time.Second)
	healthyLeader(p, j)
	if !p.held {
		t.Fatal("healthy leader should hold the VIP")
	}
	resp, err := AdminCall(p.s.cfg.AdminSocket, AdminRequest{Command: AdminStatus}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if st := resp.Status; st.Role != "leader" || st.Term != 2 || !st.HoldsVIP || st.Maintenance.On || !st.Healthy {
		t.Fatalf("status of a healthy leader: %+v", st)
	}

	// On the loop, as the admin socket would have it.
	on := &adminRequest{req: AdminRequest{Command: AdminMaintenance, On: ptr(true), Reason: "kernel update"}, reply: make(chan error, 1)}
	p.handle(event{admin: on})
	if err := <-on.reply; err != nil {
		t.Fatal(err)
	}
	if c := strings.Join(j.calls, " "); c != "acquire release transfer" {
		t.Errorf("maintenance on: calls %q, want release then transfer", c)
	}
	if p.held || p.s.runners[rpc.KindElector].wanted() {
		t.Errorf("maintenance on: held %v, elector wanted %v", p.held, p.s.runners[rpc.KindElector].wanted())
	}
	st := p.s.ops.status()
	if !st.Maintenance.On || st.Maintenance.Reason != "kernel update" || st.HoldsVIP || st.InElection {
		t.Errorf("status in maintenance: %+v", st)
	}
	// Healthy checks do not bring it back.
	p.handle(health(true))
	if p.s.runners[rpc.KindElector].wanted() {
		t.Error("a healthy verdict ended maintenance")
	}
	// It is kept on disk: a new supervisor starts in maintenance.
	if m, err := loadMaintenance(p.s.cfg.MaintenancePath()); err != nil || !m.On || m.Reason != "kernel update" {
		t.Errorf("persisted maintenance %+v, %v", m, err)
	}

	off := &adminRequest{req: AdminRequest{Command: AdminMaintenance, On: ptr(false)}, reply: make(chan error, 1)}
	p.handle(event{admin: off})
	if err := <-off.reply; err != nil {
		t.Fatal(err)
	}
	if !p.s.runners[rpc.KindElector].wanted() {
		t.Error("maintenance off: elector not wanted")
	}
	if _, err := os.Stat(p.s.cfg.MaintenancePath()); !os.IsNotExist(err) {
		t.Errorf("maintenance off left %s: %v", p.s.cfg.MaintenancePath(), err)
	}
}

func TestAdminSocket(t *testing.T) {
	p, _ := opsPolicy(t, nil, time.Second)
	path := p.s.cfg.AdminSocket
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("admin socket mode %v, want 0600", st.Mode().Perm())
	}
	// A second supervisor does not take over the socket...
	if _, err := listenAdmin(path, p.s.ops, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "another keep-vip-supervisor") {
		t.Fatalf("second supervisor on %s: %v", path, err)
	}
	// ...but a stale socket, left by a crash, is replaced.
	p.s.ops.admin.ln.Close()
	s3 := &Supervisor{cfg: p.s.cfg, log: zerolog.Nop(), metrics: newMetrics(p.s.cfg, p.s.local), runners: map[string]*runner{}}
	if err := s3.startOps(); err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	defer s3.stopOps()
	if _, err := AdminCall(path, AdminRequest{Command: "frobnicate"}, time.Second); err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Errorf("unknown command: %v", err)
	}
	s3.stopOps()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket left after stop: %v", err)
	}
}

func TestMaintenanceFlagUnreadableKeepsOut(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "maintenance")
	if err := os.WriteFile(path, []byte("not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadMaintenance(path); err == nil {
		t.Fatal("a corrupt flag loads without error")
	}
	if m, err := loadMaintenance(filepath.Join(dir, "none")); err != nil || m.On {
		t.Fatalf("no flag: %+v %v", m, err)
	}
}

func ptr[T any](v T) *T { return &v }
