package supervisor

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/keep-vip/keep-vip/rpc"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
	"github.com/keep-vip/keep-vip/supervisor/config"
)

// callLog records the calls the policy makes, in order, across fakes.
type callLog struct {
	calls []string
	terms []uint64 // of every Acquire
}

func (j *callLog) add(s string)  { j.calls = append(j.calls, s) }
func (j *callLog) term(t uint64) { j.terms = append(j.terms, t) }

type fakeReporter struct{}

func (fakeReporter) Status(context.Context) (*pb.PluginStatus, error) { return &pb.PluginStatus{}, nil }
func (fakeReporter) Gather() ([]*dto.MetricFamily, error)             { return nil, nil }

type fakeAnnouncer struct {
	fakeReporter
	j          *callLog
	releaseErr error
}

func (f fakeAnnouncer) Configure(context.Context, *pb.AnnouncerConfig) error { return nil }
func (f fakeAnnouncer) Acquire(_ context.Context, req *pb.AcquireRequest) error {
	f.j.add("acquire")
	f.j.term(req.GetTerm())
	return nil
}
func (f fakeAnnouncer) Release(context.Context) error {
	f.j.add("release")
	return f.releaseErr
}
func (f fakeAnnouncer) Watch(context.Context, func(*pb.InterfaceEvent) error) error {
	return nil
}

type fakeElector struct {
	fakeReporter
	j *callLog
}

func (f fakeElector) Configure(context.Context, *pb.ElectorConfig) error { return nil }
func (f fakeElector) Watch(context.Context, func(*pb.Leadership) error) error {
	return nil
}
func (f fakeElector) TransferLeadership(context.Context, string) error {
	f.j.add("transfer")
	return nil
}

var (
	_ rpc.Announcer = fakeAnnouncer{}
	_ rpc.Elector   = fakeElector{}
)

func testPolicy(t *testing.T) (*policy, *callLog) {
	t.Helper()
	cfg, err := config.Parse([]byte(strings.TrimSpace(`
interface: eth0
vip: 198.18.0.100
members:
  - id: a
    address: 198.18.0.11:20000
`)), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &Supervisor{
		cfg:     cfg,
		log:     zerolog.New(io.Discard),
		events:  make(chan event, 8),
		runners: map[string]*runner{},
		metrics: newMetrics(cfg, cfg.Members[0]),
		plugins: &pluginGatherer{live: map[string]prometheus.Gatherer{}},
	}
	for _, k := range rpc.Kinds {
		s.runners[k] = &runner{kind: k, wake: make(chan struct{}, 1), want: k != rpc.KindElector}
	}
	j := &callLog{}
	p := newPolicy(s)
	p.faults.missingVIPs = func() ([]string, error) { return nil, nil }
	p.scrub = func(string) { j.add("scrub") }
	p.handle(event{kind: rpc.KindAnnouncer, gen: 1, up: true, impl: fakeAnnouncer{j: j}})
	return p, j
}

func leader(gen uint64) event {
	return event{kind: rpc.KindElector, gen: gen, leadership: &pb.Leadership{Role: pb.Role_ROLE_LEADER, Term: 2}}
}

func follower(gen uint64) event {
	return event{kind: rpc.KindElector, gen: gen, leadership: &pb.Leadership{Role: pb.Role_ROLE_FOLLOWER, Term: 3}}
}

func health(ok bool) event {
	return event{kind: rpc.KindChecker, gen: 1, health: &pb.Health{Healthy: ok}}
}

func TestPolicy(t *testing.T) {
	checkerUp := event{kind: rpc.KindChecker, gen: 1, up: true, impl: fakeReporter{}}
	for _, tc := range []struct {
		name          string
		events        func(j *callLog) []event
		wantCalls     string
		wantHeld      bool
		wantElectorOn bool
	}{
		{"healthy leader acquires", func(j *callLog) []event {
			return []event{checkerUp, health(true), {kind: rpc.KindElector, gen: 1, up: true, impl: fakeElector{j: j}}, leader(1)}
		}, "acquire", true, true},
		{"elector waits for health", func(j *callLog) []event {
			return []event{checkerUp}
		}, "", false, false},
		{"losing leadership releases", func(j *callLog) []event {
			return []event{checkerUp, health(true), {kind: rpc.KindElector, gen: 1, up: true, impl: fakeElector{j: j}}, leader(1), follower(1)}
		}, "acquire release", false, true},
		{"elector gone releases", func(j *callLog) []event {
			return []event{checkerUp, health(true), {kind: rpc.KindElector, gen: 1, up: true, impl: fakeElector{j: j}}, leader(1), {kind: rpc.KindElector, gen: 1}}
		}, "acquire release", false, true},
		{"stale elector events are ignored", func(j *callLog) []event {
			return []event{checkerUp, health(true), {kind: rpc.KindElector, gen: 2, up: true, impl: fakeElector{j: j}}, leader(1), {kind: rpc.KindElector, gen: 1}}
		}, "", false, true},
		{"unhealthy leader releases, then hands over, then stops the elector", func(j *callLog) []event {
			return []event{checkerUp, health(true), {kind: rpc.KindElector, gen: 1, up: true, impl: fakeElector{j: j}}, leader(1), health(false)}
		}, "acquire release transfer", false, false},
		{"unusable interface releases and leaves the election", func(j *callLog) []event {
			return []event{checkerUp, health(true), {kind: rpc.KindElector, gen: 1, up: true, impl: fakeElector{j: j}}, leader(1),
				{kind: rpc.KindAnnouncer, gen: 1, iface: &pb.InterfaceEvent{Usable: false, Reason: "no carrier"}}}
		}, "acquire release transfer", false, false},
		{"announcer restart re-acquires", func(j *callLog) []event {
			return []event{checkerUp, health(true), {kind: rpc.KindElector, gen: 1, up: true, impl: fakeElector{j: j}}, leader(1),
				{kind: rpc.KindAnnouncer, gen: 1}, {kind: rpc.KindAnnouncer, gen: 2, up: true, impl: fakeAnnouncer{j: j}}}
		}, "acquire scrub acquire", true, true},
		// A dead announcer's VIPs are scrubbed before the policy acts on
		// anything else: here, losing leadership while it is down.
		{"announcer killed on the holder: scrub, then no VIP while a follower", func(j *callLog) []event {
			return []event{checkerUp, health(true), {kind: rpc.KindElector, gen: 1, up: true, impl: fakeElector{j: j}}, leader(1),
				{kind: rpc.KindAnnouncer, gen: 1}, follower(1), {kind: rpc.KindAnnouncer, gen: 2, up: true, impl: fakeAnnouncer{j: j}}}
		}, "acquire scrub", false, true},
		{"announcer killed on a follower: scrub, nothing acquired", func(j *callLog) []event {
			return []event{checkerUp, health(true), {kind: rpc.KindElector, gen: 1, up: true, impl: fakeElector{j: j}}, follower(1),
				{kind: rpc.KindAnnouncer, gen: 1}, {kind: rpc.KindAnnouncer, gen: 2, up: true, impl: fakeAnnouncer{j: j}}}
		}, "scrub", false, true},
		{"announcer down while unhealthy: scrub before the handover", func(j *callLog) []event {
			return []event{checkerUp, health(true), {kind: rpc.KindElector, gen: 1, up: true, impl: fakeElector{j: j}}, leader(1),
				{kind: rpc.KindAnnouncer, gen: 1}, health(false)}
		}, "acquire scrub transfer", false, false},
		{"release failed: scrub before the handover", func(j *callLog) []event {
			return []event{checkerUp, health(true), {kind: rpc.KindAnnouncer, gen: 2, up: true, impl: fakeAnnouncer{j: j, releaseErr: errors.New("netlink: operation not permitted")}},
				{kind: rpc.KindElector, gen: 1, up: true, impl: fakeElector{j: j}}, leader(1), health(false)}
		}, "acquire release scrub transfer", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, j := testPolicy(t)
			for _, ev := range tc.events(j) {
				p.handle(ev)
			}
			if got := strings.Join(j.calls, " "); got != tc.wantCalls {
				t.Errorf("calls = %q, want %q", got, tc.wantCalls)
			}
			if p.held != tc.wantHeld {
				t.Errorf("held = %v, want %v", p.held, tc.wantHeld)
			}
			// BGP routes carry the term (their MED): every Acquire
			// is for the term of leader(), 2.
			for i, term := range j.terms {
				if term != 2 {
					t.Errorf("acquire %d: term %d, want 2", i, term)
				}
			}
			if on := p.s.runners[rpc.KindElector].wanted(); on != tc.wantElectorOn {
				t.Errorf("elector wanted = %v, want %v", on, tc.wantElectorOn)
			}
		})
	}
}

func TestShutdownReleasesFirst(t *testing.T) {
	p, j := testPolicy(t)
	for _, ev := range []event{{kind: rpc.KindChecker, gen: 1, up: true, impl: fakeReporter{}}, health(true),
		{kind: rpc.KindElector, gen: 1, up: true, impl: fakeElector{j: j}}, leader(1)} {
		p.handle(ev)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan struct{})
	go func() { p.loop(ctx); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("loop did not return on shutdown")
	}
	if got := strings.Join(j.calls, " "); got != "acquire release transfer" {
		t.Fatalf("calls = %q", got)
	}
}

func TestCheckerGraceThenUnhealthy(t *testing.T) {
	p, _ := testPolicy(t)
	p.handle(event{kind: rpc.KindChecker, gen: 1, up: true, impl: fakeReporter{}})
	p.handle(health(true))
	p.handle(event{kind: rpc.KindChecker, gen: 1})
	if !p.healthy() || p.checkerGrace == nil {
		t.Fatalf("a crashed checker's verdict should stand during the grace period")
	}
}
