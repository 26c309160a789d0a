package checker

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// service is a TCP service that keeps its connections open, as a real one
// does, until kill closes the listener and every connection: what the
// kernel does when the process dies.
type service struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func startService(t *testing.T) *service {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &service{ln: ln}
	t.Cleanup(s.kill)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
		}
	}()
	return s
}

func (s *service) kill() {
	s.ln.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
}

// TestWatchSeesADeathAtOnce: with a 10s interval, a service that dies is
// found unhealthy within a second with the watch, and not with it off.
func TestWatchSeesADeathAtOnce(t *testing.T) {
	for _, tc := range []struct {
		mode    pb.WatchMode
		watched bool
	}{{pb.WatchMode_WATCH_AUTO, true}, {pb.WatchMode_WATCH_OFF, false}} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			svc := startService(t)
			c := newChecker(t)
			ch := &pb.Check{Name: "svc", Protocol: ProtocolTCP, Address: svc.ln.Addr().String(), TimeoutMs: 500, Watch: tc.mode}
			if err := c.Configure(t.Context(), &pb.CheckerConfig{IntervalMs: 10_000, Checks: []*pb.Check{ch}}); err != nil {
				t.Fatal(err)
			}
			watchUntil(t, c, func(h *pb.Health) bool { return h.Healthy })
			time.Sleep(100 * time.Millisecond) // the watched connection opens after the first run
			killed := time.Now()
			svc.kill()
			got := make(chan time.Duration, 1)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			go func() {
				_ = c.Watch(ctx, func(h *pb.Health) error {
					if !h.Healthy {
						select {
						case got <- time.Since(killed):
						default:
						}
					}
					return nil
				})
			}()
			select {
			case d := <-got:
				if !tc.watched {
					t.Fatalf("unwatched check found the death after %s, before its 10s round", d)
				}
				t.Logf("death found %s after the kill", d.Round(time.Millisecond))
				if n := testutil.ToFloat64(c.m.wakeups.WithLabelValues("svc")); n != 1 {
					t.Errorf("%s = %v, want 1", metricWatchWakeups, n)
				}
			case <-time.After(2 * time.Second):
				if tc.watched {
					t.Fatal("watched check did not find the death within 2s")
				}
			}
		})
	}
}

// TestWatchIdleClosesCostOneRunPerInterval: a service that closes every
// connection at once (but serves) stays healthy, and its watch starts at
// most one early run per interval.
func TestWatchIdleClosesCostOneRunPerInterval(t *testing.T) {
	ln := listen(t) // accepts and closes at once
	c := newChecker(t)
	const interval = 100 * time.Millisecond
	ch := &pb.Check{Name: "rude", Protocol: ProtocolTCP, Address: ln.Addr().String(), TimeoutMs: 50, Watch: pb.WatchMode_WATCH_ON}
	if err := c.Configure(t.Context(), &pb.CheckerConfig{IntervalMs: interval.Milliseconds(), Checks: []*pb.Check{ch}}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	time.Sleep(10 * interval)
	rounds := int(time.Since(start)/interval) + 1
	wakeups := int(testutil.ToFloat64(c.m.wakeups.WithLabelValues("rude")))
	if wakeups == 0 || wakeups > rounds {
		t.Errorf("%d early runs over %d rounds, want between 1 and %d", wakeups, rounds, rounds)
	}
	if n := testutil.ToFloat64(c.m.failures.WithLabelValues("rude")); n != 0 {
		t.Errorf("%v failed runs, want 0", n)
	}
	t.Logf("%d early runs over %d rounds", wakeups, rounds)
}

func TestWatchable(t *testing.T) {
	local := func(a netip.Addr) bool { return a == netip.MustParseAddr("198.18.0.11") }
	tests := []struct {
		protocol, address string
		mode              pb.WatchMode
		want              bool
	}{
		{ProtocolTCP, "127.0.0.1:80", pb.WatchMode_WATCH_AUTO, true},
		{ProtocolHTTP, "[::1]:80", pb.WatchMode_WATCH_AUTO, true},
		{ProtocolHTTPS, "localhost:443", pb.WatchMode_WATCH_AUTO, true},
		{ProtocolTCP, "198.18.0.11:80", pb.WatchMode_WATCH_AUTO, true},
		{ProtocolTCP, "198.18.0.12:80", pb.WatchMode_WATCH_AUTO, false},
		{ProtocolTCP, "198.18.0.12:80", pb.WatchMode_WATCH_ON, true},
		{ProtocolTCP, "127.0.0.1:80", pb.WatchMode_WATCH_OFF, false},
		{ProtocolTCP, "backend.example:80", pb.WatchMode_WATCH_AUTO, false},
		{ProtocolUDP, "127.0.0.1:53", pb.WatchMode_WATCH_AUTO, false},
		{ProtocolExec, "", pb.WatchMode_WATCH_ON, false},
	}
	for _, tt := range tests {
		pc := &pb.Check{Protocol: tt.protocol, Address: tt.address, Watch: tt.mode}
		if got := watchable(pc, local); got != tt.want {
			t.Errorf("watchable(%s %s %s) = %v, want %v", tt.protocol, tt.address, tt.mode, got, tt.want)
		}
	}
}

func TestWatchOnlyForConnectionChecks(t *testing.T) {
	_, _, err := build(defaultProbers, &pb.CheckerConfig{IntervalMs: 1000, Checks: []*pb.Check{
		{Name: "e", Protocol: ProtocolExec, TimeoutMs: 100, Exec: &pb.ExecCheck{Command: "true"}, Watch: pb.WatchMode_WATCH_ON},
	}})
	if err == nil {
		t.Fatal("watch on an exec check accepted")
	}
	t.Log(err)
}

// TestWatchedHungServiceFoundByItsRound: a service that hangs keeps its
// connections open, so the watch sees nothing; the http check's regular
// run times out and finds it within interval + timeout.
func TestWatchedHungServiceFoundByItsRound(t *testing.T) {
	hang := make(chan struct{})
	var hung atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hung.Load() {
			<-hang
		}
	}))
	t.Cleanup(func() { close(hang); srv.Close() })
	c := newChecker(t)
	const interval, timeout = 300 * time.Millisecond, 100 * time.Millisecond
	ch := &pb.Check{Name: "web", Protocol: ProtocolHTTP, Address: srv.Listener.Addr().String(), TimeoutMs: timeout.Milliseconds()}
	if err := c.Configure(t.Context(), &pb.CheckerConfig{IntervalMs: interval.Milliseconds(), Checks: []*pb.Check{ch}}); err != nil {
		t.Fatal(err)
	}
	watchUntil(t, c, func(h *pb.Health) bool { return h.Healthy })
	hung.Store(true)
	start := time.Now()
	watchUntil(t, c, func(h *pb.Health) bool { return !h.Healthy })
	took := time.Since(start)
	t.Logf("hung service found after %s (interval %s + timeout %s)", took.Round(time.Millisecond), interval, timeout)
	if took > 2*(interval+timeout) {
		t.Errorf("found after %s, want within about interval + timeout (%s)", took, interval+timeout)
	}
	if n := testutil.ToFloat64(c.m.wakeups.WithLabelValues("web")); n != 0 {
		t.Errorf("%s = %v: the watch fired for a service that only hangs", metricWatchWakeups, n)
	}
}
