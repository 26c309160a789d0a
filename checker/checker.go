// Package checker runs keep-vip's built-in health checks (tcp, http, https,
// udp, exec). Each check runs on its own interval, its state damped by rise
// and fall; after every run the checker publishes a verdict, healthy when
// every required check is. It is the library behind the checker plugin and
// knows nothing of the config file.
package checker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/keep-vip/keep-vip/rpc"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// States reported by Status.
const (
	StateStarting  = "starting"
	StateHealthy   = "healthy"
	StateUnhealthy = "unhealthy"
)

// ErrClosed is returned by Configure and Watch once the Checker is closed.
var ErrClosed = errors.New("checker closed")

var _ rpc.Checker = (*Checker)(nil)

// Checker implements rpc.Checker.
type Checker struct {
	log     zerolog.Logger
	reg     *prometheus.Registry
	m       *metrics
	probers map[string]newProber

	// cfgMu serializes Configure and Close, the two that stop and start the
	// loops. It is never taken by a loop, so stopping the loops under it
	// cannot deadlock with a run that is publishing under mu.
	cfgMu     sync.Mutex
	stopLoops context.CancelFunc // nil while no loops run
	loopsDone chan struct{}

	mu       sync.Mutex
	interval time.Duration
	checks   []*check
	// verdicts holds the verdict after the last run of any check, empty
	// until every current check has run once. A slow watcher skips to the
	// newest verdict, so it costs the loops nothing.
	verdicts *rpc.Feed[*pb.Health]
	closed   chan struct{}
}

// check is one configured check and, under Checker.mu, its state.
type check struct {
	def      *pb.Check // as configured, to know the same check again
	name     string
	protocol string
	address  string
	target   string // what Status shows the check aims at
	timeout  time.Duration
	interval time.Duration
	required bool
	prober   prober
	watch    *deathWatch // nil: found by the regular runs only (watch.go)

	damp damper
	last *pb.CheckResult // the last run, healthy meaning the run passed; nil before the first
}

// New returns a Checker that checks nothing until Configure.
func New(log zerolog.Logger) *Checker {
	reg := prometheus.NewRegistry()
	return &Checker{
		log:      log,
		reg:      reg,
		m:        newMetrics(reg),
		probers:  defaultProbers,
		verdicts: rpc.NewFeed[*pb.Health](ErrClosed),
		closed:   make(chan struct{}),
	}
}

// Validate tells whether the built-in checker accepts cfg, without running
// anything; the error names the check and the setting.
func Validate(cfg *pb.CheckerConfig) error {
	_, _, err := build(defaultProbers, cfg)
	return err
}

// Validate is the Validate RPC: cfg checked as Configure would, with no
// check run.
func (c *Checker) Validate(_ context.Context, cfg *pb.CheckerConfig) error {
	_, _, err := build(c.probers, cfg)
	return err
}

// Configure validates cfg and, if it is valid, replaces the running checks
// with it; every check runs at once. An invalid cfg leaves the running
// checks alone.
func (c *Checker) Configure(_ context.Context, cfg *pb.CheckerConfig) error {
	interval, checks, err := build(c.probers, cfg)
	if err != nil {
		return fmt.Errorf("configure checker: %w", err)
	}

	c.cfgMu.Lock()
	defer c.cfgMu.Unlock()
	select {
	case <-c.closed:
		return ErrClosed
	default:
	}
	c.stop()

	c.mu.Lock()
	old := c.checks
	// A check configured exactly as before (a reload that changed other
	// checks) keeps its state: its damping count and last run.
	prev := make(map[string]*check, len(old))
	for _, ch := range old {
		prev[ch.name] = ch
	}
	for _, ch := range checks {
		if o := prev[ch.name]; o != nil && proto.Equal(o.def, ch.def) {
			ch.damp, ch.last = o.damp, o.last
		}
	}
	c.interval, c.checks = interval, checks
	// The old verdict was about other checks: until every new one has run,
	// the honest answer is "starting", and watchers hear nothing.
	c.verdicts.Reset()
	if len(checks) == 0 {
		// Nothing to fail: healthy, and said at once, so a member with no
		// checks takes part in the election like any healthy one.
		c.verdicts.Publish(&pb.Health{Healthy: true, Checks: []*pb.CheckResult{}})
	}
	c.mu.Unlock()

	keep := make(map[string]bool, len(checks))
	for _, ch := range checks {
		keep[ch.name] = true
		c.m.required.WithLabelValues(ch.name).Set(b2f(ch.required))
		// From the start, so rate() and increase() see the first failure.
		c.m.failures.WithLabelValues(ch.name)
	}
	for _, ch := range old {
		if !keep[ch.name] {
			c.m.forget(ch.name)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, ch := range checks {
		wg.Go(func() { c.loop(ctx, ch) })
	}
	go func() { wg.Wait(); close(done) }()
	c.stopLoops, c.loopsDone = cancel, done

	c.log.Info().Int("checks", len(checks)).Dur("interval", interval).Msg("checker configured")
	return nil
}

// build validates cfg and makes every check with its prober.
func build(probers map[string]newProber, cfg *pb.CheckerConfig) (time.Duration, []*check, error) {
	if cfg.GetIntervalMs() <= 0 {
		return 0, nil, fmt.Errorf("interval_ms %d must be above 0", cfg.GetIntervalMs())
	}
	seen := make(map[string]bool, len(cfg.GetChecks()))
	checks := make([]*check, 0, len(cfg.GetChecks()))
	for i, pc := range cfg.GetChecks() {
		name := pc.GetName()
		if name == "" {
			return 0, nil, fmt.Errorf("check #%d has no name", i+1)
		}
		// Names label the metrics and the verdict, so they must be unique.
		if seen[name] {
			return 0, nil, fmt.Errorf("check %q is defined twice", name)
		}
		seen[name] = true
		intervalMs := pc.GetIntervalMs()
		switch {
		case intervalMs < 0:
			return 0, nil, fmt.Errorf("check %q: interval_ms %d must not be negative", name, intervalMs)
		case intervalMs == 0:
			intervalMs = cfg.GetIntervalMs()
		}
		if pc.GetTimeoutMs() <= 0 || pc.GetTimeoutMs() >= intervalMs {
			return 0, nil, fmt.Errorf("check %q: timeout_ms %d must be above 0 and below interval_ms %d",
				name, pc.GetTimeoutMs(), intervalMs)
		}
		if pc.GetRise() < 0 || pc.GetFall() < 0 {
			return 0, nil, fmt.Errorf("check %q: rise %d and fall %d must not be negative (0 means 1)", name, pc.GetRise(), pc.GetFall())
		}
		newP, ok := probers[pc.GetProtocol()]
		if !ok {
			return 0, nil, fmt.Errorf("check %q: protocol %q is not supported (supported: %s)",
				name, pc.GetProtocol(), strings.Join(slices.Sorted(maps.Keys(probers)), ", "))
		}
		p, err := newP(pc)
		if err != nil {
			return 0, nil, fmt.Errorf("check %q (%s): %w", name, pc.GetProtocol(), err)
		}
		timeout := time.Duration(pc.GetTimeoutMs()) * time.Millisecond
		var watch *deathWatch
		if watchable(pc, hostAddress) {
			watch = newDeathWatch(pc.GetAddress(), timeout)
		} else if pc.GetWatch() == pb.WatchMode_WATCH_ON {
			return 0, nil, fmt.Errorf("check %q: watch is for tcp, http and https checks, not %s", name, pc.GetProtocol())
		}
		checks = append(checks, &check{
			def:      proto.CloneOf(pc),
			name:     name,
			protocol: pc.GetProtocol(),
			address:  pc.GetAddress(),
			target:   target(pc),
			timeout:  timeout,
			interval: time.Duration(intervalMs) * time.Millisecond,
			required: !pc.GetNotRequired(),
			prober:   p,
			watch:    watch,
			damp:     damper{rise: max(int(pc.GetRise()), 1), fall: max(int(pc.GetFall()), 1)},
		})
	}
	return time.Duration(cfg.GetIntervalMs()) * time.Millisecond, checks, nil
}

// target is what a check aims at, for Status.
func target(pc *pb.Check) string {
	switch pc.GetProtocol() {
	case ProtocolExec:
		cmd := strings.Join(append([]string{pc.GetExec().GetCommand()}, pc.GetExec().GetArgs()...), " ")
		if pc.GetExec().GetShell() {
			cmd = "sh -c " + cmd
		}
		return clean(cmd, 120)
	case ProtocolHTTP, ProtocolHTTPS:
		path := pc.GetHttp().GetPath()
		if path == "" {
			path = "/"
		}
		return clean(pc.GetProtocol()+"://"+pc.GetAddress()+path, 120)
	}
	return pc.GetAddress()
}

// stop ends the running loops, if any, and waits for them: after stop
// returns no run of the old checks can publish. Callers hold cfgMu.
func (c *Checker) stop() {
	if c.stopLoops == nil {
		return
	}
	c.stopLoops()
	<-c.loopsDone
	c.stopLoops, c.loopsDone = nil, nil
}

// loop runs one check at once and then every interval, and at once when
// its watched connection ends, until ctx ends.
func (c *Checker) loop(ctx context.Context, ch *check) {
	// A run lasts at most the check's timeout, which is below its
	// interval, so the ticker does not drop ticks in normal operation.
	t := time.NewTicker(ch.interval)
	defer t.Stop()
	var wake <-chan struct{}
	if ch.watch != nil {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go ch.watch.run(wctx)
		wake = ch.watch.wake
	}
	early := false
	for {
		r := c.run(ctx, ch)
		if ctx.Err() != nil {
			// Cut short by a reconfigure or Close, not a real result.
			return
		}
		c.record(ch, r)
		// Watch again after a regular run that passed; after an early one
		// that passed, the service closed an idle connection but serves:
		// wait for the next round (see watch.go).
		if ch.watch != nil && r.Healthy && !early {
			ch.watch.rearm()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			early = false
		case <-wake:
			early = true
			c.m.wakeups.WithLabelValues(ch.name).Inc()
			c.log.Info().Str("check", ch.name).Str("target", ch.target).Msg("the service ended the watched connection: checking now")
		}
	}
}

// run runs one check once.
func (c *Checker) run(ctx context.Context, ch *check) *pb.CheckResult {
	start := time.Now() // before the deadline is set, so a timed-out run shows at least its timeout
	pctx, cancel := context.WithTimeout(ctx, ch.timeout)
	output, err := ch.prober.Probe(pctx)
	took := time.Since(start)
	cancel()
	r := &pb.CheckResult{
		Name:      ch.name,
		Address:   ch.address,
		Healthy:   err == nil,
		LatencyUs: took.Microseconds(),
		Required:  ch.required,
		Output:    output,
	}
	if err != nil {
		r.Error = clean(err.Error(), maxError)
	}
	return r
}

// record applies one run to its check's state, the metrics and the log,
// and publishes the new verdict.
func (c *Checker) record(ch *check, r *pb.CheckResult) {
	c.m.duration.WithLabelValues(ch.name).Observe(float64(r.LatencyUs) / 1e6)
	if !r.Healthy {
		c.m.failures.WithLabelValues(ch.name).Inc()
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	first := ch.last == nil
	ch.last = r
	if ch.damp.observe(r.Healthy) {
		c.logState(ch, first)
	}
	c.m.up.WithLabelValues(ch.name).Set(b2f(ch.damp.healthy))

	h := &pb.Health{Healthy: true, Checks: make([]*pb.CheckResult, 0, len(c.checks))}
	for _, o := range c.checks {
		if o.last == nil {
			return // not every check has run yet: still starting
		}
		res := &pb.CheckResult{
			Name:      o.name,
			Address:   o.address,
			Healthy:   o.damp.healthy,
			Error:     o.last.Error,
			LatencyUs: o.last.LatencyUs,
			Required:  o.required,
			Output:    o.last.Output,
		}
		if o.required && !res.Healthy {
			h.Healthy = false
		}
		h.Checks = append(h.Checks, res)
	}
	if prev, ok := c.verdicts.Latest(); !ok || prev.Healthy != h.Healthy {
		c.log.Info().Bool("healthy", h.Healthy).Msg("verdict changed")
	}
	c.verdicts.Publish(h)
}

// logState logs a check that changed state, so the log shows transitions
// rather than one line per run. Callers hold mu.
func (c *Checker) logState(ch *check, first bool) {
	r := ch.last
	ev := c.log.Info()
	msg := "check passes"
	if !ch.damp.healthy {
		ev, msg = c.log.Warn().Str("error", r.Error), "check fails"
		if r.Output != "" {
			ev = ev.Str("output", r.Output)
		}
	}
	if !first {
		n := ch.damp.rise
		if !ch.damp.healthy {
			n = ch.damp.fall
		}
		ev = ev.Int("runs_in_a_row", n)
	}
	ev.Str("check", ch.name).Str("protocol", ch.protocol).Str("target", ch.target).Bool("required", ch.required).Msg(msg)
}

// Watch sends the latest verdict at once if there is one, then the verdict
// after every run, until ctx ends, send fails or the Checker closes. A
// watcher slower than the runs skips to the newest verdict. Each call gets
// its own copy, so send may keep or modify it.
func (c *Checker) Watch(ctx context.Context, send func(*pb.Health) error) error {
	return c.verdicts.Watch(ctx, send)
}

// Status reports the verdict and, per check, its state, its last run's
// latency, error and output:
//
//	check web          up http://127.0.0.1:80/health, failing 1 of 3
//	check web error    GET http://127.0.0.1:80/health: status 503 Service Unavailable, want 2xx or 3xx
//	check web latency  1.2ms
func (c *Checker) Status(context.Context) (*pb.PluginStatus, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := &pb.PluginStatus{State: StateStarting, Details: map[string]string{}}
	if c.interval > 0 {
		st.Details["interval"] = c.interval.String()
	}
	if latest, ok := c.verdicts.Latest(); ok {
		st.State = StateUnhealthy
		if latest.Healthy {
			st.State = StateHealthy
		}
	}
	for _, ch := range c.checks {
		key := "check " + ch.name
		var b strings.Builder
		switch {
		case ch.last == nil:
			b.WriteString("pending")
		case ch.damp.healthy:
			b.WriteString("up")
		default:
			b.WriteString("down")
		}
		fmt.Fprintf(&b, " %s %s", ch.protocol, ch.target)
		if ch.damp.streak > 0 {
			what := "failing"
			if !ch.damp.healthy {
				what = "passing"
			}
			fmt.Fprintf(&b, ", %s %d of %d", what, ch.damp.streak, ch.damp.need())
		}
		if ch.watch != nil {
			b.WriteString(", watched")
		}
		if !ch.required {
			b.WriteString(" (not required)")
		}
		if ch.interval != c.interval {
			fmt.Fprintf(&b, " every %s", ch.interval)
		}
		st.Details[key] = b.String()
		if r := ch.last; r != nil {
			st.Details[key+" latency"] = (time.Duration(r.LatencyUs) * time.Microsecond).String()
			if r.Error != "" {
				st.Details[key+" error"] = r.Error
			}
			if r.Output != "" {
				st.Details[key+" output"] = r.Output
			}
		}
	}
	return st, nil
}

// Gather returns the checker's own metrics.
func (c *Checker) Gather() ([]*dto.MetricFamily, error) { return c.reg.Gather() }

// Close stops the checks and ends every Watch. It is safe to call twice.
func (c *Checker) Close() error {
	c.cfgMu.Lock()
	defer c.cfgMu.Unlock()
	select {
	case <-c.closed:
		return nil
	default:
	}
	close(c.closed)
	c.verdicts.Close()
	c.stop()
	return nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
