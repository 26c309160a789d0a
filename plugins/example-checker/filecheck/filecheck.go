// Package filecheck is an example third-party checker: its one check type,
// "file", passes while the file at the check's address exists. Operators use
// such a check to drain a member by hand (touch a file, remove it to drain)
// or to follow a condition some other tool writes down as a file.
//
// It is built against keep-vip's plugin SDK alone (package rpc, its pb
// messages and Prometheus), as a checker outside the keep-vip repository
// would be; it does not use keep-vip's own checker library.
package filecheck

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

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
	reg *prometheus.Registry
	up  *prometheus.GaugeVec

	mu     sync.Mutex
	cfg    *pb.CheckerConfig
	gen    int // bumped by every Configure; a loop of an older one publishes nothing
	cancel context.CancelFunc
	latest *pb.Health
	// changed is closed and replaced on every new verdict: a watcher waits
	// on it and then sends only the newest verdict, so a slow watcher never
	// holds up the loop.
	changed chan struct{}
	closed  chan struct{}
}

// New returns a Checker that checks nothing until Configure.
func New() *Checker {
	reg := prometheus.NewRegistry()
	up := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: metricUp,
		Help: "1 if the file of the check existed at its last run, else 0.",
	}, []string{"check"})
	reg.MustRegister(up)
	return &Checker{reg: reg, up: up, changed: make(chan struct{}), closed: make(chan struct{})}
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
		}
		seen[ch.GetName()] = true
	}
	return nil
}

// Configure replaces the checks with cfg's and runs the first round at once.
// An invalid cfg leaves the running checks alone.
func (c *Checker) Configure(_ context.Context, cfg *pb.CheckerConfig) error {
	if err := validate(cfg); err != nil {
		return fmt.Errorf("configure filecheck: %w", err)
	}
	cfg = proto.CloneOf(cfg) // the caller may reuse its message
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
	c.cfg, c.latest = cfg, nil
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
	c.latest = h
	close(c.changed)
	c.changed = make(chan struct{})
}

// round runs every check once, in order, and returns the verdict: healthy
// when every file exists.
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
		}
		if err != nil {
			r.Error = err.Error()
			h.Healthy = false
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

// Status reports the verdict and every check's last result.
func (c *Checker) Status(context.Context) (*pb.PluginStatus, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := &pb.PluginStatus{State: "starting", Details: map[string]string{}}
	if c.latest == nil {
		return st, nil
	}
	st.State = "unhealthy"
	if c.latest.Healthy {
		st.State = "healthy"
	}
	for _, r := range c.latest.Checks {
		if r.Healthy {
			st.Details["check "+r.Name] = "present " + r.Address
		} else {
			st.Details["check "+r.Name] = "missing: " + r.Error
		}
	}
	return st, nil
}

// Gather returns the checker's metrics.
func (c *Checker) Gather() ([]*dto.MetricFamily, error) { return c.reg.Gather() }

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
	if c.cancel != nil {
		c.cancel()
	}
	return nil
}
