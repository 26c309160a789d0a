package elector

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

// Membership. The config file's member list is the truth; Raft's stored
// configuration follows it. Only the leader changes that configuration, one
// server per step, re-reading the configuration before every step so each
// step starts from a committed change:
//
//  1. A leader that is not in the list, or whose address in it changed,
//     hands leadership to a voter that is, and lets that one go on.
//  2. A member of the list that Raft does not know joins as a non-voter: it
//     receives the log but does not count towards a quorum yet.
//  3. A voter whose address changed is demoted first (its vote comes back
//     with step 4 once it answers at the new address), then its address is
//     updated.
//  4. A non-voter that has answered every heartbeat for a heartbeat timeout
//     and holds the leader's whole log is promoted.
//  5. Only when every member of the list votes is a server that is not in
//     the list removed: a replaced member goes after its successor votes.
//
// A step that takes a vote away (3, 5) is taken only if the voters left
// still include a live quorum, counting this leader and the peers that
// answered within a heartbeat timeout; otherwise it waits and says why.
// The same loop, on every member, exports the differences it sees.

// membershipInterval is how often the configuration is compared with the
// file (a reload compares at once), and how often a member without a
// configuration asks the others again (join.go).
func membershipInterval(hb time.Duration) time.Duration {
	return min(max(hb, 200*time.Millisecond), time.Second)
}

// reconcile runs until n stops.
func (e *Elector) reconcile(n *node) {
	defer close(n.reconcileDone)
	tick := time.NewTicker(membershipInterval(n.t.heartbeat))
	defer tick.Stop()
	var lastDiff string
	var lastBlocked string
	for {
		select {
		case <-n.stop:
			return
		case <-n.membersChanged:
		case <-tick.C:
		}
		cf := n.r.GetConfiguration()
		if cf.Error() != nil {
			continue
		}
		conf := cf.Configuration()
		ds := n.members().differences(conf)
		e.met.differences.Set(float64(len(ds)))
		if d := joinDifferences(ds); d != lastDiff {
			switch {
			case len(conf.Servers) == 0:
				// The join loop (join.go) says what a member without a
				// configuration waits for.
			case len(ds) == 0:
				e.log.Info().Str("local_id", n.localID).Str("voters", describeServers(conf, true)).
					Msg("membership: the Raft configuration matches members")
			default:
				e.log.Warn().Str("local_id", n.localID).Str("differences", d).Int("count", len(ds)).
					Msg("membership: the Raft configuration differs from members")
			}
			lastDiff = d
		}
		if len(ds) == 0 || n.r.State() != raft.Leader {
			lastBlocked = ""
			continue
		}
		did, blocked, err := n.reconcileStep(conf, cf.Index(), time.Now())
		switch {
		case err != nil && !errors.Is(err, raft.ErrNotLeader) && !errors.Is(err, raft.ErrRaftShutdown):
			e.log.Warn().Str("local_id", n.localID).Err(err).Str("step", did).Msg("membership: change failed; retrying")
		case err != nil:
		case did != "":
			e.log.Info().Str("local_id", n.localID).Str("step", did).Msg("membership: changed the Raft configuration")
			e.met.membershipChanges.Inc()
			lastBlocked = ""
		case blocked != "" && blocked != lastBlocked:
			e.log.Warn().Str("local_id", n.localID).Str("waiting", blocked).Msg("membership: change waits")
			lastBlocked = blocked
		}
	}
}

// reconcileStep takes the first step of the plan above that applies to
// conf (at index idx): it returns what it did, or why nothing could be done
// yet.
func (n *node) reconcileStep(conf raft.Configuration, idx uint64, now time.Time) (did, blocked string, err error) {
	ms := n.members()
	timeout := changeTimeout(n.t.heartbeat)
	servers := map[string]raft.Server{}
	var voters []string
	for _, s := range conf.Servers {
		servers[string(s.ID)] = s
		if s.Suffrage == raft.Voter {
			voters = append(voters, string(s.ID))
		}
	}
	live := func(id string) bool { return id == n.localID || n.answered(n.trans.peer(raft.ServerID(id)), now) }
	// safeWithout: the voters left once id's vote is gone still hold a
	// live quorum.
	safeWithout := func(id string) (bool, string) {
		v, l := 0, 0
		for _, s := range voters {
			if s == id {
				continue
			}
			v++
			if live(s) {
				l++
			}
		}
		if v > 0 && l >= quorum(v) {
			return true, ""
		}
		return false, "taking " + id + "'s vote away would leave " + strconv.Itoa(l) + " live of " + strconv.Itoa(v) + " voters, fewer than a quorum"
	}

	// 1. This leader is leaving or moving: hand over first.
	if addr, ok := ms.addrs[n.localID]; !ok || addr != string(servers[n.localID].Address) {
		target, err := n.pickTarget(now)
		if err != nil {
			return "", "this leader is not in members (or moved): " + err.Error(), nil
		}
		did = "hand leadership to " + target + ": this leader is not in members at its current address"
		return did, "", n.r.LeadershipTransferToServer(raft.ServerID(target), servers[target].Address).Error()
	}
	// 2. Join new members as non-voters.
	for _, id := range ms.ids {
		if _, ok := servers[id]; !ok {
			did = "add " + id + " (" + ms.addrs[id] + ") as a non-voter; it votes once caught up"
			return did, "", n.r.AddNonvoter(raft.ServerID(id), raft.ServerAddress(ms.addrs[id]), idx, timeout).Error()
		}
	}
	// 3. Moved members: demote, then update the address.
	for _, id := range ms.ids {
		s := servers[id]
		if string(s.Address) == ms.addrs[id] {
			continue
		}
		if s.Suffrage == raft.Voter {
			if ok, why := safeWithout(id); !ok {
				return "", id + " moves to " + ms.addrs[id] + ": " + why, nil
			}
			did = "demote " + id + " to non-voter: it moves from " + string(s.Address) + " to " + ms.addrs[id]
			return did, "", n.r.DemoteVoter(raft.ServerID(id), idx, timeout).Error()
		}
		did = "move non-voter " + id + " from " + string(s.Address) + " to " + ms.addrs[id]
		return did, "", n.r.AddNonvoter(raft.ServerID(id), raft.ServerAddress(ms.addrs[id]), idx, timeout).Error()
	}
	// 4. Promote caught-up non-voters.
	var waiting []string
	for _, id := range ms.ids {
		if servers[id].Suffrage == raft.Voter {
			continue
		}
		ps := n.trans.peer(raft.ServerID(id))
		if n.answered(ps, now) && !ps.okSince.IsZero() && now.Sub(ps.okSince) >= n.t.heartbeat && ps.lastLog >= n.r.AppliedIndex() {
			did = "promote " + id + " to voter: caught up"
			return did, "", n.r.AddVoter(raft.ServerID(id), servers[id].Address, idx, timeout).Error()
		}
		waiting = append(waiting, id)
	}
	if len(waiting) > 0 {
		return "", "non-voters not caught up yet: " + strings.Join(waiting, ", ") + "; servers not in members are removed after", nil
	}
	// 5. Remove servers that are not in the file.
	for _, s := range conf.Servers {
		id := string(s.ID)
		if _, ok := ms.addrs[id]; ok {
			continue
		}
		if s.Suffrage == raft.Voter {
			if ok, why := safeWithout(id); !ok {
				return "", "remove " + id + ": " + why, nil
			}
		}
		did = "remove " + id + " (" + string(s.Address) + "): not in members"
		return did, "", n.r.RemoveServer(s.ID, idx, timeout).Error()
	}
	return "", "", nil
}

// answered is true when the peer answered an AppendEntries within a
// heartbeat timeout: alive as far as a membership change is concerned.
func (n *node) answered(ps peerState, now time.Time) bool {
	return !ps.lastOK.IsZero() && now.Sub(ps.lastOK) <= n.t.heartbeat
}

// changeTimeout bounds how long a configuration change may wait to be
// taken up by raft's leader loop.
func changeTimeout(hb time.Duration) time.Duration { return max(5*hb, time.Second) }
