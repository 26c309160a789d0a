package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/rs/zerolog"

	"github.com/keep-vip/keep-vip/rpc"
)

// LibexecDir is where packages install the plugin binaries.
const LibexecDir = "/usr/libexec/keep-vip"

// Restart backoff of a crashed plugin: doubles from the first delay up to the
// cap, and starts again from the first once a plugin has run for resetAfter.
const (
	backoffFirst      = 100 * time.Millisecond
	backoffMax        = 10 * time.Second
	backoffResetAfter = 30 * time.Second
	pluginStartWait   = 15 * time.Second
	exitPollInterval  = 50 * time.Millisecond
)

// BinaryName is the file name of a plugin kind's default binary.
func BinaryName(kind string) string { return "keep-vip-" + kind }

// FindPlugin resolves a plugin binary: the path the config names, else the
// default binary next to the supervisor, else in LibexecDir.
func FindPlugin(kind, configured string) (string, error) {
	if configured != "" {
		if err := executable(configured); err != nil {
			return "", fmt.Errorf("plugins.%s: %w", kind, err)
		}
		return configured, nil
	}
	var dirs []string
	if self, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Dir(self))
	}
	dirs = append(dirs, LibexecDir)
	for _, d := range dirs {
		p := filepath.Join(d, BinaryName(kind))
		if executable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("plugin %s: %s not found in %v; install it or set plugins.%s", kind, BinaryName(kind), dirs, kind)
}

func executable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("%s: %w", p, errors.Unwrap(err))
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("%s: not an executable file", p)
	}
	return nil
}

// instance is one running plugin process.
type instance struct {
	client *plugin.Client
	impl   any // rpc.Elector, rpc.Announcer, ...
	pid    int
	cmd    *exec.Cmd
}

// runner keeps one plugin kind running while it is wanted: it starts the
// process, hands it its configuration, restarts it with backoff when it
// dies, and tells the policy loop about every start and exit.
type runner struct {
	kind  string
	path  string
	log   zerolog.Logger
	spawn *spawner
	// setup configures a fresh instance; watch, if set, streams its events
	// and returns when the stream breaks.
	setup func(ctx context.Context, impl any) error
	watch func(ctx context.Context, impl any, gen uint64) error
	// raise, if set, sets a configured instance's scheduling class
	// (sched.go).
	raise  func(pid int) error
	events chan<- event

	mu      sync.Mutex
	want    bool
	wake    chan struct{}
	current *instance
}

func (r *runner) setWant(w bool) {
	r.mu.Lock()
	changed := r.want != w
	r.want = w
	r.mu.Unlock()
	if changed {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
}

func (r *runner) wanted() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.want
}

// pid is the running instance's process id, or 0.
func (r *runner) pid() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.current == nil {
		return 0
	}
	return r.current.pid
}

// run is the runner's loop; it returns once ctx ends and its process is gone.
func (r *runner) run(ctx context.Context) {
	var gen uint64
	failures := 0
	for {
		if !r.wanted() {
			select {
			case <-r.wake:
				continue
			case <-ctx.Done():
				return
			}
		}
		gen++
		started := time.Now()
		inst, err := r.start(ctx)
		if err == nil {
			r.mu.Lock()
			r.current = inst
			r.mu.Unlock()
			r.events <- event{kind: r.kind, gen: gen, up: true, impl: inst.impl, pid: inst.pid}
			err = r.supervise(ctx, inst, gen)
			r.stop(inst)
			r.mu.Lock()
			r.current = nil
			r.mu.Unlock()
		}
		r.events <- event{kind: r.kind, gen: gen, up: false, err: err, startFailed: inst == nil}
		if ctx.Err() != nil {
			return
		}
		if !r.wanted() {
			failures = 0
			continue
		}
		if time.Since(started) > backoffResetAfter {
			failures = 0
		}
		delay := backoffFirst << min(failures, 10)
		if delay > backoffMax {
			delay = backoffMax
		}
		failures++
		r.log.Warn().Err(err).Dur("restart_in", delay).Msg("plugin stopped; restarting")
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return
		}
	}
}

var errNotWanted = errors.New("stopped by the supervisor")

// supervise waits until the instance exits, its stream breaks, it is no
// longer wanted, or ctx ends.
func (r *runner) supervise(ctx context.Context, inst *instance, gen uint64) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	streamErr := make(chan error, 1)
	if r.watch != nil {
		go func() { streamErr <- r.watch(wctx, inst.impl, gen) }()
	}
	exited, release, err := watchExit(inst.pid)
	var pollC <-chan time.Time
	if err != nil {
		r.log.Debug().Err(err).Dur("every", exitPollInterval).Msg("polling for the plugin's exit instead")
		tick := time.NewTicker(exitPollInterval)
		defer tick.Stop()
		pollC = tick.C
	} else {
		defer release()
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.wake:
			if !r.wanted() {
				return errNotWanted
			}
		case err := <-streamErr:
			if inst.client.Exited() {
				return fmt.Errorf("process %d exited", inst.pid)
			}
			return fmt.Errorf("stream broke: %w", err)
		case <-exited:
			return fmt.Errorf("process %d exited", inst.pid)
		case <-pollC:
			if inst.client.Exited() {
				return fmt.Errorf("process %d exited", inst.pid)
			}
		}
	}
}

// start launches the plugin process from the spawner thread, dispenses its
// client and configures it.
func (r *runner) start(ctx context.Context) (*instance, error) {
	cmd := exec.Command(r.path)
	cmd.Env = append(rpc.PluginEnv(r.kind, os.Environ()), rpc.LogLevelEnv+"="+r.log.GetLevel().String())
	// SIGTERM, not SIGKILL: the announcer takes its VIP away on SIGTERM.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  rpc.Handshake,
		Plugins:          plugin.PluginSet{r.kind: rpc.PluginMap[r.kind]},
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		StartTimeout:     pluginStartWait,
		Stderr:           newPluginLogWriter(r.log),
		// Plugin lines reach our log through Stderr; go-plugin's own copy
		// of them would only duplicate them.
		Logger: hclog.NewNullLogger(),
	})
	var err error
	r.spawn.do(func() { _, err = client.Start() })
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("start %s: %w", r.path, err)
	}
	inst := &instance{client: client, cmd: cmd}
	if cmd.Process != nil {
		inst.pid = cmd.Process.Pid
	}
	proto, err := client.Client()
	if err == nil {
		inst.impl, err = proto.Dispense(r.kind)
	}
	if err == nil {
		cctx, cancel := context.WithTimeout(ctx, pluginStartWait)
		err = r.setup(cctx, inst.impl)
		cancel()
		if err != nil {
			err = fmt.Errorf("configure: %w", err)
		}
	}
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("plugin %s: %w", r.kind, err)
	}
	if r.raise != nil && inst.pid != 0 {
		if err := r.raise(inst.pid); err != nil {
			r.log.Warn().Err(err).Int("pid", inst.pid).Msg("scheduling: cannot raise the plugin to the supervisor's class; it runs at normal priority")
		}
	}
	r.log.Info().Int("pid", inst.pid).Str("path", r.path).Msg("plugin started")
	return inst, nil
}

func (r *runner) stop(inst *instance) {
	// Kill asks the plugin to shut down (its Close runs) and kills it if it
	// has not gone within go-plugin's grace period.
	inst.client.Kill()
	r.log.Info().Int("pid", inst.pid).Str("exit", exitOf(inst.cmd)).Msg("plugin stopped")
}

// exitOf says how a stopped plugin ended: "exit status 0" when it served
// go-plugin's Shutdown and exited, "signal: killed" when it did not within
// go-plugin's grace period (2 s) and was killed.
func exitOf(cmd *exec.Cmd) string {
	// Kill returns after go-plugin's goroutine that waits for the process.
	if cmd == nil || cmd.ProcessState == nil {
		return "unknown"
	}
	return cmd.ProcessState.String()
}

// kill stops the running instance at once; the run loop then restarts it.
func (r *runner) kill() {
	r.mu.Lock()
	inst := r.current
	r.mu.Unlock()
	if inst != nil {
		go inst.client.Kill()
	}
}

// killNow SIGKILLs the running instance before it returns, so it can no
// longer act (an announcer would add back a VIP it thinks it holds), and
// leaves the reaping to go-plugin; the run loop then restarts it.
func (r *runner) killNow() {
	r.mu.Lock()
	inst := r.current
	r.mu.Unlock()
	if inst == nil {
		return
	}
	if inst.cmd != nil && inst.cmd.Process != nil {
		if err := inst.cmd.Process.Kill(); err != nil {
			r.log.Debug().Err(err).Int("pid", inst.pid).Msg("kill")
		}
	}
	go inst.client.Kill()
}
