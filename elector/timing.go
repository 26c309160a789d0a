package elector

import (
	"time"

	"github.com/keep-vip/keep-vip/rpc/limits"
)

// Every duration the elector uses, in one place, with the reason for it.
//
// # Why two members never hold the VIP at once
//
// The VIP follows Raft leadership, and hashicorp/raft (v1.7.3) gives these
// bounds, read off its code:
//
//   - A leader checks its lease (checkLeaderLease) at the moment the oldest
//     contact it still counts would expire, and at least every 10ms; it steps
//     down as soon as fewer than a quorum of voters answered within
//     LeaderLeaseTimeout. So it steps down at most lease + 10ms (plus timer
//     lateness) after the last answer it got from a quorum.
//   - The leader counts an answer when the RPC returns, not when it was sent,
//     so its idea of "last contact" can be late by at most one RPC round
//     trip, which the transport cuts off at TransportTimeout (hb/4).
//   - A follower forgets its leader only when its heartbeat timer finds no
//     contact for HeartbeatTimeout (raft randomises when that check runs, in
//     [hb, 2hb), but never before hb). Until then it rejects pre-votes and
//     votes ("rejecting vote request since we have a leader"), and with
//     pre-vote on (the default) a candidate cannot even raise the term
//     without a quorum of members that forgot their leader.
//   - Quorums intersect: a new leader needs a vote from at least one member
//     that the old leader counted in its last quorum. That member voted at
//     least hb after it last heard from the old leader, which itself stopped
//     counting it at most lease + TransportTimeout + 10ms after that.
//
// Hence the rule validated here and in the config: lease + TransportTimeout
// must stay clearly below the heartbeat timeout. With the lease at most hb/2
// and the transport timeout hb/4 the margin is at least hb/4 minus 10ms
// (0.35·hb, 105ms, with the default lease of 0.4·hb), which also has to cover
// the supervisor's release of the VIP (a few milliseconds: observer → Watch
// stream → announcer Release).
//
// Four gaps in that argument are closed by the elector's transport wrapper
// (transport.go):
//   - raft's pipeline decoder counts a pipelined AppendEntries that failed
//     (timed out) as contact; pipelining is turned off, and one-at-a-time
//     replication checks errors.
//   - raft's heartbeat loop counts any answer as contact, even one carrying a
//     higher term from a member that already voted for someone else; such an
//     answer is turned into an error for heartbeats.
//   - a member that restarts forgets when it last heard from the leader, so
//     for one heartbeat timeout after start it refuses pre-votes and votes
//     (not votes of a leadership transfer, which the leader asked for).
//   - the kick (detector.go) makes a follower start its election exactly one
//     heartbeat timeout (plus a small per-member stagger) after the last
//     contact, instead of up to three heartbeat timeouts later; it only moves
//     raft's own check earlier, never below hb, so the bound above holds.
//
// # A leader that is not scheduled
//
// checkLeaderLease runs from a timer on raft's leader goroutine and counts a
// follower only if the leader's own replication goroutine has processed an
// answer from it within the lease. When the whole elector is not scheduled
// for longer than the lease (a saturated CPU), it neither sends heartbeats
// nor reads their answers; when it runs again, the lease timer and the
// replication goroutines are ready together, and if the check runs first it
// steps down although the followers, whose timeout is 2.5 leases, still
// follow it. Pre-vote does not cover this: it only keeps a candidate from
// raising the term, and the step-down is the leader's own. What pre-vote
// does cover is the other side of starvation: a follower that was not
// scheduled past its heartbeat timeout wakes up and stands, but its pre-vote
// is refused by every member that still has a leader ("rejecting pre-vote
// request since we have a leader"), so it neither raises the term nor
// unseats the leader; it only costs a log line and the next heartbeat
// brings it back. The followers
// would grant the stepped-down member's pre-vote and vote at once (raft
// grants them to the leader it follows), but raft sets its LastContact at
// the step-down, so it stands only one heartbeat timeout later: the VIP is
// off for about hb. Lengthening the lease would close this only by eating
// the margin above; what is ours is that the elector is scheduled, which
// the supervisor does (realtime, supervisor/sched.go, README "Scheduling
// priority"), and that such a step-down says so: the elector's stall watch
// (stall.go) logs "stopped leading after being descheduled" with
// stalled_ms beside raft's "failed to contact quorum of nodes".
// Standing again right after a lease step-down is left out: it would make
// the stepped-down member forget its leadership before hb.
const (
	// DefaultHeartbeatTimeout is tuned for a LAN: a lost leader is replaced
	// about 300ms after its last heartbeat. It is the contract's
	// (rpc/limits), as the supervisor's config fills it in.
	DefaultHeartbeatTimeout = limits.DefaultHeartbeatTimeout
	// DefaultCommitTimeout is how often raft sends AppendEntries besides
	// heartbeats; it is also how soon a stale leader that regains a peer
	// learns of the newer term. These AppendEntries are also a second
	// stream of contact beside the heartbeats (both count for the lease).
	// Raising it to one heartbeat timeout would cut an idle leader's Raft
	// RPCs from ~70/s to ~48/s, but a leader with one reachable follower
	// would then keep its lease on that follower's heartbeats alone: one
	// heartbeat that times out (hb/4) after a late one is a step-down.
	// Not done: no change to failover or lease behaviour without proof.
	DefaultCommitTimeout = 50 * time.Millisecond
	// DefaultPreemptDelay is how long a higher-priority member must have
	// been healthy and caught up before leadership is moved to it.
	DefaultPreemptDelay = limits.DefaultPreemptDelay

	// MinTransportTimeout keeps one RPC's deadline above scheduling noise.
	MinTransportTimeout = 10 * time.Millisecond
	// minStagger keeps the kick stagger above a LAN round trip.
	minStagger = 5 * time.Millisecond
	// tlsHandshakeTimeout bounds an incoming TLS handshake, so a client that
	// connects and says nothing does not hold a goroutine for ever.
	tlsHandshakeTimeout = 5 * time.Second
	// transportMaxPool is the number of idle connections kept per peer.
	transportMaxPool = 3
)

// DefaultElectionTimeout is the election timeout for a heartbeat timeout:
// the same (raft requires it to be at least as long).
func DefaultElectionTimeout(heartbeat time.Duration) time.Duration {
	return limits.DefaultElectionTimeout(heartbeat)
}

// DefaultLeaderLeaseTimeout is the lease for a heartbeat timeout: 2/5 of it,
// below the hb/2 maximum so the safety margin is 0.4·hb.
func DefaultLeaderLeaseTimeout(heartbeat time.Duration) time.Duration {
	return limits.DefaultLeaderLeaseTimeout(heartbeat)
}

// MaxLeaderLeaseTimeout is the longest lease that keeps the argument above.
func MaxLeaderLeaseTimeout(heartbeat time.Duration) time.Duration {
	return limits.MaxLeaderLeaseTimeout(heartbeat)
}

// TransportTimeout bounds one Raft RPC (dial, TLS handshake, request and
// answer). It is short on purpose: a peer cut off by a partition must fail
// fast so heartbeats to it resume as soon as it is back, and a late answer
// must not extend a leader's lease by more than this (see above). It is not
// shorter because a vote includes three fsyncs on each side, which a busy
// disk can make slow.
func TransportTimeout(heartbeat time.Duration) time.Duration {
	return max(heartbeat/4, MinTransportTimeout)
}

// kickStagger is the delay between the kicks of members of neighbouring
// rank: the last member to forget the leader is the one whose pre-vote the
// others grant, so staggering avoids split votes.
func kickStagger(heartbeat time.Duration) time.Duration {
	return max(heartbeat/30, minStagger)
}
