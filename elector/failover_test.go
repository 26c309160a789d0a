package elector

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// With the kick, the survivors elect a new leader about one heartbeat
// timeout after the leader's last heartbeat, not one to three: raft alone
// would take hb plus the slower survivor's random [0, 2hb) wait.
func TestKickElectsOneHeartbeatTimeoutAfterLoss(t *testing.T) {
	c := newCluster(t, 3)
	hb := time.Duration(testHeartbeatMs) * time.Millisecond
	var took []time.Duration
	for trial := range 5 {
		old, _ := c.agreed()
		closed := time.Now()
		if err := c.nodes[old].Close(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "a new leader", func() (bool, string) {
			for i := range c.nodes {
				if i != old && c.ws[i][0].last().GetRole() == pb.Role_ROLE_LEADER {
					return true, ""
				}
			}
			return false, "none yet"
		})
		took = append(took, time.Since(closed))
		c.agreed(old)
		c.start(old)
		// A restarted member votes for nobody for one heartbeat timeout
		// (the start quarantine); the next trial starts after it.
		time.Sleep(hb + hb/4)
		t.Logf("trial %d: new leader %s after the leader closed", trial, took[len(took)-1].Round(time.Millisecond))
	}
	slices.Sort(took)
	med, worst := took[len(took)/2], took[len(took)-1]
	t.Logf("leader loss → new leader with hb %s: median %s, max %s", hb, med.Round(time.Millisecond), worst.Round(time.Millisecond))
	// Raft alone: median about 2·hb. Slack for a loaded machine.
	if med > hb*3/2 {
		t.Errorf("median %s, want about one heartbeat timeout (%s)", med, hb)
	}
	var kicks float64
	for _, e := range c.nodes {
		kicks += gauge(t, e, MetricKicksTotal)
	}
	if kicks == 0 {
		t.Errorf("%s is 0 everywhere", MetricKicksTotal)
	}
}

func TestKickRank(t *testing.T) {
	prios := map[string]int32{"a": 0, "b": 5, "c": 0, "d": 9}
	var got []string
	for r := range 4 {
		for id := range prios {
			if kickRank(prios, id) == r {
				got = append(got, id)
			}
		}
	}
	// Lowest priority first, the highest (d) last.
	if want := []string{"c", "a", "b", "d"}; !slices.Equal(got, want) {
		t.Fatalf("kick order %v, want %v", got, want)
	}
}

// With the target left to the elector, leadership goes to a member in
// contact, even when raft's own pick (the first member in configuration
// order, all logs being equal) is down.
func TestTransferAvoidsDeadMember(t *testing.T) {
	c := newCluster(t, 3)
	for trial := range 3 {
		leader, _ := c.agreed()
		var dead int
		for i := range c.nodes {
			if i != leader {
				dead = i // the first follower in configuration order
				break
			}
		}
		if err := c.nodes[dead].Close(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(testLeaseMs) * time.Millisecond * 2)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		start := time.Now()
		err := c.nodes[leader].TransferLeadership(ctx, "")
		cancel()
		if err != nil {
			t.Fatalf("trial %d: transfer with %s down: %v", trial, c.id(dead), err)
		}
		nl, _ := c.agreed(dead)
		if nl == leader || nl == dead {
			t.Fatalf("trial %d: leader %s after transfer", trial, c.id(nl))
		}
		t.Logf("trial %d: %s handed over to %s in %s with %s down", trial, c.id(leader), c.id(nl), time.Since(start).Round(time.Millisecond), c.id(dead))
		c.start(dead)
		c.agreed()
	}
}

// preemptCluster is 3 members of priorities 10, 20, 30 with preemption.
func preemptCluster(t *testing.T, preempt bool, delay time.Duration) *cluster {
	cfgs := clusterConfigs(t, 3)
	for _, cfg := range cfgs {
		for i, m := range cfg.GetMembers() {
			m.Priority = int32(10 * (i + 1))
		}
		cfg.Preempt = preempt
		cfg.PreemptDelayMs = delay.Milliseconds()
	}
	return startCluster(t, cfgs)
}

// superviseHandovers plays the supervisor for until: whenever the leader
// proposes a handover, it transfers. It returns when cond holds.
func (c *cluster) superviseHandovers(until time.Duration, cond func(leader int) bool) (proposals []string) {
	c.t.Helper()
	deadline := time.Now().Add(until)
	for time.Now().Before(deadline) {
		leader := -1
		for i, e := range c.nodes {
			if c.ws[i][0].last().GetRole() == pb.Role_ROLE_LEADER {
				if st, err := e.Status(context.Background()); err == nil && st.GetState() == "leader" {
					leader = i
				}
			}
		}
		if leader >= 0 && cond(leader) {
			return proposals
		}
		if leader >= 0 {
			st, _ := c.nodes[leader].Status(context.Background())
			if target := st.GetElector().GetHandoverTo(); target != "" {
				proposals = append(proposals, fmt.Sprintf("%s→%s", c.id(leader), target))
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				if err := c.nodes[leader].TransferLeadership(ctx, target); err != nil {
					c.t.Logf("handover %s→%s: %v", c.id(leader), target, err)
				}
				cancel()
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatalf("condition not met within %s; proposals %v", until, proposals)
	return nil
}

// With preemption, leadership ends on the highest-priority member, and
// moves back to it only after it has been in contact for the delay.
func TestPreemptMovesToHighestPriority(t *testing.T) {
	const delay = 700 * time.Millisecond
	c := preemptCluster(t, true, delay)
	c.agreed()
	top := 2 // priority 30
	props := c.superviseHandovers(10*time.Second, func(l int) bool { return l == top })
	t.Logf("handovers until %s led: %v", c.id(top), props)

	// The top member goes away; another leads; the top one comes back.
	if err := c.nodes[top].Close(); err != nil {
		t.Fatal(err)
	}
	other, _ := c.agreed(top)
	back := time.Now()
	c.start(top)
	var firstProposal time.Duration
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && firstProposal == 0 {
		st, _ := c.nodes[other].Status(context.Background())
		if st.GetElector().GetHandoverTo() == c.id(top) {
			firstProposal = time.Since(back)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if firstProposal == 0 {
		t.Fatalf("%s never proposed handing back to %s", c.id(other), c.id(top))
	}
	if firstProposal < delay {
		t.Errorf("handover proposed %s after %s came back, before the %s delay", firstProposal, c.id(top), delay)
	}
	t.Logf("%s proposed handing back to %s %s after it came back (delay %s)", c.id(other), c.id(top), firstProposal.Round(time.Millisecond), delay)
	c.superviseHandovers(5*time.Second, func(l int) bool { return l == top })
	c.agreed()
}

// Without preemption nothing is ever proposed.
func TestNoPreemptByDefault(t *testing.T) {
	c := preemptCluster(t, false, 100*time.Millisecond)
	leader, _ := c.agreed()
	for range 50 {
		st, _ := c.nodes[leader].Status(context.Background())
		if target := st.GetElector().GetHandoverTo(); target != "" {
			t.Fatalf("handover to %s proposed with preemption off", target)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
