package supervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/keep-vip/keep-vip/rpc"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// statusElector is a fake elector whose Status is set by the test
// and whose transfers are logged with their target.
type statusElector struct {
	fakeElector
	status *pb.ElectorStatus
	// details are for humans: the policy must not act on them.
	details map[string]string
}

func (f statusElector) Status(context.Context) (*pb.PluginStatus, error) {
	return &pb.PluginStatus{State: "leader", Details: f.details, Elector: f.status}, nil
}

func (f statusElector) TransferLeadership(_ context.Context, target string) error {
	f.j.add("transfer:" + target)
	return nil
}

var _ rpc.Elector = statusElector{}

func TestElectorRestartsByCause(t *testing.T) {
	p, j := testPolicy(t)
	up := func(gen uint64) event {
		return event{kind: rpc.KindElector, gen: gen, up: true, impl: fakeElector{j: j}}
	}
	p.handle(event{kind: rpc.KindChecker, gen: 1, up: true, impl: fakeReporter{}})
	p.handle(health(true))
	p.handle(up(1))
	p.handle(event{kind: rpc.KindElector, gen: 1, err: errNotWanted}) // left the election
	p.handle(up(2))
	p.handle(event{kind: rpc.KindElector, gen: 2, err: context.Canceled}) // crashed
	p.handle(up(3))
	restarts := p.s.metrics.failover.electorRestarts
	if got := testutil.ToFloat64(restarts.WithLabelValues(causeUnhealthy)); got != 1 {
		t.Errorf("unhealthy restarts %v, want 1", got)
	}
	if got := testutil.ToFloat64(restarts.WithLabelValues(causeCrash)); got != 1 {
		t.Errorf("crash restarts %v, want 1", got)
	}
}

// Under preemption the leader releases the VIP before it hands leadership
// to the member the elector proposes, and only then.
func TestPreemptReleasesThenTransfers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		preempt bool
		status  *pb.ElectorStatus
		details map[string]string
		want    string
	}{
		{"proposal", true, &pb.ElectorStatus{HandoverTo: "b"}, nil, "acquire release transfer:b"},
		{"no proposal", true, &pb.ElectorStatus{}, nil, "acquire"},
		{"no elector status", true, nil, nil, "acquire"},
		{"proposal in details only", true, nil, map[string]string{"handover_to": "b"}, "acquire"},
		{"preempt off", false, &pb.ElectorStatus{HandoverTo: "b"}, nil, "acquire"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, j := testPolicy(t)
			p.s.cfg.Raft.Preempt = tc.preempt
			for _, ev := range []event{{kind: rpc.KindChecker, gen: 1, up: true, impl: fakeReporter{}}, health(true),
				{kind: rpc.KindElector, gen: 1, up: true, impl: statusElector{fakeElector: fakeElector{j: j}, status: tc.status, details: tc.details}}, leader(1)} {
				p.handle(ev)
			}
			p.maybePreempt()
			// The pass after it, before the elector's event that this member
			// no longer leads has arrived, must not take the VIP back.
			p.apply()
			if got := strings.Join(j.calls, " "); got != tc.want {
				t.Fatalf("calls %q, want %q", got, tc.want)
			}
		})
	}
}

func TestFailoverMeasured(t *testing.T) {
	p, j := testPolicy(t)
	contact := time.Now().Add(-340 * time.Millisecond)
	e := statusElector{fakeElector: fakeElector{j: j}, status: &pb.ElectorStatus{ContactBeforeLeadingUnixNano: contact.UnixNano()}}
	for _, ev := range []event{{kind: rpc.KindChecker, gen: 1, up: true, impl: fakeReporter{}}, health(true),
		{kind: rpc.KindElector, gen: 1, up: true, impl: e}, leader(1)} {
		p.handle(ev)
	}
	deadline := time.Now().Add(5 * time.Second)
	var got float64
	for time.Now().Before(deadline) {
		if got = testutil.ToFloat64(p.s.metrics.failover.lastFailover); got != 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got < 0.34 || got > 2 {
		t.Fatalf("last failover %vs, want about 0.34s", got)
	}
}

// slowAnnouncer takes d to acquire.
type slowAnnouncer struct {
	fakeAnnouncer
	d time.Duration
}

func (a slowAnnouncer) Acquire(ctx context.Context, req *pb.AcquireRequest) error {
	time.Sleep(a.d)
	return a.fakeAnnouncer.Acquire(ctx, req)
}

// The "VIP acquired" line names its durations with their unit: the
// Acquire call alone, and since this member was told it leads.
func TestAcquireLogDurations(t *testing.T) {
	p, j := testPolicy(t)
	var buf bytes.Buffer
	p.log = zerolog.New(&buf)
	const slow = 30 * time.Millisecond
	for _, ev := range []event{{kind: rpc.KindAnnouncer, gen: 2, up: true, impl: slowAnnouncer{fakeAnnouncer{j: j}, slow}},
		{kind: rpc.KindChecker, gen: 1, up: true, impl: fakeReporter{}}, health(true),
		{kind: rpc.KindElector, gen: 1, up: true, impl: fakeElector{j: j}}, leader(1)} {
		p.handle(ev)
	}
	var line map[string]any
	for _, l := range strings.Split(buf.String(), "\n") {
		if strings.Contains(l, `"VIP acquired"`) {
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatal(err)
			}
		}
	}
	if line == nil {
		t.Fatalf("no VIP acquired line in:\n%s", buf.String())
	}
	acq, _ := line["acquire_ms"].(float64)
	since, _ := line["since_leader_ms"].(float64)
	if acq < float64(slow/time.Millisecond) || since < acq || since > 5000 {
		t.Errorf("acquire_ms %v, since_leader_ms %v: want acquire_ms >= %v and since_leader_ms >= it", line["acquire_ms"], line["since_leader_ms"], slow)
	}
	if _, ok := line["took"]; ok {
		t.Errorf("VIP acquired has a unitless took: %v", line)
	}
}
