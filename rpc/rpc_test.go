package rpc

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/go-plugin"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// stubChecker is the smallest Checker: one verdict, then the stream ends.
type stubChecker struct {
	reg *prometheus.Registry
	got *pb.CheckerConfig
}

func (s *stubChecker) Status(context.Context) (*pb.PluginStatus, error) {
	return &pb.PluginStatus{State: "healthy", Details: map[string]string{"checks": "1"}}, nil
}
func (s *stubChecker) Gather() ([]*dto.MetricFamily, error) { return s.reg.Gather() }
func (s *stubChecker) Configure(_ context.Context, c *pb.CheckerConfig) error {
	if c.IntervalMs <= 0 {
		return errors.New("interval_ms: must be above 0")
	}
	s.got = c
	return nil
}
func (s *stubChecker) Watch(_ context.Context, send func(*pb.Health) error) error {
	return send(&pb.Health{Healthy: true, Checks: []*pb.CheckResult{{Name: "web", Healthy: true}}})
}

// The adapters carry every call, its errors and the metric families across
// a real gRPC connection.
func TestCheckerRoundTrip(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "keep_vip_test_up", Help: "test"})
	g.Set(1)
	reg.MustRegister(g)
	impl := &stubChecker{reg: reg}
	client, server := plugin.TestPluginGRPCConn(t, false, map[string]plugin.Plugin{KindChecker: &CheckerPlugin{Impl: impl}})
	defer client.Close()
	defer server.Stop()
	raw, err := client.Dispense(KindChecker)
	if err != nil {
		t.Fatal(err)
	}
	c := raw.(Checker)
	ctx := context.Background()

	if err := c.Configure(ctx, &pb.CheckerConfig{IntervalMs: 1000}); err != nil || impl.got.IntervalMs != 1000 {
		t.Fatalf("configure: %v, got %v", err, impl.got)
	}
	if err := c.Configure(ctx, &pb.CheckerConfig{}); err == nil || !strings.Contains(err.Error(), "interval_ms") {
		t.Fatalf("configure error not carried: %v", err)
	}
	var verdicts []*pb.Health
	err = c.Watch(ctx, func(h *pb.Health) error { verdicts = append(verdicts, h); return nil })
	if !errors.Is(err, ErrStreamEnded) || len(verdicts) != 1 || !verdicts[0].Healthy {
		t.Fatalf("watch: err %v, verdicts %v", err, verdicts)
	}
	st, err := c.Status(ctx)
	if err != nil || st.State != "healthy" || st.Details["checks"] != "1" {
		t.Fatalf("status %v %v", st, err)
	}
	fams, err := c.Gather()
	if err != nil || len(fams) != 1 || fams[0].GetName() != "keep_vip_test_up" || fams[0].Metric[0].GetGauge().GetValue() != 1 {
		t.Fatalf("gather %v %v", fams, err)
	}
}
