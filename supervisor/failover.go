package supervisor

import (
	"context"
	"time"

	"github.com/keep-vip/keep-vip/rpc"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// Failover observability and the preferred-holder handover.

// Causes of an elector restart, the label of
// keep_vip_supervisor_elector_restarts_total.
const (
	causeUnhealthy = "unhealthy" // stopped because checks or interface failed
	causeCrash     = "crash"     // exited or stopped answering by itself
)

// electorDown remembers why the elector stopped, for the restart's cause.
func (p *policy) electorDown(ev event) {
	p.electorStopCause = causeCrash
	if ev.err == errNotWanted {
		p.electorStopCause = causeUnhealthy
	}
}

// electorUp counts a restart by the cause of the stop before it.
func (p *policy) electorUp() {
	if p.started[rpc.KindElector] > 0 && p.electorStopCause != "" {
		p.s.metrics.failover.electorRestarts.WithLabelValues(p.electorStopCause).Inc()
	}
	p.electorStopCause = ""
}

// vipAcquired measures, once per term this member leads, how long the
// failover took as it saw it: the elector reports when this member had last
// heard from the previous leader; the VIP is held now. The elector is asked
// off the policy loop, which must not wait for it.
func (p *policy) vipAcquired(at time.Time) {
	if p.leadership == nil || p.leadership.Term == p.failoverTerm {
		return
	}
	p.failoverTerm = p.leadership.Term
	e, ok := p.impls[rpc.KindElector].(rpc.Elector)
	if !ok {
		return
	}
	m, log, term := p.s.metrics.failover, p.log, p.leadership.Term
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		st, err := e.Status(ctx)
		if err != nil {
			return
		}
		ns := st.GetElector().GetContactBeforeLeadingUnixNano()
		if ns == 0 {
			return // never heard from a leader before: a first election
		}
		contact := time.Unix(0, ns)
		if contact.After(at) {
			return
		}
		d := at.Sub(contact)
		m.lastFailover.Set(d.Seconds())
		log.Info().Uint64("term", term).Dur("failover_ms", d).Time("last_contact", contact).
			Msg("failover: VIP held after losing contact with the previous leader")
	}()
}

// maybePreempt hands leadership to the member the elector proposes under
// raft.preempt: the VIP is released first, as for a handover on bad health,
// so it is never on two members. If the handover fails this member still
// leads and the next apply takes the VIP back.
func (p *policy) maybePreempt() {
	if !p.s.cfg.Raft.Preempt || p.shutting || !p.isLeader() || !p.healthy() {
		return
	}
	e, ok := p.impls[rpc.KindElector].(rpc.Elector)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	st, err := e.Status(ctx)
	cancel()
	if err != nil {
		return
	}
	target := st.GetElector().GetHandoverTo()
	if target == "" {
		return
	}
	p.log.Info().Str("target", target).Msg("preempt: handing leadership to the preferred member")
	p.release()
	p.transferLeadershipTo(target, "preempt")
}

// transferLeadershipTo hands leadership to target ("" lets the elector
// choose a member in contact), bounded, so the next leader is elected at
// once instead of after an election timeout.
func (p *policy) transferLeadershipTo(target, reason string) {
	e, ok := p.impls[rpc.KindElector].(rpc.Elector)
	if !ok || !p.isLeader() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), transferTimeout)
	defer cancel()
	start := time.Now()
	if err := e.TransferLeadership(ctx, target); err != nil {
		p.s.metrics.failover.handovers.WithLabelValues(reason, "failed").Inc()
		p.log.Warn().Err(err).Str("reason", reason).Msg("leadership transfer failed; the others will elect after a timeout")
		return
	}
	p.s.metrics.failover.handovers.WithLabelValues(reason, "ok").Inc()
	// Raft has moved on, but the Watch event saying so may still be queued
	// behind this pass: until it comes, do not take the VIP back.
	if p.leadership != nil {
		p.handedOverTerm = p.leadership.Term
	}
	p.log.Info().Str("reason", reason).Str("target", target).Dur("took_ms", time.Since(start)).Msg("leadership handed over")
}

// handedOver is true while the leadership this member handed over is still
// the latest it heard of: apply must not acquire the VIP on it.
func (p *policy) handedOver() bool {
	return p.handedOverTerm != 0 && p.leadership != nil && p.leadership.Term == p.handedOverTerm &&
		p.leadership.Role == pb.Role_ROLE_LEADER
}
