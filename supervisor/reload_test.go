package supervisor

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/keep-vip/keep-vip/rpc"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
	"github.com/keep-vip/keep-vip/supervisor/config"
)

// fakeBalancer records what it is configured with; fail makes Configure
// fail; draining is how many Status calls still report draining.
type fakeBalancer struct {
	fakeReporter
	mu       sync.Mutex
	got      []*pb.BalancerConfig
	fail     error
	draining int
}

func (f *fakeBalancer) Configure(_ context.Context, cfg *pb.BalancerConfig) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, cfg)
	return f.fail
}

func (f *fakeBalancer) Status(context.Context) (*pb.PluginStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.draining > 0 {
		f.draining--
		return &pb.PluginStatus{State: "draining", Balancer: &pb.BalancerStatus{Draining: true, DrainingClients: 1}}, nil
	}
	// The state word is for humans: only the typed field ends the drain.
	return &pb.PluginStatus{State: "draining", Balancer: &pb.BalancerStatus{}}, nil
}

type fakeChecker struct {
	fakeReporter
	got []*pb.CheckerConfig
}

func (f *fakeChecker) Configure(_ context.Context, cfg *pb.CheckerConfig) error {
	f.got = append(f.got, cfg)
	return nil
}

func (f *fakeChecker) Watch(context.Context, func(*pb.Health) error) error { return nil }

var (
	_ rpc.Balancer = (*fakeBalancer)(nil)
	_ rpc.Checker  = (*fakeChecker)(nil)
)

const reloadBase = `
interface: eth0
vip: 198.18.0.100
checks:
  - name: web
    protocol: tcp
    address: 127.0.0.1:80
members:
  - id: a
    address: 198.18.0.11:20000
loadBalancers:
  - name: web
    bindAddress: 0.0.0.0:8080
    type: tcp
    backends:
      - name: b1
        address: 198.18.0.11:80
`

func parse(t *testing.T, raw string) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(raw), nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func reloadPolicy(t *testing.T) (*policy, *fakeBalancer, *fakeChecker) {
	t.Helper()
	cfg := parse(t, reloadBase)
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
	p := newPolicy(s)
	bal, chk := &fakeBalancer{}, &fakeChecker{}
	p.handle(event{kind: rpc.KindBalancer, gen: 1, up: true, impl: bal})
	p.handle(event{kind: rpc.KindChecker, gen: 1, up: true, impl: chk})
	return p, bal, chk
}

func reload(p *policy, cfg *config.Config) error {
	r := &reloadRequest{cfg: cfg, reply: make(chan error, 1)}
	p.handle(event{reload: r})
	return <-r.reply
}

func TestReloadAppliesBalancersAndChecks(t *testing.T) {
	p, bal, chk := reloadPolicy(t)
	next := strings.NewReplacer(
		"198.18.0.11:80", "198.18.0.12:80", // a backend
		"127.0.0.1:80", "127.0.0.1:81", // a check
		"vip: 198.18.0.100", "vip: 198.18.0.101", // needs a restart
	).Replace(reloadBase) + "drainTimeout: 9s\n"
	if err := reload(p, parse(t, next)); err != nil {
		t.Fatal(err)
	}
	if len(bal.got) != 1 || bal.got[0].LoadBalancers[0].Backends[0].Address != "198.18.0.12:80" || bal.got[0].DrainTimeoutMs != 9000 {
		t.Errorf("balancer configured with %v", bal.got)
	}
	if len(chk.got) != 1 || chk.got[0].Checks[0].Address != "127.0.0.1:81" {
		t.Errorf("checker configured with %v", chk.got)
	}
	live := p.s.liveConfig()
	if live.LoadBalancers[0].Backends[0].Address != "198.18.0.12:80" || live.Checks[0].Address != "127.0.0.1:81" {
		t.Errorf("live config not updated: %+v", live)
	}
	if live.VIP != "198.18.0.100" || p.s.cfg.VIP != "198.18.0.100" {
		t.Errorf("a restart-only change was applied: vip %s", live.VIP)
	}

	// The same config again changes nothing.
	if err := reload(p, parse(t, next)); err != nil || len(bal.got) != 1 || len(chk.got) != 1 {
		t.Errorf("an unchanged reload configured plugins again (err %v)", err)
	}
}

func TestReloadRefusedByBalancerKeepsOldConfig(t *testing.T) {
	p, bal, _ := reloadPolicy(t)
	bal.fail = errors.New("listen on tcp 0.0.0.0:9090: address already in use")
	next := strings.Replace(reloadBase, "0.0.0.0:8080", "0.0.0.0:9090", 1)
	err := reload(p, parse(t, next))
	if err == nil || !strings.Contains(err.Error(), "loadBalancers: listen on") {
		t.Fatalf("reload error = %v", err)
	}
	if got := p.s.liveConfig().LoadBalancers[0].BindAddress; got != "0.0.0.0:8080" {
		t.Errorf("live config has the refused bind address %s", got)
	}
}

func TestRestartOnlyChanges(t *testing.T) {
	cur := parse(t, reloadBase)
	next := parse(t, strings.NewReplacer("interface: eth0", "interface: eth1", "198.18.0.11:20000", "198.18.0.12:20000",
		"198.18.0.11:80", "198.18.0.13:80").Replace(reloadBase))
	// members are applied by a reload (TestReloadMembers).
	if got := strings.Join(restartOnlyChanges(cur, next), " "); got != "interface" {
		t.Errorf("restart-only changes = %q, want interface", got)
	}
}

// membersElector records the member lists it is configured with.
type membersElector struct {
	fakeReporter
	got [][]string
}

func (e *membersElector) Configure(_ context.Context, cfg *pb.ElectorConfig) error {
	var ids []string
	for _, m := range cfg.GetMembers() {
		ids = append(ids, m.GetId()+"="+m.GetAddress())
	}
	e.got = append(e.got, ids)
	return nil
}
func (e *membersElector) Watch(context.Context, func(*pb.Leadership) error) error { return nil }
func (e *membersElector) TransferLeadership(context.Context, string) error        { return nil }

func TestReloadMembers(t *testing.T) {
	p, _, _ := reloadPolicy(t)
	p.s.local = p.s.cfg.Members[0]
	el := &membersElector{}
	p.handle(event{kind: rpc.KindElector, gen: 1, up: true, impl: el})
	const more = "members:\n  - id: a\n    address: 198.18.0.11:20000\n  - id: b\n    address: 198.18.0.12:20000\n"
	grown := strings.Replace(reloadBase, "members:\n  - id: a\n    address: 198.18.0.11:20000\n", more, 1)
	if err := reload(p, parse(t, grown)); err != nil {
		t.Fatalf("reload with a new member: %v", err)
	}
	if len(el.got) != 1 || strings.Join(el.got[0], " ") != "a=198.18.0.11:20000 b=198.18.0.12:20000" {
		t.Fatalf("elector configured with %v", el.got)
	}
	if n := len(p.s.liveConfig().Members); n != 2 {
		t.Errorf("live config has %d members, want 2", n)
	}
	for _, tc := range []struct{ name, doc, want string }{
		{"this member removed", strings.Replace(grown, "  - id: a\n    address: 198.18.0.11:20000\n", "", 1), "this member (a) is not in the new list"},
		{"this member moved", strings.Replace(grown, "198.18.0.11:20000", "198.18.0.21:20000", 1), "restart keep-vip-supervisor here"},
	} {
		err := reload(p, parse(t, tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "members: ") {
			t.Errorf("%s: reload error %v, want one naming members and %q", tc.name, err, tc.want)
		}
		if n := len(p.s.liveConfig().Members); n != 2 || len(el.got) != 1 {
			t.Errorf("%s: half applied: live members %d, elector configured %d times", tc.name, n, len(el.got))
		}
	}
}

func TestDrainBalancerOnStop(t *testing.T) {
	p, bal, _ := reloadPolicy(t)
	bal.draining = 3
	start := time.Now()
	p.drainBalancer()
	if len(bal.got) != 1 || len(bal.got[0].LoadBalancers) != 0 || bal.got[0].DrainTimeoutMs != config.DefaultDrainTimeout.Milliseconds() {
		t.Errorf("balancer configured with %v, want no load balancers and the drain timeout", bal.got)
	}
	if took := time.Since(start); took < 3*drainPoll || took > 2*time.Second {
		t.Errorf("drain took %s, want about 4 polls", took)
	}
	// Past the drain timeout, the supervisor stops waiting.
	p, bal, _ = reloadPolicy(t)
	p.s.setLive(func() config.Config { c := *p.s.cfg; c.DrainTimeout = 200 * time.Millisecond; return c }())
	bal.draining = 1000
	start = time.Now()
	p.drainBalancer()
	if took := time.Since(start); took > time.Second {
		t.Errorf("drain took %s past a 200ms drain timeout", took)
	}
}

// TestReloadDuringPluginStart: a plugin whose setup read the config before a
// reload made a new one live is configured again with it once it is up.
func TestReloadDuringPluginStart(t *testing.T) {
	p, _, _ := reloadPolicy(t)
	// A new balancer starts: its setup reads the live config...
	used := p.s.setupConfig(rpc.KindBalancer)
	// ...and a reload lands before it is up (no balancer to configure).
	next := parse(t, strings.Replace(reloadBase, "198.18.0.11:80", "198.18.0.12:80", 1))
	p.s.setLive(*next)
	bal := &fakeBalancer{}
	p.handle(event{kind: rpc.KindBalancer, gen: 2, up: true, impl: bal})
	if len(bal.got) != 1 || bal.got[0].GetLoadBalancers()[0].GetBackends()[0].GetAddress() != "198.18.0.12:80" {
		t.Fatalf("balancer started with %v, then configured with %v; want the reloaded backend", used.LoadBalancers, bal.got)
	}
	// Up again with nothing reloaded meanwhile: not configured twice.
	p.s.setupConfig(rpc.KindBalancer)
	bal2 := &fakeBalancer{}
	p.handle(event{kind: rpc.KindBalancer, gen: 3, up: true, impl: bal2})
	if len(bal2.got) != 0 {
		t.Errorf("an up-to-date start was configured again: %v", bal2.got)
	}
}
