package elector

import (
	"math"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// Metric names, defined once.
const (
	MetricIsLeader           = "keep_vip_elector_is_leader"
	MetricState              = "keep_vip_elector_state"
	MetricTerm               = "keep_vip_elector_term"
	MetricLeaderChangesTotal = "keep_vip_elector_leader_changes_total"
	MetricLastContactSeconds = "keep_vip_elector_last_contact_seconds"
	MetricKicksTotal         = "keep_vip_elector_kicks_total"
	// MetricMembershipDifferences counts the ways Raft's configuration
	// differs from the config file's members, as this member sees them.
	MetricMembershipDifferences = "keep_vip_elector_membership_differences"
	MetricMembershipChanges     = "keep_vip_elector_membership_changes_total"
)

// Values of keep_vip_elector_state.
const (
	stateFollower  = 0
	stateCandidate = 1
	stateLeader    = 2
	stateShutdown  = 3
)

type metrics struct {
	reg           *prometheus.Registry
	isLeader      prometheus.Gauge
	state         prometheus.Gauge
	term          prometheus.Gauge
	leaderChanges prometheus.Counter
	kicks         prometheus.Counter
	differences   prometheus.Gauge
	// membershipChanges counts configuration changes this member made as
	// leader (reconcile.go).
	membershipChanges prometheus.Counter

	// last leader (id, term) counted in leaderChanges; only the publisher
	// touches these.
	lastLeaderID   string
	lastLeaderTerm uint64
}

// newMetrics registers the elector's metrics; lastContact is read at scrape
// time because it changes continuously.
func newMetrics(lastContact func() float64) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		isLeader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: MetricIsLeader,
			Help: "1 while this member is the Raft leader, else 0.",
		}),
		state: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: MetricState,
			Help: "Raft state of this member: 0 follower, 1 candidate, 2 leader, 3 shutdown.",
		}),
		term: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: MetricTerm,
			Help: "Current Raft term of this member.",
		}),
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricLeaderChangesTotal,
			Help: "Times this member learned of a new leader (a new leader id or a new term of the same leader).",
		}),
	}
	m.kicks = prometheus.NewCounter(prometheus.CounterOpts{
		Name: MetricKicksTotal,
		Help: "Times this member ran its leader-silence check early, one heartbeat timeout after the last contact (see elector/detector.go).",
	})
	lc := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: MetricLastContactSeconds,
		Help: "Seconds since this member last heard from a leader; 0 while leader, +Inf if never.",
	}, lastContact)
	m.differences = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: MetricMembershipDifferences,
		Help: "Differences between Raft's configuration and the config file's members (missing, extra, moved, not yet voting); 0 when they match.",
	})
	m.membershipChanges = prometheus.NewCounter(prometheus.CounterOpts{
		Name: MetricMembershipChanges,
		Help: "Raft configuration changes this member made as leader to follow the config file's members.",
	})
	m.reg.MustRegister(m.isLeader, m.state, m.term, m.leaderChanges, m.kicks, lc, m.differences, m.membershipChanges)
	return m
}

// update records a published leadership.
func (m *metrics) update(l leadership) {
	m.isLeader.Set(0)
	if l.role == pb.Role_ROLE_LEADER {
		m.isLeader.Set(1)
	}
	switch l.role {
	case pb.Role_ROLE_CANDIDATE:
		m.state.Set(stateCandidate)
	case pb.Role_ROLE_LEADER:
		m.state.Set(stateLeader)
	case pb.Role_ROLE_SHUTDOWN:
		m.state.Set(stateShutdown)
	default:
		m.state.Set(stateFollower)
	}
	m.term.Set(float64(l.term))
	if l.leaderID != "" && (l.leaderID != m.lastLeaderID || l.term != m.lastLeaderTerm) {
		m.leaderChanges.Inc()
		m.lastLeaderID, m.lastLeaderTerm = l.leaderID, l.term
	}
}

// lastContactSeconds is the value of keep_vip_elector_last_contact_seconds
// for r (nil before Configure). A member that never heard from a leader is
// infinitely stale, so an alert on "too long without contact" fires for it.
func lastContactSeconds(r *raft.Raft) float64 {
	if r == nil {
		return math.Inf(1)
	}
	if r.State() == raft.Leader {
		return 0
	}
	last := r.LastContact()
	if last.IsZero() {
		return math.Inf(1)
	}
	return time.Since(last).Seconds()
}
