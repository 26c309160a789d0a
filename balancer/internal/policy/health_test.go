package policy

import (
	"errors"
	"net"
	"os"
	"testing"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
	"github.com/keep-vip/keep-vip/rpc/limits"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// An active check that cannot run for want of the balancer's own
// descriptors says nothing of the backend: it stays up, and the fault is
// counted as the balancer's.
func TestLocalFaultIsNoCheckFailure(t *testing.T) {
	j := NewJudge(t.Context(), zerolog.New(zerolog.NewTestWriter(t)), prometheus.NewRegistry())
	l := &pb.LoadBalancer{Name: "web", BindAddress: "127.0.0.1:0", Type: limits.TypeTCP,
		Backends: []*pb.Backend{{Name: "h1", Address: "127.0.0.1:1"}},
		Health:   &pb.BackendHealth{Type: limits.HealthTCP, IntervalMs: 1000, TimeoutMs: 100, Rise: 1, Fall: 1}}
	built, err := build(0, l)
	if err != nil {
		t.Fatal(err)
	}
	built.Adopt(nil)
	be := built.Backends[0]
	be.Metrics = j.Metrics.ForBackend("web", "h1")
	emfile := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", unix.EMFILE)}
	for range 3 {
		j.checked(be, emfile)
	}
	if !be.State.Up.Load() {
		t.Error("the backend is down after checks that could not run")
	}
	if n := testutil.ToFloat64(j.Metrics.LocalErrors.WithLabelValues("web", OpCheck, "EMFILE")); n != 3 {
		t.Errorf("%s{op=check} = %v, want 3", MetricLocalErrors, n)
	}
	j.checked(be, errors.New("connection refused"))
	if be.State.Up.Load() {
		t.Error("a check that failed for the backend's fault did not take it down")
	}
}
