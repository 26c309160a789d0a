package supervisor

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keep-vip/keep-vip/rpc"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// failingAnnouncer is fakeAnnouncer whose Acquire and Release fail with
// what *acq and *rel say (nil: they work).
type failingAnnouncer struct {
	fakeAnnouncer
	acq, rel *error
}

func (f failingAnnouncer) Acquire(context.Context, *pb.AcquireRequest) error {
	f.j.add("acquire")
	return *f.acq
}

func (f failingAnnouncer) Release(ctx context.Context) error {
	f.j.add("release")
	return *f.rel
}

// leaderWith brings p to a healthy leader whose announcer is a.
func leaderWith(p *policy, j *callLog, a rpc.Announcer) {
	p.handle(event{kind: rpc.KindAnnouncer, gen: 2, up: true, impl: a})
	healthyLeader(p, j)
}

func unhealthyMetric(p *policy, label string) float64 {
	return testutil.ToFloat64(p.s.metrics.unhealthy.WithLabelValues(label))
}

// TestAcquireFailingMakesUnhealthy: a VIP the announcer cannot add keeps
// the member leader only for vipFaultBound; then it hands over, leaves the
// election, and says why, until a probe finds the announcer able again.
func TestAcquireFailingMakesUnhealthy(t *testing.T) {
	p, j := testPolicy(t)
	acq := error(errors.New("rpc error: code = Unknown desc = add vip 198.18.0.100 to eth0: operation not permitted"))
	rel := acq
	leaderWith(p, j, failingAnnouncer{fakeAnnouncer{j: j}, &acq, &rel})
	if !p.healthy() || p.held || p.faults.vipFailing.IsZero() {
		t.Fatalf("after one failed acquire: healthy %v held %v failing since %v; want healthy, retrying", p.healthy(), p.held, p.faults.vipFailing)
	}
	// The bound passes; the next pass fails again.
	p.faults.vipFailing = time.Now().Add(-vipFaultBound)
	p.handle(health(true))
	if p.healthy() || p.s.runners[rpc.KindElector].wanted() {
		t.Fatalf("acquire failing for %s: still healthy or in the election", vipFaultBound)
	}
	if got, want := strings.Join(j.calls, " "), "acquire acquire transfer"; got != want {
		t.Errorf("calls = %q, want %q", got, want)
	}
	why := p.s.ops.sickness(p)
	if want := "cannot hold the VIP: add vip 198.18.0.100 to eth0: operation not permitted"; why != want {
		t.Errorf("reason %q, want %q", why, want)
	}
	if unhealthyMetric(p, reasonVIP) != 1 || testutil.ToFloat64(p.s.metrics.healthy) != 0 {
		t.Errorf("metrics: unhealthy{vip} %v healthy %v", unhealthyMetric(p, reasonVIP), testutil.ToFloat64(p.s.metrics.healthy))
	}

	// Before vipRetryAfter nothing is probed; after it, a probe that fails
	// keeps the member out.
	j.calls = nil
	p.handle(health(true))
	if len(j.calls) != 0 {
		t.Errorf("probed before vipRetryAfter: %v", j.calls)
	}
	p.faults.vipRetryAt = time.Now()
	p.handle(health(true))
	if p.healthy() || strings.Join(j.calls, " ") != "release" {
		t.Errorf("failed probe: healthy %v, calls %v", p.healthy(), j.calls)
	}
	// The announcer can again: the member rejoins the election.
	rel, acq = nil, nil
	p.faults.vipRetryAt = time.Now()
	p.handle(health(true))
	if !p.healthy() || !p.s.runners[rpc.KindElector].wanted() || unhealthyMetric(p, reasonVIP) != 0 {
		t.Errorf("after a probe that works: healthy %v, in the election %v", p.healthy(), p.s.runners[rpc.KindElector].wanted())
	}
}

// TestHeldVIPVanishing: a held VIP that is gone from the interface and
// cannot be added back makes the member release and leave.
func TestHeldVIPVanishing(t *testing.T) {
	p, j := testPolicy(t)
	var acq, rel error
	leaderWith(p, j, failingAnnouncer{fakeAnnouncer{j: j}, &acq, &rel})
	if !p.held {
		t.Fatal("not held")
	}
	p.faults.missingVIPs = func() ([]string, error) { return []string{"198.18.0.100"}, nil }
	acq = errors.New("add vip 198.18.0.100 to eth0: no such device")
	p.handle(health(true))
	if !p.held || !p.healthy() {
		t.Fatalf("missing for less than the bound: held %v healthy %v", p.held, p.healthy())
	}
	p.faults.vipFailing = time.Now().Add(-vipFaultBound)
	p.handle(health(true))
	if p.held || p.healthy() {
		t.Fatalf("missing beyond the bound: held %v healthy %v", p.held, p.healthy())
	}
	if got, want := strings.Join(j.calls, " "), "acquire acquire acquire release transfer"; got != want {
		t.Errorf("calls = %q, want %q", got, want)
	}
	if why := p.s.ops.sickness(p); !strings.Contains(why, "VIP 198.18.0.100 missing from eth0: add vip 198.18.0.100 to eth0: no such device") {
		t.Errorf("reason %q", why)
	}
}

// TestPluginStartFailure: a plugin that cannot start is a named unhealthy
// state; the elector's keeps its runner trying, the others' keep the
// member out of the election; a start clears it.
func TestPluginStartFailure(t *testing.T) {
	const raftErr = "plugin elector: configure: rpc error: code = Unknown desc = open raft store /x/raft.db: invalid database"
	for _, tc := range []struct {
		kind       string
		inElection bool
	}{
		{rpc.KindElector, true},
		{rpc.KindAnnouncer, false},
		{rpc.KindBalancer, false},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			p, _ := testPolicy(t)
			p.handle(event{kind: rpc.KindChecker, gen: 1, up: true, impl: fakeReporter{}})
			p.handle(health(true))
			p.handle(event{kind: tc.kind, gen: 7, startFailed: true, err: errors.New(raftErr)})
			if p.reportedHealthy() {
				t.Errorf("reported healthy with %s failing to start", tc.kind)
			}
			if got := p.s.runners[rpc.KindElector].wanted(); got != tc.inElection {
				t.Errorf("elector wanted %v, want %v", got, tc.inElection)
			}
			want := tc.kind + " cannot start: plugin elector: configure: open raft store /x/raft.db: invalid database"
			if why := p.s.ops.sickness(p); why != want {
				t.Errorf("reason %q, want %q", why, want)
			}
			if unhealthyMetric(p, tc.kind+"_start") != 1 {
				t.Errorf("keep_vip_supervisor_unhealthy{reason=%s_start} not 1", tc.kind)
			}
			p.handle(event{kind: tc.kind, gen: 8, up: true, impl: map[string]any{
				rpc.KindElector: fakeElector{j: &callLog{}}, rpc.KindAnnouncer: fakeAnnouncer{j: &callLog{}}, rpc.KindBalancer: fakeReporter{},
			}[tc.kind]})
			if !p.reportedHealthy() || unhealthyMetric(p, tc.kind+"_start") != 0 {
				t.Errorf("after a start: healthy %v", p.reportedHealthy())
			}
		})
	}
}
