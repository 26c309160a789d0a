// Package checker runs keep-vip's built-in health checks: every interval it
// runs all configured checks at once and publishes one verdict, healthy when
// every check passed. It is the library behind the checker plugin and knows
// nothing of the config file.
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
	// loop. It is never taken by the loop, so stopping the loop under it
	// cannot deadlock with a round that is publishing under mu.
	cfgMu    sync.Mutex
	stopLoop context.CancelFunc // nil while no loop runs
	loopDone chan struct{}

	mu       sync.Mutex
	interval time.Duration
	checks   []*check
	// latest is the verdict of the last complete round of the current
	// checks, nil until there is one. Published verdicts are never modified.
	latest *pb.Health
	// changed is closed and replaced whenever latest changes. A watcher
	// that misses several rounds wakes once and sends only the newest, so
	// a slow watcher costs the loop nothing.
	changed chan struct{}
	closed  chan struct{}
}

type check struct {
	name     string
	protocol string
	address  string
	timeout  time.Duration
	prober   prober
}

// New returns a Checker that checks nothing until Configure.
func New(log zerolog.Logger) *Checker {
	reg := prometheus.NewRegistry()
	return &Checker{
		log:     log,
		reg:     reg,
		m:       newMetrics(reg),
		probers: defaultProbers,
		changed: make(chan struct{}),
		closed:  make(chan struct{}),
	}
}

// Configure validates cfg and, if it is valid, replaces the running checks
// with it; the first round starts at once. An invalid cfg leaves the running
// checks alone.
func (c *Checker) Configure(_ context.Context, cfg *pb.CheckerConfig) error {
	interval, checks, err := c.build(cfg)
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
	c.interval, c.checks = interval, checks
	// The old verdict was about other checks: until the new ones have run,
	// the honest answer is "starting", and watchers hear nothing.
	c.latest = nil
	c.mu.Unlock()

	keep := make(map[string]bool, len(checks))
	for _, ch := range checks {
		keep[ch.name] = true
	}
	for _, ch := range old {
		if !keep[ch.name] {
			c.m.forget(ch.name)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	c.stopLoop, c.loopDone = cancel, done
	go c.loop(ctx, interval, checks, done)

	c.log.Info().Int("checks", len(checks)).Dur("interval", interval).Msg("checker configured")
	return nil
}

// build validates cfg and makes the prober of every check.
func (c *Checker) build(cfg *pb.CheckerConfig) (time.Duration, []*check, error) {
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
		if pc.GetTimeoutMs() <= 0 || pc.GetTimeoutMs() >= cfg.GetIntervalMs() {
			return 0, nil, fmt.Errorf("check %q: timeout_ms %d must be above 0 and below interval_ms %d",
				name, pc.GetTimeoutMs(), cfg.GetIntervalMs())
		}
		newP, ok := c.probers[pc.GetProtocol()]
		if !ok {
			return 0, nil, fmt.Errorf("check %q: protocol %q is not supported (supported: %s)",
				name, pc.GetProtocol(), strings.Join(slices.Sorted(maps.Keys(c.probers)), ", "))
		}
		p, err := newP(pc)
		if err != nil {
			return 0, nil, fmt.Errorf("check %q (%s): %w", name, pc.GetProtocol(), err)
		}
		checks = append(checks, &check{
			name:     name,
			protocol: pc.GetProtocol(),
			address:  pc.GetAddress(),
			timeout:  time.Duration(pc.GetTimeoutMs()) * time.Millisecond,
			prober:   p,
		})
	}
	return time.Duration(cfg.GetIntervalMs()) * time.Millisecond, checks, nil
}

// stop ends the running loop, if any, and waits for it: after stop returns
// no round of the old checks can publish. Callers hold cfgMu.
func (c *Checker) stop() {
	if c.stopLoop == nil {
		return
	}
	c.stopLoop()
	<-c.loopDone
	c.stopLoop, c.loopDone = nil, nil
}

func (c *Checker) loop(ctx context.Context, interval time.Duration, checks []*check, done chan struct{}) {
	defer close(done)
	// A round lasts at most the longest timeout, which is below the
	// interval, so the ticker does not drop ticks in normal operation.
	t := time.NewTicker(interval)
	defer t.Stop()
	var prev *pb.Health
	for {
		h := c.round(ctx, checks)
		if h == nil {
			return
		}
		c.logChanges(prev, h)
		prev = h
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// round runs every check at once and publishes the verdict. It returns nil,
// publishing nothing, when ctx ended meanwhile: the checks were replaced or
// the Checker closed, and their verdict no longer matters.
func (c *Checker) round(ctx context.Context, checks []*check) *pb.Health {
	results := make([]*pb.CheckResult, len(checks))
	var wg sync.WaitGroup
	for i, ch := range checks {
		wg.Go(func() { results[i] = c.run(ctx, ch) })
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	h := &pb.Health{Healthy: true, Checks: results}
	for _, r := range results {
		if !r.Healthy {
			h.Healthy = false
		}
	}
	c.mu.Lock()
	c.latest = h
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	return h
}

// run runs one check once and records it in the metrics.
func (c *Checker) run(ctx context.Context, ch *check) *pb.CheckResult {
	pctx, cancel := context.WithTimeout(ctx, ch.timeout)
	start := time.Now()
	err := ch.prober.Probe(pctx)
	took := time.Since(start)
	cancel()
	r := &pb.CheckResult{
		Name:      ch.name,
		Address:   ch.address,
		Healthy:   err == nil,
		LatencyUs: took.Microseconds(),
	}
	if err != nil {
		r.Error = err.Error()
	}
	if ctx.Err() != nil {
		// Cut short by a reconfigure or Close, not a real failure.
		return r
	}
	c.m.duration.WithLabelValues(ch.name).Observe(took.Seconds())
	if err != nil {
		c.m.up.WithLabelValues(ch.name).Set(0)
		c.m.failures.WithLabelValues(ch.name).Inc()
	} else {
		c.m.up.WithLabelValues(ch.name).Set(1)
	}
	return r
}

// logChanges logs checks that changed state, and the verdict if it did, so
// the log shows transitions rather than one line per round.
func (c *Checker) logChanges(prev, h *pb.Health) {
	was := map[string]bool{}
	if prev != nil {
		for _, r := range prev.Checks {
			was[r.Name] = r.Healthy
		}
	}
	for _, r := range h.Checks {
		if ok, known := was[r.Name]; known && ok == r.Healthy {
			continue
		}
		if r.Healthy {
			c.log.Info().Str("check", r.Name).Str("address", r.Address).Msg("check passes")
		} else {
			c.log.Warn().Str("check", r.Name).Str("address", r.Address).Str("error", r.Error).Msg("check fails")
		}
	}
	if prev == nil || prev.Healthy != h.Healthy {
		c.log.Info().Bool("healthy", h.Healthy).Msg("verdict changed")
	}
}

// Watch sends the latest verdict at once if there is one, then the verdict
// of every round, until ctx ends, send fails or the Checker closes. A watcher
// slower than the rounds skips to the newest verdict. Each call gets its own
// copy, so send may keep or modify it.
func (c *Checker) Watch(ctx context.Context, send func(*pb.Health) error) error {
	var sent *pb.Health
	for {
		c.mu.Lock()
		h, changed := c.latest, c.changed
		c.mu.Unlock()
		if h != nil && h != sent {
			if err := send(proto.CloneOf(h)); err != nil {
				return err
			}
			sent = h
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.closed:
			return ErrClosed
		case <-changed:
		}
	}
}

// Status reports the verdict and, per check, its last result.
func (c *Checker) Status(context.Context) (*pb.PluginStatus, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := &pb.PluginStatus{State: StateStarting, Details: map[string]string{}}
	if c.interval > 0 {
		st.Details["interval"] = c.interval.String()
	}
	results := map[string]*pb.CheckResult{}
	if c.latest != nil {
		st.State = StateUnhealthy
		if c.latest.Healthy {
			st.State = StateHealthy
		}
		for _, r := range c.latest.Checks {
			results[r.Name] = r
		}
	}
	for _, ch := range c.checks {
		key := "check " + ch.name
		target := ch.protocol + " " + ch.address
		switch r := results[ch.name]; {
		case r == nil:
			st.Details[key] = "pending " + target
		case r.Healthy:
			st.Details[key] = fmt.Sprintf("up %s in %s", target, time.Duration(r.LatencyUs)*time.Microsecond)
		default:
			st.Details[key] = fmt.Sprintf("down %s: %s", target, r.Error)
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
	c.stop()
	return nil
}
