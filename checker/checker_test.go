package checker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

const (
	testInterval = 50 // ms
	testTimeout  = 40 // ms
	waitFor      = 3 * time.Second
)

// listen opens a TCP listener on 127.0.0.1 that accepts and drops
// connections until the test ends.
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln
}

// closedAddr returns an address on 127.0.0.1 where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func newChecker(t *testing.T) *Checker {
	t.Helper()
	c := New(zerolog.New(zerolog.NewTestWriter(t)))
	t.Cleanup(func() { c.Close() })
	return c
}

// series counts the series of one metric family in c's registry.
func series(t *testing.T, c *Checker, name string) int {
	t.Helper()
	fams, err := c.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			return len(f.GetMetric())
		}
	}
	return 0
}

func tcpCheck(name, addr string) *pb.Check {
	return &pb.Check{Name: name, Protocol: "tcp", Address: addr, TimeoutMs: testTimeout}
}

func configure(t *testing.T, c *Checker, checks ...*pb.Check) {
	t.Helper()
	if err := c.Configure(context.Background(), &pb.CheckerConfig{IntervalMs: testInterval, Checks: checks}); err != nil {
		t.Fatal(err)
	}
}

// watchUntil watches c until a verdict satisfies ok and returns it.
func watchUntil(t *testing.T, c *Checker, ok func(*pb.Health) bool) *pb.Health {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	var got *pb.Health
	errFound := errors.New("found")
	err := c.Watch(ctx, func(h *pb.Health) error {
		if ok(h) {
			got = h
			return errFound
		}
		return nil
	})
	if !errors.Is(err, errFound) {
		t.Fatalf("no matching verdict within %s: %v", waitFor, err)
	}
	return got
}

func result(t *testing.T, h *pb.Health, name string) *pb.CheckResult {
	t.Helper()
	for _, r := range h.Checks {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("no result for check %q in %v", name, h)
	return nil
}

func TestHealthyThenUnhealthy(t *testing.T) {
	a, b := listen(t), listen(t)
	c := newChecker(t)

	if st, _ := c.Status(context.Background()); st.State != StateStarting {
		t.Errorf("state before Configure = %q, want %q", st.State, StateStarting)
	}
	configure(t, c, tcpCheck("a", a.Addr().String()), tcpCheck("b", b.Addr().String()))

	h := watchUntil(t, c, func(*pb.Health) bool { return true })
	if !h.Healthy || len(h.Checks) != 2 {
		t.Fatalf("first verdict = %v, want healthy with 2 checks", h)
	}
	for _, r := range h.Checks {
		if !r.Healthy || r.Error != "" || r.LatencyUs <= 0 {
			t.Errorf("result %v, want healthy with no error and a latency", r)
		}
	}
	if r := result(t, h, "b"); r.Address != b.Addr().String() {
		t.Errorf("address of b = %q, want %q", r.Address, b.Addr())
	}
	st, _ := c.Status(context.Background())
	if st.State != StateHealthy || !strings.HasPrefix(st.Details["check a"], "up tcp ") {
		t.Errorf("status = %v, want healthy with check a up", st)
	}
	if got := testutil.ToFloat64(c.m.up.WithLabelValues("a")); got != 1 {
		t.Errorf("%s{check=a} = %v, want 1", metricCheckUp, got)
	}

	b.Close()
	h = watchUntil(t, c, func(h *pb.Health) bool { return !h.Healthy })
	// The watched connection's end makes the checker dial at once, which
	// can race the listener's close: a handshake the closing socket had
	// already answered is then reset rather than refused. Both name the
	// cause.
	if r := result(t, h, "b"); r.Healthy || !(strings.Contains(r.Error, "refused") || strings.Contains(r.Error, "reset by peer")) {
		t.Errorf("result of b = %v, want unhealthy with connection refused or reset", r)
	}
	if r := result(t, h, "a"); !r.Healthy {
		t.Errorf("result of a = %v, want healthy", r)
	}
	st, _ = c.Status(context.Background())
	if st.State != StateUnhealthy || !strings.HasPrefix(st.Details["check b"], "down tcp ") {
		t.Errorf("status = %v, want unhealthy with check b down", st)
	}
	if got := testutil.ToFloat64(c.m.up.WithLabelValues("b")); got != 0 {
		t.Errorf("%s{check=b} = %v, want 0", metricCheckUp, got)
	}
	if got := testutil.ToFloat64(c.m.failures.WithLabelValues("b")); got < 1 {
		t.Errorf("%s{check=b} = %v, want >= 1", metricCheckFailures, got)
	}
	fams, err := c.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range fams {
		names[f.GetName()] = true
	}
	for _, n := range []string{metricCheckUp, metricCheckDuration, metricCheckFailures} {
		if !names[n] {
			t.Errorf("Gather lacks %s", n)
		}
	}
}

func TestClosedPortIsUnhealthyFromTheStart(t *testing.T) {
	c := newChecker(t)
	configure(t, c, tcpCheck("gone", closedAddr(t)))
	h := watchUntil(t, c, func(*pb.Health) bool { return true })
	if h.Healthy || h.Checks[0].Error == "" {
		t.Errorf("verdict = %v, want unhealthy with an error", h)
	}
}

// slowProber blocks until its context ends, as a connect to a host that
// never answers would, and counts its runs.
type slowProber struct{ runs *atomic.Int64 }

func (p slowProber) Probe(ctx context.Context) (string, error) {
	p.runs.Add(1)
	<-ctx.Done()
	return "", ctx.Err()
}

func TestTimeout(t *testing.T) {
	c := newChecker(t)
	var runs atomic.Int64
	c.probers = map[string]newProber{
		"slow": func(*pb.Check) (prober, error) { return slowProber{&runs}, nil },
	}
	configure(t, c, &pb.Check{Name: "slow", Protocol: "slow", TimeoutMs: 10})
	h := watchUntil(t, c, func(*pb.Health) bool { return true })
	r := h.Checks[0]
	if h.Healthy || !strings.Contains(r.Error, "deadline") {
		t.Errorf("verdict = %v, want unhealthy by deadline", h)
	}
	if r.LatencyUs < 10_000 || r.LatencyUs > testInterval*1000 {
		t.Errorf("latency = %dµs, want about the 10ms timeout", r.LatencyUs)
	}
}

func TestWatchFanOutAndSlowWatcher(t *testing.T) {
	c := newChecker(t)
	configure(t, c, tcpCheck("a", listen(t).Addr().String()))

	// A watcher that blocks in send must hold up neither the rounds nor the
	// other watchers.
	ctx, cancel := context.WithCancel(context.Background())
	release := make(chan struct{})
	slowDone := make(chan error, 1)
	var slowSends atomic.Int64
	go func() {
		slowDone <- c.Watch(ctx, func(*pb.Health) error {
			slowSends.Add(1)
			<-release
			return nil
		})
	}()

	var fast [2]atomic.Int64
	fastDone := make(chan error, len(fast))
	for i := range fast {
		go func() {
			fastDone <- c.Watch(ctx, func(*pb.Health) error {
				fast[i].Add(1)
				return nil
			})
		}()
	}
	deadline := time.Now().Add(waitFor)
	for fast[0].Load() < 5 || fast[1].Load() < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("fast watchers got %d and %d verdicts, want 5 each", fast[0].Load(), fast[1].Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := slowSends.Load(); n != 1 {
		t.Errorf("slow watcher is in send %d times, want 1", n)
	}

	// Released after many rounds, the slow watcher gets only the newest
	// verdict, not the backlog.
	close(release)
	time.Sleep(testInterval * time.Millisecond / 2)
	if n := slowSends.Load(); n > 3 {
		t.Errorf("slow watcher got %d verdicts after release, want the latest only", n)
	}
	cancel()
	for range 3 {
		select {
		case err := <-fastDone:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Watch = %v, want context.Canceled", err)
			}
		case err := <-slowDone:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Watch = %v, want context.Canceled", err)
			}
		case <-time.After(waitFor):
			t.Fatal("Watch did not end with its context")
		}
	}
}

func TestWatchSendErrorEndsWatch(t *testing.T) {
	c := newChecker(t)
	configure(t, c, tcpCheck("a", listen(t).Addr().String()))
	boom := errors.New("boom")
	err := c.Watch(context.Background(), func(*pb.Health) error { return boom })
	if !errors.Is(err, boom) {
		t.Errorf("Watch = %v, want %v", err, boom)
	}
}

func TestReconfigureReplacesChecks(t *testing.T) {
	c := newChecker(t)
	configure(t, c, tcpCheck("old", listen(t).Addr().String()))
	watchUntil(t, c, func(*pb.Health) bool { return true })

	configure(t, c, tcpCheck("new1", listen(t).Addr().String()), tcpCheck("new2", closedAddr(t)))
	h := watchUntil(t, c, func(h *pb.Health) bool { return len(h.Checks) == 2 })
	if h.Checks[0].Name != "new1" || h.Checks[1].Name != "new2" || h.Healthy {
		t.Errorf("verdict = %v, want new1 up and new2 down", h)
	}
	st, _ := c.Status(context.Background())
	if _, ok := st.Details["check old"]; ok {
		t.Errorf("status still shows the replaced check: %v", st)
	}
	if n := series(t, c, metricCheckUp); n != 2 {
		t.Errorf("%s has %d series, want 2 (old one forgotten)", metricCheckUp, n)
	}
}

func TestCloseEndsWatchAndLoop(t *testing.T) {
	c := newChecker(t)
	configure(t, c, tcpCheck("a", listen(t).Addr().String()))
	watchUntil(t, c, func(*pb.Health) bool { return true })

	done := make(chan error, 1)
	go func() { done <- c.Watch(context.Background(), func(*pb.Health) error { return nil }) }()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("Watch after Close = %v, want ErrClosed", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Watch did not end on Close")
	}
	if c.stopLoops != nil {
		t.Error("loop still registered after Close")
	}
	if err := c.Configure(context.Background(), &pb.CheckerConfig{IntervalMs: 100}); !errors.Is(err, ErrClosed) {
		t.Errorf("Configure after Close = %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

func TestConfigureValidation(t *testing.T) {
	ok := &pb.Check{Name: "web", Protocol: "tcp", Address: "127.0.0.1:80", TimeoutMs: 500}
	with := func(f func(*pb.Check)) *pb.Check {
		ch := &pb.Check{Name: ok.Name, Protocol: ok.Protocol, Address: ok.Address, TimeoutMs: ok.TimeoutMs}
		f(ch)
		return ch
	}
	tests := []struct {
		name    string
		cfg     *pb.CheckerConfig
		wantErr []string // substrings; nil means valid
	}{
		{"valid", &pb.CheckerConfig{IntervalMs: 1000, Checks: []*pb.Check{ok}}, nil},
		{"no checks", &pb.CheckerConfig{IntervalMs: 1000}, nil},
		{"zero interval", &pb.CheckerConfig{Checks: []*pb.Check{ok}}, []string{"interval_ms 0"}},
		{"negative interval", &pb.CheckerConfig{IntervalMs: -5}, []string{"interval_ms -5"}},
		{"zero timeout", &pb.CheckerConfig{IntervalMs: 1000, Checks: []*pb.Check{with(func(c *pb.Check) { c.TimeoutMs = 0 })}},
			[]string{`"web"`, "timeout_ms 0"}},
		{"timeout equals interval", &pb.CheckerConfig{IntervalMs: 500, Checks: []*pb.Check{ok}},
			[]string{`"web"`, "timeout_ms 500", "interval_ms 500"}},
		{"timeout above interval", &pb.CheckerConfig{IntervalMs: 100, Checks: []*pb.Check{ok}},
			[]string{`"web"`, "timeout_ms 500"}},
		{"unknown protocol", &pb.CheckerConfig{IntervalMs: 1000, Checks: []*pb.Check{with(func(c *pb.Check) { c.Protocol = "icmp" })}},
			[]string{`check "web"`, `protocol "icmp"`, "not supported", "exec, http, https, tcp, udp"}},
		{"empty protocol", &pb.CheckerConfig{IntervalMs: 1000, Checks: []*pb.Check{with(func(c *pb.Check) { c.Protocol = "" })}},
			[]string{`check "web"`, `protocol ""`}},
		{"bad tcp address", &pb.CheckerConfig{IntervalMs: 1000, Checks: []*pb.Check{with(func(c *pb.Check) { c.Address = "127.0.0.1" })}},
			[]string{`check "web"`, "127.0.0.1", "missing port"}},
		{"no name", &pb.CheckerConfig{IntervalMs: 1000, Checks: []*pb.Check{with(func(c *pb.Check) { c.Name = "" })}},
			[]string{"#1 has no name"}},
		{"duplicate name", &pb.CheckerConfig{IntervalMs: 1000, Checks: []*pb.Check{ok, ok}},
			[]string{`"web" is defined twice`}},
		{"own interval", &pb.CheckerConfig{IntervalMs: 100, Checks: []*pb.Check{with(func(c *pb.Check) { c.IntervalMs = 600 })}}, nil},
		{"timeout not below own interval", &pb.CheckerConfig{IntervalMs: 5000, Checks: []*pb.Check{with(func(c *pb.Check) { c.IntervalMs = 500 })}},
			[]string{`check "web"`, "timeout_ms 500", "interval_ms 500"}},
		{"negative own interval", &pb.CheckerConfig{IntervalMs: 1000, Checks: []*pb.Check{with(func(c *pb.Check) { c.IntervalMs = -1 })}},
			[]string{`check "web"`, "interval_ms -1"}},
		{"negative fall", &pb.CheckerConfig{IntervalMs: 1000, Checks: []*pb.Check{with(func(c *pb.Check) { c.Fall = -2 })}},
			[]string{`check "web"`, "fall -2"}},
		{"settings of another type", &pb.CheckerConfig{IntervalMs: 1000, Checks: []*pb.Check{with(func(c *pb.Check) { c.Udp = &pb.UDPCheck{} })}},
			[]string{`check "web" (tcp)`, "udp settings"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Validate(tt.cfg); (err == nil) != (tt.wantErr == nil) {
				t.Errorf("Validate = %v, want an error: %v", err, tt.wantErr != nil)
			}
			c := newChecker(t)
			err := c.Configure(context.Background(), tt.cfg)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Configure = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Configure = nil, want an error")
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q lacks %q", err, s)
				}
			}
			if c.stopLoops != nil {
				t.Error("an invalid config started the loop")
			}
		})
	}
}

func TestInvalidConfigKeepsRunningChecks(t *testing.T) {
	c := newChecker(t)
	configure(t, c, tcpCheck("a", listen(t).Addr().String()))
	watchUntil(t, c, func(*pb.Health) bool { return true })
	err := c.Configure(context.Background(), &pb.CheckerConfig{IntervalMs: 0})
	if err == nil {
		t.Fatal("Configure accepted interval_ms 0")
	}
	// Still running: a new watcher sees fresh rounds of check a.
	n := 0
	watchUntil(t, c, func(h *pb.Health) bool { n++; return n == 3 && h.Checks[0].Name == "a" })
}

func TestFirstRoundRunsAtOnce(t *testing.T) {
	c := newChecker(t)
	// With a one-minute interval, only the immediate first round can answer
	// within the test's wait.
	cfg := &pb.CheckerConfig{IntervalMs: 60_000, Checks: []*pb.Check{tcpCheck("a", listen(t).Addr().String())}}
	if err := c.Configure(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	h := watchUntil(t, c, func(*pb.Health) bool { return true })
	if !h.Healthy || time.Since(start) > time.Second {
		t.Errorf("first verdict %v after %s, want healthy at once", h, time.Since(start))
	}
}

// scripted is a prober that plays back results: '+' passes, '-' fails,
// and the last one repeats. It counts its runs, and its output is the
// number of the run.
type scripted struct {
	mu     sync.Mutex
	script string
	runs   int
}

func (p *scripted) Probe(context.Context) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.script[min(p.runs, len(p.script)-1)]
	p.runs++
	out := strconv.Itoa(p.runs)
	if r == '-' {
		return out, fmt.Errorf("run %d failed", p.runs)
	}
	return out, nil
}

func (p *scripted) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.runs
}

// withScripts makes c's checks of protocol "script:NAME" play scripts[NAME].
func withScripts(c *Checker, scripts map[string]*scripted) {
	c.probers = map[string]newProber{}
	for name, p := range scripts {
		c.probers["script:"+name] = func(*pb.Check) (prober, error) { return p, nil }
	}
}

// TestFlapDampingThroughWatch runs a check with rise 2 and fall 3 through
// the whole Checker and reads the verdict after every run (a watcher may
// skip one, so each verdict is matched to its run by the run's output).
func TestFlapDampingThroughWatch(t *testing.T) {
	c := newChecker(t)
	const (
		script = "+--+---+-++"
		want   = "UUUUUUDDDDU"
	)
	withScripts(c, map[string]*scripted{"a": {script: script}})
	configure(t, c, &pb.Check{Name: "a", Protocol: "script:a", TimeoutMs: testTimeout, Rise: 2, Fall: 3})

	seen := 0
	watchUntil(t, c, func(h *pb.Health) bool {
		r := h.Checks[0]
		run, err := strconv.Atoi(r.Output)
		if err != nil || run < 1 {
			t.Fatalf("result %v has no run number", r)
		}
		i := min(run, len(script)) - 1 // the script's last result repeats
		seen++
		if wantUp := want[i] == 'U'; r.Healthy != wantUp || h.Healthy != wantUp {
			t.Errorf("after run %d (%s): verdict %v, want healthy %v", run, script[:i+1], h, wantUp)
		}
		// The run's own error shows, even while damping keeps the check up.
		if wantErr := script[i] == '-'; (r.Error != "") != wantErr {
			t.Errorf("after run %d: error %q, want one: %v", run, r.Error, wantErr)
		}
		return run >= len(script)
	})
	if seen < len(script)/2 {
		t.Errorf("saw %d of %d verdicts", seen, len(script))
	}
}

func TestNotRequiredCheck(t *testing.T) {
	c := newChecker(t)
	configure(t, c,
		tcpCheck("needed", listen(t).Addr().String()),
		&pb.Check{Name: "extra", Protocol: "tcp", Address: closedAddr(t), TimeoutMs: testTimeout, NotRequired: true},
	)
	h := watchUntil(t, c, func(*pb.Health) bool { return true })
	if !h.Healthy {
		t.Errorf("verdict = %v, want healthy: the failing check is not required", h)
	}
	needed, extra := result(t, h, "needed"), result(t, h, "extra")
	if !needed.Required || !needed.Healthy || extra.Required || extra.Healthy || extra.Error == "" {
		t.Errorf("results %v and %v, want needed required and up, extra not required and down with an error", needed, extra)
	}
	st, _ := c.Status(context.Background())
	if d := st.Details["check extra"]; st.State != StateHealthy || !strings.HasPrefix(d, "down tcp ") || !strings.HasSuffix(d, "(not required)") {
		t.Errorf("status = %v, want healthy with extra down and not required", st)
	}
	if got := testutil.ToFloat64(c.m.required.WithLabelValues("extra")); got != 0 {
		t.Errorf("%s{check=extra} = %v, want 0", metricCheckRequired, got)
	}
	if got := testutil.ToFloat64(c.m.required.WithLabelValues("needed")); got != 1 {
		t.Errorf("%s{check=needed} = %v, want 1", metricCheckRequired, got)
	}
	if got := testutil.ToFloat64(c.m.up.WithLabelValues("extra")); got != 0 {
		t.Errorf("%s{check=extra} = %v, want 0", metricCheckUp, got)
	}

	// Only not-required checks, all failing: still healthy.
	configure(t, c, &pb.Check{Name: "extra", Protocol: "tcp", Address: closedAddr(t), TimeoutMs: testTimeout, NotRequired: true})
	if h := watchUntil(t, c, func(h *pb.Health) bool { return len(h.Checks) == 1 }); !h.Healthy {
		t.Errorf("verdict = %v, want healthy", h)
	}
}

func TestEachCheckOnItsOwnInterval(t *testing.T) {
	c := newChecker(t)
	fast, slow := &scripted{script: "+"}, &scripted{script: "+"}
	withScripts(c, map[string]*scripted{"fast": fast, "slow": slow})
	configure(t, c,
		&pb.Check{Name: "fast", Protocol: "script:fast", TimeoutMs: 5, IntervalMs: 10},
		&pb.Check{Name: "slow", Protocol: "script:slow", TimeoutMs: 5, IntervalMs: 400},
	)
	// The first verdict comes once both ran once; then one per run.
	n := 0
	watchUntil(t, c, func(h *pb.Health) bool {
		if len(h.Checks) != 2 {
			t.Fatalf("verdict %v, want both checks", h)
		}
		n++
		return fast.count() >= 20
	})
	f, s := fast.count(), slow.count()
	if s < 1 || s*4 > f {
		t.Errorf("fast ran %d times, slow %d: want slow to run at a 40th of the rate", f, s)
	}
	if n < 10 {
		t.Errorf("%d verdicts for %d runs of fast, want one per run", n, f)
	}
	st, _ := c.Status(context.Background())
	if !strings.HasSuffix(st.Details["check slow"], " every 400ms") || st.Details["interval"] != "50ms" {
		t.Errorf("status = %v, want slow's own interval shown", st)
	}
}

func TestStatusDetails(t *testing.T) {
	c := newChecker(t)
	// A shell started under a busy machine can take longer than the short
	// test timeout; what this test reads is the output and the status.
	if err := c.Configure(t.Context(), &pb.CheckerConfig{IntervalMs: 5000, Checks: []*pb.Check{
		{Name: "script", Protocol: "exec", TimeoutMs: 4000, Fall: 3,
			Exec: &pb.ExecCheck{Command: "echo 'not ready'; exit 1", Shell: true}},
		{Name: "web", Protocol: "http", Address: closedAddr(t), TimeoutMs: 4000, Http: &pb.HTTPCheck{Path: "/health"}},
	}}); err != nil {
		t.Fatal(err)
	}
	h := watchUntil(t, c, func(*pb.Health) bool { return true })
	if r := result(t, h, "script"); r.Output != "not ready" || !strings.Contains(r.Error, "exit status 1") || r.Address != "" {
		t.Errorf("script result %v, want its output and exit status", r)
	}
	st, _ := c.Status(context.Background())
	for key, want := range map[string]string{
		"check script":        "down exec sh -c echo 'not ready'; exit 1",
		"check script output": "not ready",
		"check script error":  "sh -c echo 'not ready'; exit 1: exit status 1",
		"check web":           "down http http://" + result(t, h, "web").Address + "/health",
		"check web error":     "connection refused",
		"check web latency":   "s",
	} {
		if got := st.Details[key]; !strings.Contains(got, want) {
			t.Errorf("status %q = %q, want it to contain %q", key, got, want)
		}
	}
}

// TestReconfigureKeepsStateOfUnchangedChecks: a reload that changes one
// check leaves the damping of the others where it was.
func TestReconfigureKeepsStateOfUnchangedChecks(t *testing.T) {
	c := newChecker(t)
	same := &scripted{script: "+-"} // up, then failing: 1 of 3, 2 of 3, ...
	withScripts(c, map[string]*scripted{"same": same, "other": {script: "+"}})
	sameCheck := &pb.Check{Name: "same", Protocol: "script:same", TimeoutMs: 5, IntervalMs: 60_000, Fall: 3}
	configure(t, c, sameCheck, &pb.Check{Name: "other", Protocol: "script:other", TimeoutMs: 5})
	watchUntil(t, c, func(*pb.Health) bool { return true })
	// Reconfigured (other's timeout changed): same runs again at once, its
	// second run, a failure; with its state kept that is 1 of 3, still up.
	configure(t, c, sameCheck, &pb.Check{Name: "other", Protocol: "script:other", TimeoutMs: 6})
	// Until the verdict carries the second run (the count moves when a run
	// starts, before its result is in a verdict).
	h := watchUntil(t, c, func(h *pb.Health) bool {
		for _, r := range h.Checks {
			if r.Name == "same" && r.Output == "2" {
				return true
			}
		}
		return false
	})
	if r := result(t, h, "same"); !r.Healthy || r.Error == "" {
		t.Errorf("same = %v, want still healthy with its failure shown", r)
	}
	st, _ := c.Status(context.Background())
	if !strings.Contains(st.Details["check same"], "failing 1 of 3") {
		t.Errorf("status %v, want same failing 1 of 3", st)
	}
}

// TestNoChecksIsHealthy: a config without checks has nothing to fail, so
// its verdict is healthy, at once; a reload that removes every check says
// so too.
func TestNoChecksIsHealthy(t *testing.T) {
	c := newChecker(t)
	configure(t, c)
	if h := watchUntil(t, c, func(*pb.Health) bool { return true }); !h.Healthy || len(h.Checks) != 0 {
		t.Errorf("verdict with no checks = %v, want healthy", h)
	}
	configure(t, c, tcpCheck("down", closedAddr(t)))
	watchUntil(t, c, func(h *pb.Health) bool { return !h.Healthy })
	configure(t, c)
	watchUntil(t, c, func(h *pb.Health) bool { return h.Healthy && len(h.Checks) == 0 })
}
