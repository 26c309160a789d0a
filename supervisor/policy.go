package supervisor

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/keep-vip/keep-vip/rpc"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// policy is the supervisor's state machine. It runs on one goroutine, so
// what it knows is never read half-updated: each event changes the facts,
// then apply brings the plugins in line with them.
type policy struct {
	s   *Supervisor
	log zerolog.Logger

	// Live plugin clients and the generation they belong to; events of an
	// older generation (a process already replaced) are ignored.
	impls map[string]any
	gens  map[string]uint64
	// started counts starts per plugin, so every start after the first is a
	// restart.
	started map[string]int

	leadership *pb.Leadership // nil while no elector runs
	leaderAt   time.Time      // when this member was last told it leads
	checksOK   bool           // the checker's last verdict; false until one arrives
	linkOK     bool           // the announcer's last word on the interface
	held       bool           // the announcer holds the VIP on our behalf
	shutting   bool

	checkerGrace *time.Timer

	// electorStopCause is why the elector last stopped (failover.go);
	// failoverTerm the last term whose failover was measured.
	electorStopCause string
	failoverTerm     uint64
	// handedOverTerm is the term whose leadership this member handed
	// over (failover.go).
	handedOverTerm uint64

	faults faults // faults.go
	// scrub takes the VIPs off the interface (scrub.go); a test replaces it.
	scrub func(why string)
}

func newPolicy(s *Supervisor) *policy {
	p := &policy{
		s:       s,
		log:     s.log,
		impls:   map[string]any{},
		gens:    map[string]uint64{},
		started: map[string]int{},
		linkOK:  true, // until the announcer says otherwise
	}
	p.faults.missingVIPs = p.missingVIPs
	p.scrub = p.scrubVIPs
	return p
}

// healthy is whether this member may serve the VIP: its checks pass, its
// interface can carry the VIP, and no fault (faults.go) keeps it out.
// An operator's maintenance counts as unhealthy.
func (p *policy) healthy() bool {
	return p.checksOK && p.linkOK && !p.s.ops.inMaintenance() && p.faults.eligible()
}

func (p *policy) loop(ctx context.Context) {
	// The periodic pass retries an acquire or release that failed.
	tick := time.NewTicker(p.s.cfg.ChecksInterval)
	defer tick.Stop()
	// systemd's watchdog is fed from here, so only a live loop feeds it.
	watchdogC, stopWatchdog := p.s.ops.watchdogC()
	defer stopWatchdog()
	for {
		var graceC <-chan time.Time
		if p.checkerGrace != nil {
			graceC = p.checkerGrace.C
		}
		select {
		case <-ctx.Done():
			p.log.Info().Str("vip", p.s.cfg.VIP).Str("plugin", rpc.KindAnnouncer).Msg("shutting down: releasing the VIP")
			p.shutting = true
			p.apply()
			return
		case ev := <-p.s.events:
			p.handle(ev)
		case <-graceC:
			p.checkerGrace = nil
			if p.impls[rpc.KindChecker] == nil && p.checksOK {
				p.log.Warn().Msg("checker still down: counting this member unhealthy")
				p.checksOK = false
			}
			p.apply()
		case <-tick.C:
			p.maybePreempt()
			p.apply()
		case <-watchdogC:
			p.s.ops.feedWatchdog()
		}
	}
}

func (p *policy) handle(ev event) {
	switch {
	case ev.reload != nil:
		p.reload(ev.reload)
	case ev.admin != nil:
		p.handleAdmin(ev.admin)
	case ev.leadership != nil:
		if ev.gen == p.gens[rpc.KindElector] && p.impls[rpc.KindElector] != nil {
			p.setLeadership(ev.leadership)
		}
	case ev.health != nil:
		if ev.gen == p.gens[rpc.KindChecker] && p.impls[rpc.KindChecker] != nil {
			p.setHealth(ev.health)
		}
	case ev.iface != nil:
		if ev.gen == p.gens[rpc.KindAnnouncer] && p.impls[rpc.KindAnnouncer] != nil {
			p.setInterface(ev.iface)
		}
	case ev.up:
		p.pluginUp(ev)
	case ev.startFailed:
		p.pluginStartFailed(ev)
	default:
		p.pluginDown(ev)
	}
	p.apply()
}

func (p *policy) pluginUp(ev event) {
	p.impls[ev.kind] = ev.impl
	p.gens[ev.kind] = ev.gen
	p.pluginStarted(ev.kind)
	if p.started[ev.kind] > 0 {
		p.s.metrics.restarts.WithLabelValues(ev.kind).Inc()
	}
	if ev.kind == rpc.KindElector {
		p.electorUp()
	}
	p.catchUpReload(ev.kind)
	p.started[ev.kind]++
	p.s.metrics.up.WithLabelValues(ev.kind).Set(1)
	if g, ok := ev.impl.(prometheus.Gatherer); ok {
		p.s.plugins.set(ev.kind, g)
	}
	switch ev.kind {
	case rpc.KindAnnouncer:
		p.setHeld(false) // a fresh announcer has removed any VIP it found
	case rpc.KindChecker:
		if p.checkerGrace != nil {
			p.checkerGrace.Stop()
			p.checkerGrace = nil
		}
	}
}

func (p *policy) pluginDown(ev event) {
	if ev.gen != p.gens[ev.kind] || p.impls[ev.kind] == nil {
		return // a start that failed, or an instance already replaced
	}
	delete(p.impls, ev.kind)
	p.s.plugins.set(ev.kind, nil)
	p.s.metrics.up.WithLabelValues(ev.kind).Set(0)
	lg := p.log.Info()
	if ev.err != nil && ev.err != errNotWanted && !p.shutting {
		lg = p.log.Warn().Err(ev.err)
	}
	lg.Str("plugin", ev.kind).Msg("plugin down")
	switch ev.kind {
	case rpc.KindElector:
		p.electorDown(ev)
		p.setLeadership(nil)
	case rpc.KindAnnouncer:
		// What it held is unknown now; its successor removes any VIP left,
		// but only once it runs: take them off now (scrub.go).
		if !p.shutting {
			p.scrub("announcer exited: " + errText(ev.err))
		}
		p.setHeld(false)
	case rpc.KindChecker:
		if !p.shutting && p.checkerGrace == nil {
			p.checkerGrace = time.NewTimer(checkerGraceIntervals * p.s.cfg.ChecksInterval)
		}
	}
}

func (p *policy) setLeadership(l *pb.Leadership) {
	was := p.isLeader()
	p.leadership = l
	if !was && p.isLeader() {
		p.leaderAt = time.Now()
	}
	state := memberFollower
	switch {
	case p.isLeader():
		state = memberLeader
	case l != nil && l.Role == pb.Role_ROLE_CANDIDATE:
		state = memberCandidate
	}
	p.s.metrics.state.Set(float64(state))
	p.s.metrics.isLeader.Set(b2f(p.isLeader()))
	if l == nil {
		if was {
			p.log.Warn().Msg("elector gone: no longer leader")
		}
		return
	}
	ev := p.log.Debug()
	if was != p.isLeader() {
		ev = p.log.Info()
	}
	ev.Str("role", roleName(l.Role)).Uint64("term", l.Term).Str("leader", l.LeaderId).Msg("leadership")
}

func (p *policy) setHealth(h *pb.Health) {
	for _, c := range h.Checks {
		p.s.metrics.checkPort.WithLabelValues(c.Name, c.Address).Set(b2f(c.Healthy))
		if !c.Healthy {
			p.log.Debug().Str("check", c.Name).Str("address", c.Address).Str("error", c.Error).Msg("check failed")
		}
	}
	if h.Healthy != p.checksOK {
		ev := p.log.Info()
		if !h.Healthy {
			ev = p.log.Warn()
			for _, c := range h.Checks {
				if !c.Healthy {
					ev = ev.Str("check_"+c.Name, c.Error)
				}
			}
		}
		ev.Bool("healthy", h.Healthy).Msg("checks changed")
	}
	p.checksOK = h.Healthy
	p.s.ops.sawHealth(h)
}

func (p *policy) setInterface(e *pb.InterfaceEvent) {
	if e.Usable != p.linkOK {
		ev := p.log.Info()
		if !e.Usable {
			ev = p.log.Warn()
		}
		ev.Str("interface", p.s.cfg.Interface).Bool("usable", e.Usable).Str("reason", e.Reason).Msg("interface changed")
	}
	p.linkOK = e.Usable
}

func (p *policy) setHeld(h bool) {
	p.held = h
	p.s.metrics.vipHeld.Set(b2f(h))
}

func (p *policy) isLeader() bool {
	return p.leadership != nil && p.leadership.Role == pb.Role_ROLE_LEADER && p.impls[rpc.KindElector] != nil
}

// apply brings the plugins in line with the facts. Order matters: the VIP
// is always released before leadership is handed over or the elector stops,
// so the next leader can never find it still here.
func (p *policy) apply() {
	p.probeVIP()
	p.publishHealth()
	electorRunner := p.s.runners[rpc.KindElector]
	wantElector := p.healthy() && !p.shutting
	if !wantElector && electorRunner.wanted() {
		p.release()
		p.transferLeadership()
		if p.s.ops.inMaintenance() && !p.shutting {
			p.log.Warn().Msg("maintenance: leaving the election until maintenance is off")
		} else if !p.shutting {
			p.log.Warn().Str("reason", p.s.ops.sickness(p)).Msg("unhealthy: leaving the election until healthy again")
		}
		electorRunner.setWant(false)
	}
	if wantElector && !electorRunner.wanted() {
		p.log.Info().Msg("healthy: joining the election")
		electorRunner.setWant(true)
	}
	if !p.shutting && p.healthy() && p.isLeader() {
		p.acquire()
		if !p.healthy() {
			// The VIP could not be held (faults.go): out at once.
			p.apply()
			return
		}
	} else {
		p.faults.vipFailing = time.Time{}
		p.release()
	}
	p.publish()
}

func (p *policy) acquire() {
	a, ok := p.impls[rpc.KindAnnouncer].(rpc.Announcer)
	if !ok || p.handedOver() {
		return
	}
	if p.held {
		p.verifyHeld()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	start := time.Now()
	if err := a.Acquire(ctx, p.acquireRequest()); err != nil {
		p.acquireFailed(err)
		return
	}
	now := time.Now()
	p.setHeld(true)
	// Two durations, named with their unit (zerolog prints milliseconds,
	// logs.go): the Acquire call alone, and since the elector said this
	// member leads. The failover itself (from the last word of the
	// previous leader) is logged and measured by vipAcquired.
	p.log.Info().Str("vip", p.s.cfg.VIP).Str("plugin", rpc.KindAnnouncer).Dur("acquire_ms", now.Sub(start)).
		Dur("since_leader_ms", now.Sub(p.leaderAt)).Msg("VIP acquired")
	p.vipAcquired(now)
	p.verifyHeld()
}

// acquireRequest is Acquire's argument: the term this member leads in,
// which BGP routes carry so that routers prefer the newest holder.
func (p *policy) acquireRequest() *pb.AcquireRequest {
	return &pb.AcquireRequest{Term: p.leadership.GetTerm()}
}

func (p *policy) release() {
	a, ok := p.impls[rpc.KindAnnouncer].(rpc.Announcer)
	if !ok || !p.held {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := a.Release(ctx); err != nil {
		// The announcer cannot be trusted with the VIP any more: kill it,
		// and take the VIPs off before anything else (a handover) happens;
		// its successor starts with the restart backoff.
		p.log.Error().Err(err).Str("vip", p.s.cfg.VIP).Str("plugin", rpc.KindAnnouncer).Msg("release VIP failed; restarting the announcer")
		p.s.runners[rpc.KindAnnouncer].killNow()
		p.scrub("release failed: " + plainError(err))
		p.setHeld(false)
		return
	}
	p.setHeld(false)
	p.log.Info().Str("vip", p.s.cfg.VIP).Str("plugin", rpc.KindAnnouncer).Msg("VIP released")
}

// transferLeadership hands leadership to the member the elector picks.
func (p *policy) transferLeadership() {
	reason := causeUnhealthy
	if p.shutting {
		reason = "shutdown"
	}
	p.transferLeadershipTo("", reason)
}

func roleName(r pb.Role) string { return rpc.RoleName(r) }

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
