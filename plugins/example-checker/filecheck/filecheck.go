// Package filecheck is an example third-party checker: its one check type,
// "file", passes while the file at the check's address exists. Operators use
// such a check to drain a member by hand (touch a file, remove it to drain)
// or to follow a condition some other tool writes down as a file.
//
// It is built against keep-vip's plugin SDK alone (package rpc, its pb
// messages and Prometheus) and the standard library, as a checker outside
// the keep-vip repository would be; it does not use keep-vip's own checker
// library. main_test.go builds it as a module of its own to keep it so.
//
// It implements the protocol in keep-vip's docs/checker-protocol.md: a
// verdict after every round, healthy while every required check passes,
// and a refusal, naming the check, of any setting it does not implement.
package filecheck

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keep-vip/keep-vip/rpc"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// Protocol is the check type this checker knows, the protocol of a check.
const Protocol = "file"

// A third party picks a metric prefix of its own; keep_vip_ is keep-vip's.
const metricUp = "filecheck_check_up"

// ErrClosed is returned by Configure and Watch once the Checker is closed.
var ErrClosed = errors.New("filecheck: closed")

var _ rpc.Checker = (*Checker)(nil)

// Checker implements rpc.Checker for file checks.
type Checker struct {
	// The registry answers Gather, the other half of rpc.Reporter.
	prometheus.Gatherer
	up *prometheus.GaugeVec

	mu     sync.Mutex
	cfg    *pb.CheckerConfig
	gen    int // bumped by every Configure; a loop of an older one publishes nothing
	cancel context.CancelFunc
	// verdicts is the SDK's feed: it sends each watcher the newest verdict,
	// so a slow watcher never holds up the loop.
	verdicts *rpc.Feed[*pb.Health]
	closed   chan struct{}
}

// New returns a Checker that checks nothing until Configure.
func New() *Checker {
	reg := prometheus.NewRegistry()
	up := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: metricUp,
		Help: "1 if the file of the check existed at its last run, else 0.",
	}, []string{"check"})
	reg.MustRegister(up)
	return &Checker{Gatherer: reg, up: up, verdicts: rpc.NewFeed[*pb.Health](ErrClosed), closed: make(chan struct{})}
}

func validate(cfg *pb.CheckerConfig) error {
	if cfg.GetIntervalMs() <= 0 {
		return fmt.Errorf("interval_ms %d must be above 0", cfg.GetIntervalMs())
	}
	seen := map[string]bool{}
	for i, ch := range cfg.GetChecks() {
		switch {
		case ch.GetName() == "":
			return fmt.Errorf("check #%d has no name", i+1)
		case seen[ch.GetName()]:
			return fmt.Errorf("check %q is defined twice", ch.GetName())
		case ch.GetProtocol() != Protocol:
			return fmt.Errorf("check %q: protocol %q is not supported (supported: %s)", ch.GetName(), ch.GetProtocol(), Protocol)
		case ch.GetAddress() == "":
			return fmt.Errorf("check %q: address must be the path of a file", ch.GetName())
		case ch.GetTimeoutMs() <= 0 || ch.GetTimeoutMs() >= cfg.GetIntervalMs():
			return fmt.Errorf("check %q: timeout_ms %d must be above 0 and below interval_ms %d",
				ch.GetName(), ch.GetTimeoutMs(), cfg.GetIntervalMs())
		// What this checker does not do, it refuses rather than ignores:
		// the supervisor sends every check its own interval and rise and
		// fall of 1 unless the config asks for more.
		case ch.GetIntervalMs() != 0 && ch.GetIntervalMs() != cfg.GetIntervalMs():
			return fmt.Errorf("check %q: interval_ms %d is not supported: every check runs each interval_ms (%d)",
				ch.GetName(), ch.GetIntervalMs(), cfg.GetIntervalMs())
		case ch.GetRise() > 1 || ch.GetFall() > 1:
			return fmt.Errorf("check %q: rise %d and fall %d are not supported: one run decides", ch.GetName(), ch.GetRise(), ch.GetFall())
		case ch.GetHttp() != nil || ch.GetUdp() != nil || ch.GetExec() != nil || len(ch.GetOptions()) > 0:
			return fmt.Errorf("check %q: a file check has no settings besides its address (the path)", ch.GetName())
		}
		seen[ch.GetName()] = true
	}
	return nil
}

// Configure replaces the checks with cfg's and runs the first round at once.
// An invalid cfg leaves the running checks alone.
// Validate answers the supervisor's Validate RPC (rpc.Validator): this
// checker is the authority on its own check types, so `keep-vip-supervisor
// validate` refuses a check it could not run, with this line.
func (c *Checker) Validate(_ context.Context, cfg *pb.CheckerConfig) error { return validate(cfg) }

func (c *Checker) Configure(_ context.Context, cfg *pb.CheckerConfig) error {
	if err := validate(cfg); err != nil {
		return fmt.Errorf("configure filecheck: %w", err)
	}
	cfg = cloneConfig(cfg) // the caller may reuse its message
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.closed:
		return ErrClosed
	default:
	}
	if c.cancel != nil {
		c.cancel()
	}
	c.up.Reset()
	c.gen++
	c.cfg = cfg
	c.verdicts.Reset()
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go c.loop(ctx, c.gen, cfg)
	return nil
}

func (c *Checker) loop(ctx context.Context, gen int, cfg *pb.CheckerConfig) {
	t := time.NewTicker(time.Duration(cfg.GetIntervalMs()) * time.Millisecond)
	defer t.Stop()
	for {
		c.publish(gen, round(cfg.GetChecks()))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// publish makes h the latest verdict unless a newer Configure or Close came
// in meanwhile.
func (c *Checker) publish(gen int, h *pb.Health) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	select {
	case <-c.closed:
		return
	default:
	}
	for _, r := range h.Checks {
		v := 0.0
		if r.Healthy {
			v = 1
		}
		c.up.WithLabelValues(r.Name).Set(v)
	}
	c.verdicts.Publish(h)
}

// round runs every check once, in order, and returns the verdict: healthy
// when every required file exists. A check that is not required is
// reported all the same.
func round(checks []*pb.Check) *pb.Health {
	h := &pb.Health{Healthy: true}
	for _, ch := range checks {
		start := time.Now()
		err := probe(ch.GetAddress(), time.Duration(ch.GetTimeoutMs())*time.Millisecond)
		r := &pb.CheckResult{
			Name:      ch.GetName(),
			Address:   ch.GetAddress(),
			Healthy:   err == nil,
			LatencyUs: time.Since(start).Microseconds(),
			Required:  !ch.GetNotRequired(),
		}
		if err != nil {
			r.Error = err.Error()
			if r.Required {
				h.Healthy = false
			}
		}
		h.Checks = append(h.Checks, r)
	}
	return h
}

// probe stats path within timeout. A stat on a hung network file system can
// block for minutes; the check then fails at its timeout, and the stat's
// goroutine ends whenever the kernel lets it.
func probe(path string, timeout time.Duration) error {
	errc := make(chan error, 1)
	go func() {
		_, err := os.Stat(path)
		errc <- err
	}()
	select {
	case err := <-errc:
		return err
	case <-time.After(timeout):
		return fmt.Errorf("stat %s: no answer within %s", path, timeout)
	}
}

// Watch sends the latest verdict at once if there is one, then the verdict
// of every round, until ctx ends, send fails or the Checker closes.
func (c *Checker) Watch(ctx context.Context, send func(*pb.Health) error) error {
	return c.verdicts.Watch(ctx, send)
}

// Status reports the verdict and every check's last result.
func (c *Checker) Status(context.Context) (*pb.PluginStatus, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := &pb.PluginStatus{State: "starting", Details: map[string]string{}}
	latest, ok := c.verdicts.Latest()
	if !ok {
		return st, nil
	}
	st.State = "unhealthy"
	if latest.Healthy {
		st.State = "healthy"
	}
	for _, r := range latest.Checks {
		d := "present " + r.Address
		if !r.Healthy {
			d = "missing: " + r.Error
		}
		if !r.Required {
			d += " (not required)"
		}
		st.Details["check "+r.Name] = d
		st.Details["check "+r.Name+" latency"] = (time.Duration(r.LatencyUs) * time.Microsecond).String()
	}
	return st, nil
}

// Close stops the checks and ends every Watch; rpc.ServeChecker calls it
// when the plugin stops.
func (c *Checker) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.closed:
		return nil
	default:
	}
	close(c.closed)
	c.verdicts.Close()
	if c.cancel != nil {
		c.cancel()
	}
	return nil
}

// cloneConfig copies the fields of a config this checker uses.
func cloneConfig(cfg *pb.CheckerConfig) *pb.CheckerConfig {
	out := &pb.CheckerConfig{IntervalMs: cfg.GetIntervalMs()}
	for _, ch := range cfg.GetChecks() {
		out.Checks = append(out.Checks, &pb.Check{
			Name:        ch.GetName(),
			Protocol:    ch.GetProtocol(),
			Address:     ch.GetAddress(),
			TimeoutMs:   ch.GetTimeoutMs(),
			NotRequired: ch.GetNotRequired(),
		})
	}
	return out
}
