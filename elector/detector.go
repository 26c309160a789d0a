package elector

import (
	"sort"
	"time"

	"github.com/hashicorp/raft"
)

// The kick: hashicorp/raft checks for a silent leader when a timer drawn
// from [hb, 2hb) fires, and that timer is not reset by contact, so a
// follower notices a dead leader anywhere between one and three heartbeat
// timeouts after the last heartbeat. And with pre-vote, a candidate only
// wins once a quorum of members have themselves noticed, so the election
// waits for the slowest of them. The kick makes every follower run raft's
// own check at last contact + hb + its stagger: raft re-arms its timer when
// a lower heartbeat timeout is loaded (ReloadConfig), so loading hb-1ns and
// then hb again makes the check run now, with raft's own rule (no contact
// for hb) deciding. Members kick in order of rank, a stagger apart; the last
// of a quorum to kick finds the others leaderless and wins, about
// hb + (quorum-1)·stagger after the last heartbeat.
//
// Higher priority kicks later, so among survivors the preferred member
// tends to be the one elected.

// kickRank orders members for the stagger: lowest priority first, then by
// id, so the highest-priority member kicks last.
func kickRank(members map[string]int32, local string) int {
	ids := make([]string, 0, len(members))
	for id := range members {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool {
		if members[ids[i]] != members[ids[j]] {
			return members[ids[i]] < members[ids[j]]
		}
		return ids[i] > ids[j]
	})
	for i, id := range ids {
		if id == local {
			return i
		}
	}
	return 0
}

// detect runs the kick until n stops.
func (e *Elector) detect(n *node) {
	defer close(n.detectDone)
	hb := n.t.heartbeat
	// The rank follows the member list, which a reload may change.
	delayNow := func() time.Duration {
		return hb + time.Duration(kickRank(n.members().prios, n.localID))*kickStagger(hb)
	}
	timer := time.NewTimer(delayNow())
	defer timer.Stop()
	// warmed is the contact for whose silence spares were last opened.
	var warmed time.Time
	for {
		select {
		case <-n.stop:
			return
		case <-timer.C:
		}
		delay := delayNow()
		next := delay
		if n.r.State() == raft.Follower {
			// Contact counts from the later of the last heartbeat and our
			// own start: a member that never heard from a leader waits
			// its turn too.
			last := n.r.LastContact()
			if last.Before(n.started) {
				last = n.started
			}
			now := time.Now()
			if due := last.Add(delay); now.Before(due) {
				next = due.Sub(now)
			} else {
				n.kick()
				e.met.kicks.Inc()
			}
			// Three quarters of a heartbeat timeout of silence: open the
			// connections the election may need (spare.go), once per
			// silence. Not earlier: the detector wakes this often while
			// heartbeats come.
			if warm := last.Add(hb * 3 / 4); !last.Equal(warmed) {
				if now.Before(warm) {
					next = min(next, warm.Sub(now))
				} else {
					warmed = last
					n.warmPeers()
				}
			}
		}
		timer.Reset(max(next, time.Millisecond))
	}
}

// warmPeers opens a spare connection to every member but this one and the
// leader it follows.
func (n *node) warmPeers() {
	_, leader := n.r.LeaderWithID()
	ms := n.members()
	var addrs []raft.ServerAddress
	for id, a := range ms.addrs {
		if id != n.localID && id != string(leader) {
			addrs = append(addrs, raft.ServerAddress(a))
		}
	}
	n.trans.spare.prepare(addrs, TransportTimeout(n.t.heartbeat))
}

// kick makes raft's follower loop run its heartbeat check now.
func (n *node) kick() {
	rc := n.r.ReloadableConfig()
	hb := rc.HeartbeatTimeout
	rc.HeartbeatTimeout = hb - time.Nanosecond
	if err := n.r.ReloadConfig(rc); err != nil {
		return
	}
	rc.HeartbeatTimeout = hb
	_ = n.r.ReloadConfig(rc)
}
