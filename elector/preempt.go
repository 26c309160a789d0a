package elector

import (
	"errors"
	"sort"
	"time"

	"github.com/hashicorp/raft"
)

// ErrNoTarget is returned by TransferLeadership when no other member is in
// contact: there is nobody to hand over to, and the others will elect one
// once this member is gone.
var ErrNoTarget = errors.New("no other member in contact to hand leadership to")

// Preferred holder. With preempt on, the leader proposes handing leadership
// to a member of strictly higher priority once that member has answered
// every heartbeat for preempt_delay (it has a running elector: a member
// whose checks fail stops its elector) and its log is caught up with ours.
// The elector only proposes (Status detail "handover_to"); the supervisor
// releases the VIP and then calls TransferLeadership with the target, the
// same path as a handover on bad health, so the VIP is never on two
// members while leadership moves.

// inContact is true when id answered an AppendEntries within the lease:
// heartbeats go out every hb/10 to hb/5, so a live peer always has.
func (n *node) inContact(ps peerState, now time.Time) bool {
	return !ps.lastOK.IsZero() && now.Sub(ps.lastOK) <= n.t.lease
}

// handoverTarget is the member leadership should move to now under
// preemption, or "".
func (n *node) handoverTarget(now time.Time) string {
	if !n.cfg.GetPreempt() || n.r.State() != raft.Leader {
		return ""
	}
	last := n.r.LastIndex()
	ms, voters := n.members(), n.voters()
	best, bestPrio := "", ms.prios[n.localID]
	for _, id := range ms.ids {
		p := ms.prios[id]
		if _, votes := voters[id]; id == n.localID || p <= bestPrio || !votes {
			continue
		}
		ps := n.trans.peer(raft.ServerID(id))
		if !n.inContact(ps, now) || ps.okSince.IsZero() || now.Sub(ps.okSince) < n.preemptDelay || ps.lastLog < last {
			continue
		}
		best, bestPrio = id, p
	}
	return best
}

// pickTarget chooses whom to hand leadership to when the caller leaves it
// to us: among members in contact, the highest priority, then the longest
// log, then the freshest answer. raft's own choice (the first member with
// the highest next index) may be a member that is down, which would cost a
// whole election timeout.
func (n *node) pickTarget(now time.Time) (string, error) {
	type cand struct {
		id string
		ps peerState
	}
	var cs []cand
	ms, voters := n.members(), n.voters()
	// Only a voter can take leadership; members of the file that Raft
	// does not know yet, or that are still catching up, cannot.
	for _, id := range ms.ids {
		if _, votes := voters[id]; id == n.localID || !votes {
			continue
		}
		if ps := n.trans.peer(raft.ServerID(id)); n.inContact(ps, now) {
			cs = append(cs, cand{id, ps})
		}
	}
	if len(cs) == 0 {
		return "", ErrNoTarget
	}
	sort.SliceStable(cs, func(i, j int) bool {
		a, b := cs[i], cs[j]
		if pa, pb := ms.prios[a.id], ms.prios[b.id]; pa != pb {
			return pa > pb
		}
		if a.ps.lastLog != b.ps.lastLog {
			return a.ps.lastLog > b.ps.lastLog
		}
		return a.ps.lastOK.After(b.ps.lastOK)
	})
	return cs[0].id, nil
}
