package supervisor

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/keep-vip/keep-vip/supervisor/config"
)

const (
	// hookQueueLen bounds the events waiting for a hook; beyond it an
	// event's hook is dropped (and counted as failed) rather than ever
	// making the policy loop wait.
	hookQueueLen = 32
	// hookKillGrace is how long a timed-out hook's process group has
	// between SIGTERM and SIGKILL.
	hookKillGrace = 2 * time.Second
	// hookOutputMax bounds what is kept of a hook's output for the log.
	hookOutputMax = 4096
)

// hookRunner runs the configured event hooks one at a time, in event order,
// on its own goroutine: the policy loop only queues them.
type hookRunner struct {
	cfg   config.Hooks
	base  map[string]string
	log   zerolog.Logger
	spawn *spawner // the normal-class thread hooks start from (sched.go)
	queue chan hookJob
	done  chan struct{}

	runs     *prometheus.CounterVec
	failures *prometheus.CounterVec

	mu     sync.Mutex
	closed bool
	counts map[string][2]int64 // event -> runs, failures
}

type hookJob struct {
	event string
	env   map[string]string
	at    time.Time
}

func newHookRunner(cfg *config.Config, local config.Member, log zerolog.Logger, spawn *spawner) *hookRunner {
	h := &hookRunner{
		cfg: cfg.Hooks,
		base: map[string]string{
			"KEEPVIP_VIP":       cfg.VIP,
			"KEEPVIP_INTERFACE": cfg.Interface,
			"KEEPVIP_MEMBER":    local.ID,
			"KEEPVIP_ADDRESS":   local.Address,
			"KEEPVIP_CLUSTER":   cfg.Cluster,
		},
		log:   log.With().Str("component", "hooks").Logger(),
		spawn: spawn,
		queue: make(chan hookJob, hookQueueLen),
		done:  make(chan struct{}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keep_vip_supervisor_hook_runs_total",
			Help: "Event hooks run, by event.",
		}, []string{"event"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keep_vip_supervisor_hook_failures_total",
			Help: "Event hooks that failed, timed out or were dropped, by event.",
		}, []string{"event"}),
		counts: map[string][2]int64{},
	}
	for _, ev := range config.HookEvents {
		if cfg.Hooks.Command(ev) != nil {
			h.runs.WithLabelValues(ev)
			h.failures.WithLabelValues(ev)
		}
	}
	go h.work()
	return h
}

func (h *hookRunner) register(reg *prometheus.Registry) {
	reg.MustRegister(h.runs, h.failures)
}

// fire queues event's hook, if one is configured; it never blocks.
func (h *hookRunner) fire(event string, env map[string]string) {
	if h == nil || h.cfg.Command(event) == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	select {
	case h.queue <- hookJob{event: event, env: env, at: time.Now()}:
	default:
		h.count(event, false, true)
		h.failures.WithLabelValues(event).Inc()
		h.log.Error().Str("event", event).Int("queued", hookQueueLen).Msg("hook dropped: too many hooks waiting")
	}
}

func (h *hookRunner) work() {
	defer close(h.done)
	for job := range h.queue {
		h.run(job)
	}
}

func (h *hookRunner) count(event string, run, failed bool) {
	c := h.counts[event]
	if run {
		c[0]++
	}
	if failed {
		c[1]++
	}
	h.counts[event] = c
}

// run runs one hook in its own process group, bounded by hooks.timeout:
// then the group gets SIGTERM, and SIGKILL hookKillGrace later.
func (h *hookRunner) run(job hookJob) {
	argv := h.cfg.Command(job.event)
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], append(append([]string{}, argv[1:]...), job.event)...)
	cmd.Dir = "/"
	cmd.Env = os.Environ()
	for k, v := range h.base {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	for k, v := range job.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Env = append(cmd.Env, "KEEPVIP_EVENT="+job.event, "KEEPVIP_TIME="+job.at.UTC().Format(time.RFC3339Nano))
	out := &cappedBuffer{max: hookOutputMax}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = hookKillGrace

	start := time.Now()
	var err error
	// Started from the normal-class thread: a hook is the operator's
	// program, not the election's, and runs at nice 0 whatever the
	// supervisor runs at.
	h.spawn.do(func() { err = cmd.Start() })
	if err == nil {
		err = cmd.Wait()
		if ctx.Err() != nil {
			// Whatever of the group outlived SIGTERM goes now.
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			err = errors.New("timed out after " + h.cfg.Timeout.String() + "; process group killed")
		}
	}
	h.runs.WithLabelValues(job.event).Inc()
	h.mu.Lock()
	h.count(job.event, true, err != nil)
	h.mu.Unlock()
	lg := h.log.Info()
	if err != nil {
		h.failures.WithLabelValues(job.event).Inc()
		lg = h.log.Error().Err(err)
	}
	lg.Str("event", job.event).Str("command", strings.Join(argv, " ")).
		Dur("took_ms", time.Since(start)).Dur("queued_ms", start.Sub(job.at)).
		Str("output", strings.TrimSpace(out.String())).Msg("hook ran")
}

// close stops taking hooks and waits, bounded by about one hook timeout
// and never more than 30s, for the queued ones (the release hook of a
// shutdown among them); a stop is never held long by hooks.
func (h *hookRunner) close() {
	if h == nil {
		return
	}
	h.mu.Lock()
	if !h.closed {
		h.closed = true
		close(h.queue)
	}
	h.mu.Unlock()
	wait := min(h.cfg.Timeout+hookKillGrace+time.Second, 30*time.Second)
	select {
	case <-h.done:
	case <-time.After(wait):
		h.log.Warn().Dur("waited", wait).Msg("hooks still running at exit")
	}
}

func (h *hookRunner) info() []HookInfo {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []HookInfo
	for _, ev := range config.HookEvents {
		argv := h.cfg.Command(ev)
		if argv == nil {
			continue
		}
		c := h.counts[ev]
		out = append(out, HookInfo{Event: ev, Command: strings.Join(argv, " "), Runs: c[0], Failures: c[1]})
	}
	return out
}

// cappedBuffer keeps the first max bytes written to it.
type cappedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *cappedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
