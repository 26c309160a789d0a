package balancer

import (
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keep-vip/keep-vip/balancer/internal/policy"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// restartable is a line backend that can be stopped and started again on
// the same port.
type restartable struct {
	t    *testing.T
	name string
	addr string
	ln   net.Listener
}

func startRestartable(t *testing.T, name string) *restartable {
	r := &restartable{t: t, name: name, addr: deadAddr(t)}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *restartable) start() {
	r.t.Helper()
	// While stopped, the port is free for the kernel to hand out as the
	// local port of a connection (a health check's connect to this very
	// port can even connect to itself): retry a while before failing.
	ln, err := net.Listen("tcp", r.addr)
	for deadline := time.Now().Add(2 * time.Second); err != nil && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		ln, err = net.Listen("tcp", r.addr)
	}
	if err != nil {
		r.t.Fatal(err)
	}
	r.ln = ln
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.Write([]byte(r.name + " hi\n"))
			}()
		}
	}()
}

func (r *restartable) stop() { r.ln.Close() }

func TestActiveTCPCheckRiseFall(t *testing.T) {
	b := newBalancer(t)
	flaky := startRestartable(t, "flaky")
	l := named(lb("web", "127.0.0.1:0", flaky.addr, startBackend(t, "b2")), "flaky", "b2")
	l.Health = &pb.BackendHealth{Type: HealthTCP, IntervalMs: 20, TimeoutMs: 20, Rise: 2, Fall: 2}
	configure(t, b, l)
	front := addr(t, b, "web")
	up := func() float64 { return testutil.ToFloat64(b.m.Up.WithLabelValues("web", "flaky")) }

	flaky.stop()
	eventually(t, "flaky down", func() bool { return up() == 0 })
	errs := testutil.ToFloat64(b.m.DialErrors.WithLabelValues("web", "flaky"))
	// Down: no connect is even tried.
	for range 4 {
		if got := whoAnswers(t, front); got != "b2" {
			t.Errorf("answer from %s while flaky is down", got)
		}
	}
	if n := testutil.ToFloat64(b.m.DialErrors.WithLabelValues("web", "flaky")); n != errs {
		t.Errorf("connects tried to a down backend: %v errors, was %v", n, errs)
	}
	if st, _ := b.Status(t.Context()); st.Details["web backends"] != "flaky="+flaky.addr+" down, b2="+l.Backends[1].Address {
		t.Errorf("status: %v", st.Details)
	}

	flaky.start()
	eventually(t, "flaky up again", func() bool { return up() == 1 })
	seen := map[string]bool{}
	for range 4 {
		seen[whoAnswers(t, front)] = true
	}
	if !seen["flaky"] {
		t.Errorf("flaky back up but got no connection: %v", seen)
	}
}

// Connect errors eject a backend without active checks; it is let in
// again after the cool-down.
func TestPassiveEjection(t *testing.T) {
	b := newBalancer(t) // 200ms cool-down
	l := named(lb("web", "127.0.0.1:0", deadAddr(t), startBackend(t, "b2")), "dead", "b2")
	l.Health = &pb.BackendHealth{EjectAfterErrors: 2}
	configure(t, b, l)
	front := addr(t, b, "web")
	errs := func() float64 { return testutil.ToFloat64(b.m.DialErrors.WithLabelValues("web", "dead")) }

	for range 8 {
		if got := whoAnswers(t, front); got != "b2" {
			t.Fatalf("answer from %s", got)
		}
	}
	if n := errs(); n != 2 {
		t.Errorf("%v connects tried to the dead backend, want 2 before its ejection", n)
	}
	if n := testutil.ToFloat64(b.m.Ejections.WithLabelValues("web", "dead")); n != 1 {
		t.Errorf("%s = %v, want 1", policy.MetricEjections, n)
	}
	time.Sleep(250 * time.Millisecond)
	for range 2 {
		whoAnswers(t, front)
	}
	if n := errs(); n != 3 {
		t.Errorf("after the cool-down: %v connect errors, want 3 (one more try, then out again)", n)
	}
}

// An ejected backend with active checks comes back by its checks, well
// before the cool-down.
func TestEjectedBackendReadmittedByChecks(t *testing.T) {
	b := newBalancer(t)
	b.judge.EjectCooldown = time.Hour
	flaky := startRestartable(t, "flaky")
	l := named(lb("web", "127.0.0.1:0", flaky.addr, startBackend(t, "b2")), "flaky", "b2")
	// Checks too slow to notice the outage: the ejection does.
	l.Health = &pb.BackendHealth{Type: HealthTCP, IntervalMs: 150, TimeoutMs: 100, Rise: 1, Fall: 10, EjectAfterErrors: 1}
	configure(t, b, l)
	front := addr(t, b, "web")
	flaky.stop()
	for range 2 {
		whoAnswers(t, front)
	}
	if v := testutil.ToFloat64(b.m.Up.WithLabelValues("web", "flaky")); v != 0 {
		t.Fatalf("flaky not ejected (up %v)", v)
	}
	flaky.start()
	eventually(t, "flaky readmitted by a check", func() bool { return testutil.ToFloat64(b.m.Up.WithLabelValues("web", "flaky")) == 1 })
}

// A reload that keeps a backend keeps its health verdict: a backend down
// stays down, it does not start over as up.
func TestHealthKeptAcrossReload(t *testing.T) {
	b := newBalancer(t)
	flaky := startRestartable(t, "flaky")
	b2 := startBackend(t, "b2")
	mk := func(interval int64) *pb.LoadBalancer {
		l := named(lb("web", "127.0.0.1:0", flaky.addr, b2), "flaky", "b2")
		l.Health = &pb.BackendHealth{Type: HealthTCP, IntervalMs: interval, TimeoutMs: 20, Fall: 1}
		return l
	}
	configure(t, b, mk(20))
	flaky.stop()
	eventually(t, "flaky down", func() bool { return testutil.ToFloat64(b.m.Up.WithLabelValues("web", "flaky")) == 0 })
	configure(t, b, mk(1000))
	front := addr(t, b, "web")
	for range 4 {
		if got := whoAnswers(t, front); got != "b2" {
			t.Errorf("after the reload: answer from %s", got)
		}
	}
	if v := testutil.ToFloat64(b.m.Up.WithLabelValues("web", "flaky")); v != 0 {
		t.Errorf("flaky up after the reload")
	}
}

// Health checks of a PROXY protocol backend send a LOCAL header.
func TestTCPCheckSendsProxyLocal(t *testing.T) {
	got := make(chan string, 4)
	backend := serveTCP(t, func(c net.Conn) {
		buf := make([]byte, 64)
		c.SetReadDeadline(time.Now().Add(waitFor))
		n, _ := c.Read(buf)
		select {
		case got <- string(buf[:n]):
		default:
		}
	})
	b := newBalancer(t)
	l := lb("web", "127.0.0.1:0", backend)
	l.ProxyProtocol = 1
	l.Health = &pb.BackendHealth{Type: HealthTCP, IntervalMs: 50, TimeoutMs: 50}
	configure(t, b, l)
	select {
	case s := <-got:
		if s != "PROXY UNKNOWN\r\n" {
			t.Errorf("check sent %q", s)
		}
	case <-time.After(waitFor):
		t.Fatal("no check")
	}
}
