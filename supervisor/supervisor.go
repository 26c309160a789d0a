// Package supervisor is keep-vip's parent process: it starts the four
// plugins, hands each its part of the config, restarts them when they die,
// and owns the one policy that matters: the VIP is held only by a healthy
// leader, and released first whenever that stops being true.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/keep-vip/keep-vip/rpc"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
	"github.com/keep-vip/keep-vip/supervisor/config"
)

// Bounds of the policy's calls into plugins: a stuck plugin must not hold
// the policy loop, least of all while it gives up the VIP.
const (
	callTimeout     = 2 * time.Second
	transferTimeout = 2 * time.Second
	// checkerGrace is how long a crashed checker's last verdict stands
	// before the node counts as unhealthy, in ChecksIntervals.
	checkerGraceIntervals = 3
)

// event is what runners and watch streams tell the policy loop.
type event struct {
	kind string
	gen  uint64
	// Exactly one of the following groups is set.
	up         bool
	impl       any
	pid        int
	err        error
	leadership *pb.Leadership
	health     *pb.Health
	iface      *pb.InterfaceEvent
	admin      *adminRequest  // from the admin socket (admin.go)
	reload     *reloadRequest // SIGHUP (reload.go)

	// startFailed goes with up false: the process never got configured.
	startFailed bool
}

// Supervisor runs one member of the cluster.
type Supervisor struct {
	cfg   *config.Config
	local config.Member
	log   zerolog.Logger
	paths map[string]string

	events  chan event
	runners map[string]*runner
	metrics *metrics
	plugins *pluginGatherer
	ops     *ops // status, maintenance, hooks, systemd (ops.go)
	// normal is the normal-class thread (sched.go) the balancer, the
	// checker and the hooks are started from; made by startOps.
	normal *spawner

	// live is cfg with the parts reloads applied; read by the runners'
	// setup funcs, written by the policy loop (reload.go).
	liveMu sync.Mutex
	live   *config.Config
	// startedWith is the live config each plugin's last setup used: a
	// reload that lands while a plugin starts is applied again once it is
	// up (policy.pluginUp).
	startedWith map[string]*config.Config

	// reloadFn answers the admin socket's reload (HandleReload, admin.go).
	reloadFn func(context.Context) error
}

// New resolves everything a start needs before anything is started: the
// local member, the interface, and every plugin binary.
func New(cfg *config.Config, log zerolog.Logger) (*Supervisor, error) {
	if _, err := priorityWanted(); err != nil {
		return nil, err
	}
	local, err := cfg.CheckHost()
	if err != nil {
		return nil, err
	}
	s := &Supervisor{
		cfg:     cfg,
		local:   local,
		log:     log.With().Str("member", local.ID).Logger(),
		paths:   map[string]string{},
		events:  make(chan event, 64),
		runners: map[string]*runner{},
	}
	configured := cfg.PluginPaths()
	var errs []error
	for _, kind := range rpc.Kinds {
		p, err := FindPlugin(kind, configured[kind])
		if err != nil {
			errs = append(errs, err)
		}
		s.paths[kind] = p
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s.metrics = newMetrics(cfg, local)
	s.plugins = &pluginGatherer{live: map[string]prometheus.Gatherer{}, log: s.log}
	return s, nil
}

// Local is this host's member.
func (s *Supervisor) Local() config.Member { return s.local }

// Run starts the plugins and applies the policy until ctx ends, then gives
// up the VIP, hands leadership over and stops every plugin.
func (s *Supervisor) Run(ctx context.Context) error {
	if s.cfg.Prometheus.Enabled {
		if err := serveMetrics(ctx, s.cfg.Prometheus.Address, prometheus.Gatherers{s.metrics.reg, s.plugins}, s.log); err != nil {
			return fmt.Errorf("prometheus.address %s: %w", s.cfg.Prometheus.Address, err)
		}
	}
	if err := s.startOps(); err != nil {
		return err
	}
	defer s.stopOps()
	setPriority(s.log)
	rctx, stopRunners := context.WithCancel(context.Background())
	defer stopRunners()
	for _, kind := range rpc.Kinds {
		r := s.newRunner(kind, s.normal)
		if timingCritical(kind) {
			r.raise = raiseCritical
		}
		s.runners[kind] = r
	}
	var wg sync.WaitGroup
	for _, kind := range rpc.Kinds {
		r := s.runners[kind]
		// The elector waits for the first healthy verdict.
		r.want = kind != rpc.KindElector
		wg.Add(1)
		go func() { defer wg.Done(); r.run(rctx) }()
	}
	s.log.Info().Str("address", s.local.Address).Str("vip", s.cfg.VIP).
		Str("interface", s.cfg.Interface).Msg("supervisor started")

	p := newPolicy(s)
	p.loop(ctx)
	s.ops.stopping()
	p.drainBalancer()

	// Shutting down: the policy has released the VIP and handed leadership
	// over; now stop the plugins, draining their last events meanwhile.
	s.log.Info().Msg("stopping plugins")
	stopRunners()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for {
		select {
		case ev := <-s.events:
			p.handle(ev)
		case <-done:
			s.log.Info().Msg("supervisor stopped")
			return nil
		}
	}
}

func (s *Supervisor) newRunner(kind string, spawn *spawner) *runner {
	r := &runner{
		kind:   kind,
		path:   s.paths[kind],
		log:    s.log.With().Str("plugin", kind).Logger(),
		spawn:  spawn,
		events: s.events,
		wake:   make(chan struct{}, 1),
	}
	switch kind {
	case rpc.KindElector:
		r.setup = func(ctx context.Context, impl any) error {
			// The live config: a reload may have changed the members.
			cfg := s.setupConfig(kind).ElectorConfig(s.local)
			// Read at every start, so renewed certificates are picked up
			// by the next elector start.
			tls, err := s.cfg.ReadRaftTLS()
			if err != nil {
				return err
			}
			cfg.Tls = tls
			return impl.(rpc.Elector).Configure(ctx, cfg)
		}
		r.watch = func(ctx context.Context, impl any, gen uint64) error {
			return impl.(rpc.Elector).Watch(ctx, func(l *pb.Leadership) error {
				return s.send(ctx, event{kind: kind, gen: gen, leadership: l})
			})
		}
	case rpc.KindChecker:
		r.setup = func(ctx context.Context, impl any) error {
			return impl.(rpc.Checker).Configure(ctx, s.setupConfig(kind).CheckerConfig())
		}
		r.watch = func(ctx context.Context, impl any, gen uint64) error {
			return impl.(rpc.Checker).Watch(ctx, func(h *pb.Health) error {
				return s.send(ctx, event{kind: kind, gen: gen, health: h})
			})
		}
	case rpc.KindAnnouncer:
		r.setup = func(ctx context.Context, impl any) error {
			return impl.(rpc.Announcer).Configure(ctx, s.cfg.AnnouncerConfigFor(s.local))
		}
		r.watch = func(ctx context.Context, impl any, gen uint64) error {
			return impl.(rpc.Announcer).Watch(ctx, func(e *pb.InterfaceEvent) error {
				return s.send(ctx, event{kind: kind, gen: gen, iface: e})
			})
		}
	case rpc.KindBalancer:
		r.setup = func(ctx context.Context, impl any) error {
			return impl.(rpc.Balancer).Configure(ctx, s.setupConfig(kind).BalancerConfig())
		}
	}
	return r
}

func (s *Supervisor) send(ctx context.Context, ev event) error {
	select {
	case s.events <- ev:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// offlineTimeout bounds one offline request to the elector binary (it
// opens the data dir, which a stopped member holds no lock on).
const offlineTimeout = 30 * time.Second

// electorOffline asks the configured elector binary for one offline
// operation on this member's data dir: the supervisor has no Raft code.
func electorOffline(cfg *config.Config, local config.Member, op pb.ElectorOfflineRequest_Op, servers []*pb.ConsensusServer) (*pb.ElectorOfflineReply, error) {
	path, err := FindPlugin(rpc.KindElector, cfg.Plugins.Elector)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), offlineTimeout)
	defer cancel()
	return rpc.CallElectorOffline(ctx, path, &pb.ElectorOfflineRequest{Op: op, Config: cfg.ElectorConfig(local), Servers: servers})
}

// MembersDrift says how the file's members differ from the Raft
// configuration: the running member's, asked over the admin socket, else
// the one stored in dataDir. "" when they match or nothing is stored yet.
func MembersDrift(cfg *config.Config) (string, error) {
	local, err := cfg.CheckHost()
	if err != nil {
		return "", err
	}
	if resp, err := AdminCall(cfg.AdminSocket, AdminRequest{Command: AdminStatus}, 3*time.Second); err == nil && resp.Status != nil {
		ri := resp.Status.Raft
		if ri == nil || ri.Error != "" || len(ri.Servers) == 0 {
			return "", nil
		}
		servers := make([]*pb.ConsensusServer, len(ri.Servers))
		for i, srv := range ri.Servers {
			servers[i] = &pb.ConsensusServer{Id: srv.ID, Address: srv.Address, Voter: srv.Voter}
		}
		reply, err := electorOffline(cfg, local, pb.ElectorOfflineRequest_OP_DIFFERENCES, servers)
		if err != nil {
			return "", err
		}
		if d := reply.GetDifferences(); len(d) > 0 {
			return "the running member's Raft configuration differs from this file (reload to apply it): " + strings.Join(d, "; "), nil
		}
		return "", nil
	}
	reply, err := electorOffline(cfg, local, pb.ElectorOfflineRequest_OP_STORED_DIFFERENCES, nil)
	if err != nil || len(reply.GetDifferences()) == 0 {
		return "", err
	}
	return "the Raft configuration stored in " + cfg.DataDir + " differs from this file: " + strings.Join(reply.GetDifferences(), "; "), nil
}

// Recover rewrites the Raft configuration stored in dataDir to the file's
// members, for a cluster that lost its quorum for good. The member must be
// stopped.
func Recover(cfg *config.Config) (string, error) {
	local, err := cfg.CheckHost()
	if err != nil {
		return "", err
	}
	if _, err := AdminCall(cfg.AdminSocket, AdminRequest{Command: AdminStatus}, 3*time.Second); err == nil {
		return "", fmt.Errorf("keep-vip-supervisor is running here (it answers on %s): stop it first", cfg.AdminSocket)
	}
	reply, err := electorOffline(cfg, local, pb.ElectorOfflineRequest_OP_RECOVER, nil)
	if err != nil {
		return "", err
	}
	ids := make([]string, len(reply.GetServers()))
	for i, s := range reply.GetServers() {
		ids[i] = s.GetId() + " (" + s.GetAddress() + ")"
	}
	return strings.Join(ids, ", "), nil
}

// Validate loads a config the way `nginx -t` does and has each plugin
// binary validate its part (validate.go); with host it also checks what
// depends on this host, and every plugin binary must be there. notes are
// lines worth saying that do not make the config invalid.
func Validate(ctx context.Context, path string, host bool) (cfg *config.Config, notes []string, err error) {
	if cfg, err = config.Load(path); err != nil {
		return nil, nil, err
	}
	var local *config.Member
	if host {
		m, err := cfg.CheckHost()
		if err != nil {
			return nil, nil, err
		}
		local = &m
	}
	notes, err = ValidatePlugins(ctx, cfg, local, host)
	if err != nil {
		return nil, notes, err
	}
	return cfg, notes, nil
}
