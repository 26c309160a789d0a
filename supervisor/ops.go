package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keep-vip/keep-vip/rpc"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
	"github.com/keep-vip/keep-vip/supervisor/config"
)

// Version is the supervisor's version, shown by status; main sets it.
var Version = "dev"

// ops is what operators see and steer of a running supervisor: the status
// snapshot the admin socket serves, the maintenance flag, the event hooks
// and the systemd notifications. The policy loop owns the fields marked
// loop-only and publishes a copy after every pass, so a status request
// never waits for the loop, and a slow hook or a dead socket never delays
// it.
type ops struct {
	s       *Supervisor
	started time.Time
	notify  *notifier
	hooks   *hookRunner
	admin   *adminServer

	maintOn     prometheus.Gauge
	maintenance maintenance // loop-only

	// loop-only: what the last pass saw, to detect transitions.
	lastHealth *pb.Health
	seenHeld   bool
	seenSick   bool
	ready      bool
	statusLine string

	mu   sync.Mutex
	snap Status
	// elector is the running elector (nil when none), for status's Raft
	// section; set by the policy loop at every pass.
	elector rpc.Elector
	// announcer likewise, for status's bgp section.
	announcer rpc.Announcer
}

// maintenance is persisted as JSON in the data directory, so a member in
// maintenance stays out of the election across supervisor restarts and
// reboots until an operator turns it off.
type maintenance struct {
	On     bool      `json:"on"`
	Since  time.Time `json:"since"`
	Reason string    `json:"reason,omitempty"`
}

// Status is `keep-vip-supervisor status`: this member as its supervisor
// sees it.
type Status struct {
	Version   string    `json:"version"`
	Cluster   string    `json:"cluster"`
	Member    string    `json:"member"`
	Address   string    `json:"address"`
	VIP       string    `json:"vip"`
	Interface string    `json:"interface"`
	PID       int       `json:"pid"`
	Started   time.Time `json:"started"`
	Ready     bool      `json:"ready"`

	// Role is leader, follower, candidate, or "out" while this member
	// stays out of the election (unhealthy, in maintenance) or its elector
	// is down.
	Role string `json:"role"`
	Term uint64 `json:"term"`
	// Leader is the leader's id as this member last heard it; the leader
	// is the VIP holder.
	Leader    string `json:"leader"`
	VIPHolder string `json:"vip_holder"`
	// HoldsVIP is whether this member has its announcer hold the VIP.
	HoldsVIP   bool `json:"holds_vip"`
	InElection bool `json:"in_election"`

	// Unhealthy says why Healthy is false, one reason each (faults.go).
	Unhealthy []string `json:"unhealthy,omitempty"`

	Healthy     bool         `json:"healthy"`
	ChecksOK    bool         `json:"checks_ok"`
	InterfaceOK bool         `json:"interface_ok"`
	Maintenance Maintenance  `json:"maintenance"`
	Checks      []CheckInfo  `json:"checks"`
	Plugins     []PluginInfo `json:"plugins"`
	Hooks       []HookInfo   `json:"hooks,omitempty"`
	// Raft is the elector's view of the cluster's membership; absent while
	// no elector runs.
	Raft *RaftInfo `json:"raft,omitempty"`
	// BGP is each BGP session of the announcer; absent without a bgp
	// section.
	BGP []BGPPeerInfo `json:"bgp,omitempty"`
}

// Maintenance is the maintenance flag as status shows it.
type Maintenance struct {
	On     bool      `json:"on"`
	Since  time.Time `json:"since,omitzero"`
	Reason string    `json:"reason,omitempty"`
}

// CheckInfo is one check's last result.
type CheckInfo struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	Healthy bool   `json:"healthy"`
	Error   string `json:"error,omitempty"`
}

// PluginInfo is one plugin process.
type PluginInfo struct {
	Name     string `json:"name"`
	Path     string `json:"path"`
	Up       bool   `json:"up"`
	PID      int    `json:"pid"`
	Restarts int    `json:"restarts"`
	// Error is why its last start failed, while it has not started since.
	Error string `json:"error,omitempty"`
}

// HookInfo counts one event's hook runs.
type HookInfo struct {
	Event    string `json:"event"`
	Command  string `json:"command"`
	Runs     int64  `json:"runs"`
	Failures int64  `json:"failures"`
}

// startOps loads the maintenance flag, starts the hook runner and opens the
// admin socket.
func (s *Supervisor) startOps() error {
	o := &ops{
		s:       s,
		started: time.Now(),
		notify:  newNotifier(s.log),
		maintOn: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keep_vip_supervisor_maintenance",
			Help: "1 while this member is in maintenance: out of the election, VIP given up.",
		}),
	}
	if s.normal == nil {
		s.normal = newNormalSpawner(s.log)
	}
	o.hooks = newHookRunner(s.cfg, s.local, s.log, s.normal)
	if err := s.metrics.reg.Register(o.maintOn); err != nil {
		return err
	}
	o.hooks.register(s.metrics.reg)
	m, err := loadMaintenance(s.cfg.MaintenancePath())
	if err != nil {
		// Unreadable: stay out rather than take the VIP against an
		// operator's wish.
		s.log.Error().Err(err).Msg("maintenance flag unreadable: staying in maintenance until turned off")
		m = maintenance{On: true, Since: time.Now(), Reason: "maintenance flag unreadable: " + err.Error()}
	}
	o.maintenance = m
	o.maintOn.Set(b2f(m.On))
	if m.On {
		s.log.Warn().Time("since", m.Since).Str("reason", m.Reason).
			Msg("in maintenance: staying out of the election (keep-vip-supervisor maintenance off to end it)")
	}
	// Without its admin socket the member still does its job; only status
	// and maintenance are unavailable, so that is an error line, not a
	// failed start.
	if o.admin, err = listenAdmin(s.cfg.AdminSocket, o, s.log); err != nil {
		s.log.Error().Err(err).Str("adminSocket", s.cfg.AdminSocket).
			Msg("admin socket unavailable: status and maintenance will not work for this supervisor")
	}
	o.publishStatic()
	s.ops = o
	return nil
}

// stopOps closes the admin socket and waits, bounded, for queued hooks.
func (s *Supervisor) stopOps() {
	if s.ops == nil {
		return
	}
	s.ops.admin.close()
	s.ops.hooks.close()
}

// inMaintenance is whether an operator keeps this member out; nil-safe so
// policy tests need no ops.
func (o *ops) inMaintenance() bool { return o != nil && o.maintenance.On }

func loadMaintenance(path string) (maintenance, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return maintenance{}, nil
	}
	if err != nil {
		return maintenance{}, err
	}
	var m maintenance
	if err := json.Unmarshal(raw, &m); err != nil {
		return maintenance{}, fmt.Errorf("%s: %w", path, err)
	}
	m.On = true // the file's presence is what counts
	return m, nil
}

func saveMaintenance(path string, m maintenance) error {
	if !m.On {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	raw, _ := json.Marshal(m)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(raw, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// setMaintenance runs on the policy loop.
func (p *policy) setMaintenance(on bool, reason string) error {
	o := p.s.ops
	if o.maintenance.On == on {
		return nil
	}
	m := maintenance{On: on}
	if on {
		m.Since, m.Reason = time.Now(), reason
	}
	o.maintenance = m
	o.maintOn.Set(b2f(on))
	if on {
		p.log.Warn().Str("reason", reason).Msg("maintenance on: giving up the VIP and leaving the election")
	} else {
		p.log.Info().Msg("maintenance off: rejoining the election")
	}
	p.apply()
	if err := saveMaintenance(p.s.cfg.MaintenancePath(), m); err != nil {
		p.log.Error().Err(err).Msg("maintenance flag not saved: it holds until the supervisor restarts only")
		return fmt.Errorf("applied, but not saved (it holds until the supervisor restarts): %w", err)
	}
	return nil
}

// publishStatic fills the parts of the snapshot that never change.
func (o *ops) publishStatic() {
	s := o.s
	o.mu.Lock()
	defer o.mu.Unlock()
	o.snap = Status{
		Version: Version, Cluster: s.cfg.Cluster, Member: s.local.ID, Address: s.local.Address,
		VIP: s.cfg.VIP, Interface: s.cfg.Interface, PID: os.Getpid(), Started: o.started,
		Role: "out", Maintenance: Maintenance(o.maintenance),
	}
}

// publish runs at the end of every policy pass: it fires the hooks of what
// changed, tells systemd, and publishes the status snapshot.
func (p *policy) publish() {
	o := p.s.ops
	if o == nil {
		return
	}
	o.fireHooks(p)
	o.tellSystemd(p)

	st := Status{}
	o.mu.Lock()
	st = o.snap
	o.mu.Unlock()
	st.Ready = o.ready
	st.Role, st.Term, st.Leader = "out", 0, ""
	if l := p.leadership; l != nil && p.impls[rpc.KindElector] != nil {
		st.Role, st.Term, st.Leader = roleName(l.Role), l.Term, l.LeaderId
	}
	st.VIPHolder = st.Leader
	st.HoldsVIP = p.held
	st.InElection = p.s.runners[rpc.KindElector].wanted()
	st.Healthy = p.reportedHealthy()
	st.Unhealthy = nil
	for _, r := range p.reasons() {
		st.Unhealthy = append(st.Unhealthy, r.text)
	}
	st.ChecksOK = p.checksOK
	st.InterfaceOK = p.linkOK
	st.Maintenance = Maintenance(o.maintenance)
	st.Checks = nil
	if h := o.lastHealth; h != nil {
		for _, c := range h.Checks {
			st.Checks = append(st.Checks, CheckInfo{Name: c.Name, Address: c.Address, Healthy: c.Healthy, Error: c.Error})
		}
	}
	st.Plugins = st.Plugins[:0:0]
	for _, kind := range rpc.Kinds {
		pi := PluginInfo{Name: kind, Path: p.s.paths[kind], Up: p.impls[kind] != nil, Restarts: max(p.started[kind]-1, 0),
			Error: p.faults.startErr[kind]}
		if r := p.s.runners[kind]; r != nil && pi.Up {
			pi.PID = r.pid()
		}
		st.Plugins = append(st.Plugins, pi)
	}
	o.mu.Lock()
	o.snap = st
	o.elector, _ = p.impls[rpc.KindElector].(rpc.Elector)
	o.announcer, _ = p.impls[rpc.KindAnnouncer].(rpc.Announcer)
	o.mu.Unlock()
}

// status is the latest snapshot, with the hook counts. It reads nothing
// the policy loop or Run writes (the runners map among them), so a request
// at any moment of a start or stop is safe.
func (o *ops) status() Status {
	o.mu.Lock()
	st := o.snap
	st.Checks = append([]CheckInfo(nil), st.Checks...)
	st.Plugins = append([]PluginInfo(nil), st.Plugins...)
	o.mu.Unlock()
	st.Hooks = o.hooks.info()
	return st
}

// fireHooks queues the hooks of this pass's transitions.
func (o *ops) fireHooks(p *policy) {
	if p.held != o.seenHeld {
		o.seenHeld = p.held
		ev := config.HookRelease
		if p.held {
			ev = config.HookAcquire
		}
		o.hooks.fire(ev, o.hookEnv(p, ""))
	}
	why := o.sickness(p)
	sick := why != "" && !p.shutting
	if sick && !o.seenSick {
		o.hooks.fire(config.HookUnhealthy, o.hookEnv(p, why))
	}
	o.seenSick = sick
}

func (o *ops) hookEnv(p *policy, reason string) map[string]string {
	role, term, leader := "out", uint64(0), ""
	if l := p.leadership; l != nil {
		role, term, leader = roleName(l.Role), l.Term, l.LeaderId
	}
	return map[string]string{
		"KEEPVIP_ROLE":   role,
		"KEEPVIP_TERM":   fmt.Sprint(term),
		"KEEPVIP_LEADER": leader,
		"KEEPVIP_REASON": reason,
	}
}
