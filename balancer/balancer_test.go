package balancer

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/keep-vip/keep-vip/balancer/internal/policy"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

const waitFor = 3 * time.Second

// startBackend starts a line echo server on 127.0.0.1 that answers each line
// with "<name> <line>" and, once the client half-closes, "<name> eof"
// before closing. It returns its address.
func startBackend(t *testing.T, name string) string {
	t.Helper()
	return serveTCP(t, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(waitFor))
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				io.WriteString(c, name+" eof\n")
				return
			}
			if _, err := io.WriteString(c, name+" "+line); err != nil {
				return
			}
		}
	})
}

// deadAddr returns an address on 127.0.0.1 where nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func newBalancer(t testing.TB) *Balancer {
	t.Helper()
	b := New(zerolog.New(zerolog.NewTestWriter(t)))
	b.judge.EjectCooldown = 200 * time.Millisecond
	t.Cleanup(func() { b.Close() })
	return b
}

func lb(name, bind string, backends ...string) *pb.LoadBalancer {
	l := &pb.LoadBalancer{Name: name, BindAddress: bind, Type: TypeTCP}
	for _, addr := range backends {
		l.Backends = append(l.Backends, &pb.Backend{Name: addr, Address: addr})
	}
	return l
}

// named gives each backend the name it answers with.
func named(l *pb.LoadBalancer, names ...string) *pb.LoadBalancer {
	for i, n := range names {
		l.Backends[i].Name = n
	}
	return l
}

func configure(t *testing.T, b *Balancer, lbs ...*pb.LoadBalancer) {
	t.Helper()
	configureDrain(t, b, 0, lbs...)
}

// configureDrain configures with a drain timeout for removed load balancers
// and Close.
func configureDrain(t *testing.T, b *Balancer, drain time.Duration, lbs ...*pb.LoadBalancer) {
	t.Helper()
	if err := b.Configure(context.Background(), &pb.BalancerConfig{LoadBalancers: lbs, DrainTimeoutMs: drain.Milliseconds()}); err != nil {
		t.Fatal(err)
	}
}

func addr(t *testing.T, b *Balancer, name string) string {
	t.Helper()
	a, ok := b.Addrs()[name]
	if !ok {
		t.Fatalf("load balancer %q is not running", name)
	}
	return a.String()
}

// conn is a client connection through the balancer.
type conn struct {
	t *testing.T
	c *net.TCPConn
	r *bufio.Reader
}

func dial(t *testing.T, address string) *conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", address, waitFor)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(waitFor))
	return &conn{t: t, c: c.(*net.TCPConn), r: bufio.NewReader(c)}
}

// ask sends line and returns the backend's answer without its newline.
func (c *conn) ask(line string) string {
	c.t.Helper()
	if _, err := io.WriteString(c.c, line+"\n"); err != nil {
		c.t.Fatal(err)
	}
	got, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read answer to %q: %v", line, err)
	}
	return strings.TrimSuffix(got, "\n")
}

// whoAnswers makes one connection and returns the name of its backend.
func whoAnswers(t *testing.T, address string) string {
	t.Helper()
	c := dial(t, address)
	defer c.c.Close()
	name, _, _ := strings.Cut(c.ask("hi"), " ")
	return name
}

// eventually polls cond, bounded in time.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, waitFor)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRoundRobin(t *testing.T) {
	b := newBalancer(t)
	configure(t, b, named(lb("web", "127.0.0.1:0", startBackend(t, "b1"), startBackend(t, "b2"), startBackend(t, "b3")), "b1", "b2", "b3"))
	front := addr(t, b, "web")

	var got []string
	for range 6 {
		got = append(got, whoAnswers(t, front))
	}
	if want := "b1 b2 b3 b1 b2 b3"; strings.Join(got, " ") != want {
		t.Errorf("backends in turn = %v, want %s", got, want)
	}
	for _, be := range []string{"b1", "b2", "b3"} {
		if n := testutil.ToFloat64(b.m.Connections.WithLabelValues("web", be)); n != 2 {
			t.Errorf("%s{backend=%s} = %v, want 2", policy.MetricConnections, be, n)
		}
	}
	eventually(t, "active connections back to 0", func() bool {
		return testutil.ToFloat64(b.m.Active.WithLabelValues("web")) == 0
	})

	st, err := b.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.State != StateServing || st.Details["web bind"] != "tcp "+front ||
		!strings.HasPrefix(st.Details["web backends"], "b1=127.0.0.1:") {
		t.Errorf("status = %v", st)
	}
}

func TestFailedBackendSkipped(t *testing.T) {
	b := newBalancer(t)
	dead := deadAddr(t)
	configure(t, b, named(lb("web", "127.0.0.1:0", startBackend(t, "b1"), dead, startBackend(t, "b3")), "b1", "dead", "b3"))
	front := addr(t, b, "web")

	var got []string
	for range 4 {
		got = append(got, whoAnswers(t, front))
	}
	// Every second pick is the dead one, so its client goes on to b3.
	if want := "b1 b3 b1 b3"; strings.Join(got, " ") != want {
		t.Errorf("backends in turn = %v, want %s", got, want)
	}
	if n := testutil.ToFloat64(b.m.DialErrors.WithLabelValues("web", "dead")); n != 2 {
		t.Errorf("%s{backend=dead} = %v, want 2", policy.MetricDialErrors, n)
	}
}

func TestAllBackendsDownClosesClient(t *testing.T) {
	b := newBalancer(t)
	configure(t, b, lb("web", "127.0.0.1:0", deadAddr(t), deadAddr(t)))
	c := dial(t, addr(t, b, "web"))
	if _, err := c.r.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("read from client with no backend = %v, want EOF", err)
	}
	eventually(t, "2 dial errors", func() bool {
		fams, _ := b.Gather()
		for _, f := range fams {
			if f.GetName() == policy.MetricDialErrors {
				sum := 0.0
				for _, m := range f.GetMetric() {
					sum += m.GetCounter().GetValue()
				}
				return sum == 2
			}
		}
		return false
	})
}

func TestHalfClose(t *testing.T) {
	b := newBalancer(t)
	configure(t, b, named(lb("web", "127.0.0.1:0", startBackend(t, "b1")), "b1"))
	c := dial(t, addr(t, b, "web"))

	if _, err := io.WriteString(c.c, "ping\n"); err != nil {
		t.Fatal(err)
	}
	if err := c.c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	// The backend sees the end of the request and still gets to answer.
	got, err := io.ReadAll(c.r)
	if err != nil {
		t.Fatal(err)
	}
	if want := "b1 ping\nb1 eof\n"; string(got) != want {
		t.Errorf("answer = %q, want %q", got, want)
	}
}

func TestLargeTransferAndBytes(t *testing.T) {
	b := newBalancer(t)
	configure(t, b, named(lb("web", "127.0.0.1:0", startBackend(t, "b1")), "b1"))
	c := dial(t, addr(t, b, "web"))

	// Many read buffers, without a newline: the backend answers only
	// once it sees the end.
	const size = 3<<20 + 123
	go func() {
		c.c.Write([]byte(strings.Repeat("x", size)))
		c.c.CloseWrite()
	}()
	got, err := io.ReadAll(c.r)
	if err != nil {
		t.Fatal(err)
	}
	if want := "b1 eof\n"; string(got) != want {
		t.Errorf("answer = %q, want %q", got, want)
	}
	eventually(t, "bytes counted", func() bool {
		return testutil.ToFloat64(b.m.Bytes.WithLabelValues("web", "b1", policy.DirToBackend)) == size &&
			testutil.ToFloat64(b.m.Bytes.WithLabelValues("web", "b1", policy.DirToClient)) == float64(len(got))
	})
	if opened, _ := pipeCounts(b); opened != 0 {
		t.Errorf("%d splice pipes opened without splice: true", opened)
	}
}

func TestReconfigureKeepsConnections(t *testing.T) {
	b := newBalancer(t)
	b1, b2 := startBackend(t, "b1"), startBackend(t, "b2")
	configureDrain(t, b, time.Minute, named(lb("web", "127.0.0.1:0", b1), "b1"))
	front := addr(t, b, "web")
	c := dial(t, front)
	if got := c.ask("one"); got != "b1 one" {
		t.Fatalf("answer = %q", got)
	}
	if n := testutil.ToFloat64(b.m.Active.WithLabelValues("web")); n != 1 {
		t.Errorf("%s = %v, want 1", policy.MetricActiveConnections, n)
	}

	// Same name, bind and type: the socket stays, the backends change.
	configureDrain(t, b, time.Minute, named(lb("web", "127.0.0.1:0", b2), "b2"))
	if got := addr(t, b, "web"); got != front {
		t.Errorf("unchanged load balancer moved from %s to %s", front, got)
	}
	if got := whoAnswers(t, front); got != "b2" {
		t.Errorf("new connection went to %s, want b2", got)
	}
	if got := c.ask("two"); got != "b1 two" {
		t.Errorf("established connection after backend swap: answer = %q, want %q", got, "b1 two")
	}

	// Removed: it stops listening, the established connection drains.
	configureDrain(t, b, time.Minute)
	if _, err := net.DialTimeout("tcp", front, waitFor); err == nil {
		t.Error("removed load balancer still accepts")
	}
	if got := c.ask("three"); got != "b1 three" {
		t.Errorf("established connection after removal: answer = %q, want %q", got, "b1 three")
	}
	eventually(t, "one connection draining", func() bool {
		st, _ := b.Status(context.Background())
		return st.State == StateDraining && st.GetBalancer().GetDraining() && st.GetBalancer().GetDrainingClients() == 1
	})
	c.c.Close()
	eventually(t, "drained", func() bool {
		st, _ := b.Status(context.Background())
		return st.State == StateIdle && len(st.Details) == 0 && !st.GetBalancer().GetDraining()
	})
}

func TestRenameKeepsSocket(t *testing.T) {
	b := newBalancer(t)
	b1 := startBackend(t, "b1")
	// A fixed port: with port 0 the name is part of the socket's identity.
	bind := deadAddr(t)
	configure(t, b, named(lb("web", bind, b1), "b1"))
	front := addr(t, b, "web")
	configure(t, b, named(lb("www", bind, b1), "b1"))
	if got := addr(t, b, "www"); got != front {
		t.Errorf("renamed load balancer moved from %s to %s", front, got)
	}
	if _, ok := b.Addrs()["web"]; ok {
		t.Error("old name still listed")
	}
	whoAnswers(t, front)
	if n := testutil.ToFloat64(b.m.Connections.WithLabelValues("www", "b1")); n != 1 {
		t.Errorf("%s{balancer=www} = %v, want 1", policy.MetricConnections, n)
	}
}

func TestBindConflictChangesNothing(t *testing.T) {
	b := newBalancer(t)
	b1 := startBackend(t, "b1")
	configure(t, b, named(lb("web", "127.0.0.1:0", b1), "b1"))
	front := addr(t, b, "web")
	before, _ := b.Status(context.Background())

	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	err = b.Configure(context.Background(), &pb.BalancerConfig{LoadBalancers: []*pb.LoadBalancer{
		named(lb("web", "127.0.0.1:0", startBackend(t, "b2")), "b2"),
		lb("other", "127.0.0.1:0", b1),
		lb("db", taken.Addr().String(), b1),
	}})
	if err == nil {
		t.Fatal("Configure on a taken address succeeded")
	}
	for _, s := range []string{`"db"`, taken.Addr().String(), "address already in use"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q lacks %q", err, s)
		}
	}
	after, _ := b.Status(context.Background())
	if len(after.Details) != len(before.Details) || after.Details["web backends"] != before.Details["web backends"] {
		t.Errorf("status changed by a failed Configure: %v, was %v", after, before)
	}
	if _, ok := b.Addrs()["other"]; ok {
		t.Error("a failed Configure left a new load balancer running")
	}
	if got := whoAnswers(t, front); got != "b1" {
		t.Errorf("old config: answer from %s, want b1", got)
	}
}

func TestConfigureValidation(t *testing.T) {
	ok := func() *pb.LoadBalancer { return lb("web", "127.0.0.1:0", "127.0.0.1:8080") }
	with := func(f func(*pb.LoadBalancer)) *pb.LoadBalancer { l := ok(); f(l); return l }
	tests := []struct {
		name    string
		lbs     []*pb.LoadBalancer
		wantErr []string // substrings; nil means valid
	}{
		{"valid", []*pb.LoadBalancer{ok()}, nil},
		{"empty", nil, nil},
		{"no backends", []*pb.LoadBalancer{with(func(l *pb.LoadBalancer) { l.Backends = nil })}, nil},
		{"udp", []*pb.LoadBalancer{with(func(l *pb.LoadBalancer) { l.Type = TypeUDP })}, nil},
		{"http", []*pb.LoadBalancer{with(func(l *pb.LoadBalancer) { l.Type = TypeHTTP })}, nil},
		{"sctp", []*pb.LoadBalancer{with(func(l *pb.LoadBalancer) { l.Type = "sctp" })},
			[]string{`load balancer "web": type "sctp" is not one of tcp, udp, http`}},
		{"no type", []*pb.LoadBalancer{with(func(l *pb.LoadBalancer) { l.Type = "" })},
			[]string{`"web"`, "not one of"}},
		{"tcp and udp on one port", []*pb.LoadBalancer{
			with(func(l *pb.LoadBalancer) { l.BindAddress = "127.0.0.1:1" }),
			with(func(l *pb.LoadBalancer) { l.Name, l.BindAddress, l.Type = "dns", "127.0.0.1:1", TypeUDP }),
		}, nil},
		{"bad algorithm", []*pb.LoadBalancer{with(func(l *pb.LoadBalancer) { l.Algorithm = "random" })},
			[]string{`"web"`, `algorithm "random" is not one of roundrobin, leastconn, sourcehash`}},
		{"proxy protocol 3", []*pb.LoadBalancer{with(func(l *pb.LoadBalancer) { l.ProxyProtocol = 3 })},
			[]string{`"web"`, "proxy protocol version 3"}},
		{"proxy protocol on udp", []*pb.LoadBalancer{with(func(l *pb.LoadBalancer) { l.Type, l.ProxyProtocol = TypeUDP, 2 })},
			[]string{`"web"`, "not udp"}},
		{"splice on udp", []*pb.LoadBalancer{with(func(l *pb.LoadBalancer) { l.Type, l.Splice = TypeUDP, true })},
			[]string{`"web"`, "splice is for tcp and http load balancers, not udp"}},
		{"weight", []*pb.LoadBalancer{with(func(l *pb.LoadBalancer) { l.Backends[0].Weight = 1001 })},
			[]string{`"web"`, "backend #1", "weight 1001"}},
		{"health type", []*pb.LoadBalancer{with(func(l *pb.LoadBalancer) { l.Health = &pb.BackendHealth{Type: "icmp"} })},
			[]string{`"web"`, `health check type "icmp"`}},
		{"health timeout", []*pb.LoadBalancer{with(func(l *pb.LoadBalancer) {
			l.Health = &pb.BackendHealth{Type: HealthTCP, IntervalMs: 100, TimeoutMs: 200}
		})}, []string{`"web"`, "timeout 200ms is above its interval 100ms"}},
		{"health path", []*pb.LoadBalancer{with(func(l *pb.LoadBalancer) { l.Health = &pb.BackendHealth{Type: HealthHTTP, Path: "up"} })},
			[]string{`"web"`, `path "up"`}},
		{"duplicate backend address", []*pb.LoadBalancer{with(func(l *pb.LoadBalancer) {
			l.Backends = append(l.Backends, &pb.Backend{Name: "b2", Address: "127.0.0.1:8080"})
		})}, []string{`"web"`, `backend #2 "b2"`, "also backend #1's"}},
		{"no name", []*pb.LoadBalancer{with(func(l *pb.LoadBalancer) { l.Name = "" })},
			[]string{"#1 has no name"}},
		{"duplicate name", []*pb.LoadBalancer{ok(), with(func(l *pb.LoadBalancer) { l.BindAddress = "127.0.0.1:1" })},
			[]string{`"web" is defined twice`}},
		{"duplicate bind", []*pb.LoadBalancer{
			with(func(l *pb.LoadBalancer) { l.BindAddress = "127.0.0.1:1" }),
			with(func(l *pb.LoadBalancer) { l.Name, l.BindAddress = "api", "127.0.0.1:1" }),
		}, []string{`"web" and "api" both bind tcp 127.0.0.1:1`}},
		{"port 0 twice", []*pb.LoadBalancer{ok(), with(func(l *pb.LoadBalancer) { l.Name = "api" })}, nil},
		{"bad bind", []*pb.LoadBalancer{with(func(l *pb.LoadBalancer) { l.BindAddress = "127.0.0.1" })},
			[]string{`"web"`, "bind address", "missing port"}},
		{"bad backend", []*pb.LoadBalancer{with(func(l *pb.LoadBalancer) {
			l.Backends = append(l.Backends, &pb.Backend{Name: "b2", Address: "nowhere"})
		})}, []string{`"web"`, `backend #2 "b2"`, "missing port"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBalancer(t)
			err := b.Configure(context.Background(), &pb.BalancerConfig{LoadBalancers: tt.lbs})
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Configure = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Configure = nil, want an error")
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q lacks %q", err, s)
				}
			}
			if len(b.Addrs()) != 0 {
				t.Error("an invalid config started a listener")
			}
		})
	}
}

func TestCloseCutsConnections(t *testing.T) {
	b := newBalancer(t)
	configure(t, b, named(lb("web", "127.0.0.1:0", startBackend(t, "b1")), "b1"))
	front := addr(t, b, "web")
	c := dial(t, front)
	if got := c.ask("hi"); got != "b1 hi" {
		t.Fatalf("answer = %q", got)
	}

	done := make(chan error, 1)
	go func() { done <- b.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(waitFor):
		t.Fatal("Close hangs")
	}
	if _, err := c.r.ReadByte(); err == nil {
		t.Error("connection still open after Close")
	}
	if _, err := net.DialTimeout("tcp", front, waitFor); err == nil {
		t.Error("listener still accepts after Close")
	}
	if err := b.Configure(context.Background(), &pb.BalancerConfig{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Configure after Close = %v, want ErrClosed", err)
	}
	if st, _ := b.Status(context.Background()); st.State != StateClosed {
		t.Errorf("state after Close = %q, want %q", st.State, StateClosed)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}
