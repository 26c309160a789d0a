package filecheck

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

const waitFor = 3 * time.Second

func fileCheck(name, path string) *pb.Check {
	return &pb.Check{Name: name, Protocol: Protocol, Address: path, TimeoutMs: 20}
}

func notRequired(c *pb.Check) *pb.Check { c.NotRequired = true; return c }

func with(c *pb.Check, f func(*pb.Check)) *pb.Check { f(c); return c }

func TestRound(t *testing.T) {
	dir := t.TempDir()
	present := filepath.Join(dir, "present")
	if err := os.WriteFile(present, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")

	tests := []struct {
		name        string
		checks      []*pb.Check
		wantHealthy bool
		wantErrs    []string // per check; "" means healthy
	}{
		{"no checks", nil, true, nil},
		{"present", []*pb.Check{fileCheck("a", present)}, true, []string{""}},
		{"missing", []*pb.Check{fileCheck("a", missing)}, false, []string{"no such file"}},
		{"one missing", []*pb.Check{fileCheck("a", present), fileCheck("b", missing)}, false, []string{"", "no such file"}},
		{"directory counts", []*pb.Check{fileCheck("a", dir)}, true, []string{""}},
		{"missing but not required", []*pb.Check{fileCheck("a", present), notRequired(fileCheck("b", missing))}, true, []string{"", "no such file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := round(tt.checks)
			if h.Healthy != tt.wantHealthy || len(h.Checks) != len(tt.wantErrs) {
				t.Fatalf("verdict = %v, want healthy=%v with %d results", h, tt.wantHealthy, len(tt.wantErrs))
			}
			for i, want := range tt.wantErrs {
				r := h.Checks[i]
				if r.Name != tt.checks[i].Name || r.Address != tt.checks[i].Address {
					t.Errorf("result %d = %v, want check %q", i, r, tt.checks[i].Name)
				}
				if r.Healthy != (want == "") || !strings.Contains(r.Error, want) {
					t.Errorf("result %d = %v, want error containing %q", i, r, want)
				}
				if r.Required == tt.checks[i].NotRequired {
					t.Errorf("result %d = %v, want required %v", i, r, !tt.checks[i].NotRequired)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     *pb.CheckerConfig
		wantErr string // "" means valid
	}{
		{"valid", &pb.CheckerConfig{IntervalMs: 100, Checks: []*pb.Check{fileCheck("a", "/x")}}, ""},
		{"no interval", &pb.CheckerConfig{Checks: []*pb.Check{fileCheck("a", "/x")}}, "interval_ms 0"},
		{"tcp", &pb.CheckerConfig{IntervalMs: 100, Checks: []*pb.Check{{Name: "web", Protocol: "tcp", Address: "/x", TimeoutMs: 10}}},
			`check "web": protocol "tcp" is not supported`},
		{"no path", &pb.CheckerConfig{IntervalMs: 100, Checks: []*pb.Check{fileCheck("a", "")}}, `check "a": address`},
		{"timeout too long", &pb.CheckerConfig{IntervalMs: 20, Checks: []*pb.Check{fileCheck("a", "/x")}}, "timeout_ms 20"},
		{"no name", &pb.CheckerConfig{IntervalMs: 100, Checks: []*pb.Check{fileCheck("", "/x")}}, "no name"},
		{"twice", &pb.CheckerConfig{IntervalMs: 100, Checks: []*pb.Check{fileCheck("a", "/x"), fileCheck("a", "/y")}}, "twice"},
		{"same interval given", &pb.CheckerConfig{IntervalMs: 100, Checks: []*pb.Check{with(fileCheck("a", "/x"), func(c *pb.Check) { c.IntervalMs = 100; c.Rise, c.Fall = 1, 1 })}}, ""},
		{"own interval", &pb.CheckerConfig{IntervalMs: 100, Checks: []*pb.Check{with(fileCheck("a", "/x"), func(c *pb.Check) { c.IntervalMs = 200 })}}, "interval_ms 200 is not supported"},
		{"fall", &pb.CheckerConfig{IntervalMs: 100, Checks: []*pb.Check{with(fileCheck("a", "/x"), func(c *pb.Check) { c.Fall = 3 })}}, "fall 3 are not supported"},
		{"http settings", &pb.CheckerConfig{IntervalMs: 100, Checks: []*pb.Check{with(fileCheck("a", "/x"), func(c *pb.Check) { c.Http = &pb.HTTPCheck{} })}}, "no settings besides"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := validate(tt.cfg)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("validate = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("validate = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestWatch drives the whole Checker: the file appears, disappears, and the
// watcher sees each verdict; Close ends the watch.
func TestWatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "up")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	c := New()
	t.Cleanup(func() { c.Close() })
	if err := c.Configure(context.Background(), &pb.CheckerConfig{IntervalMs: 30, Checks: []*pb.Check{fileCheck("flag", path)}}); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	var seen []bool
	done := make(chan error, 1)
	go func() {
		done <- c.Watch(ctx, func(h *pb.Health) error {
			if len(seen) == 0 || seen[len(seen)-1] != h.Healthy {
				seen = append(seen, h.Healthy)
				if h.Healthy {
					os.Remove(path) // the next rounds see it gone
				} else {
					c.Close()
				}
			}
			return nil
		})
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Watch = %v, want ErrClosed", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Watch did not end")
	}
	if len(seen) != 2 || !seen[0] || seen[1] {
		t.Errorf("verdicts = %v, want healthy then unhealthy", seen)
	}
	st, _ := c.Status(context.Background())
	if st.State != "unhealthy" || !strings.Contains(st.Details["check flag"], "no such file") {
		t.Errorf("status = %v", st)
	}
	fams, err := c.Gather()
	if err != nil || len(fams) != 1 || fams[0].GetName() != metricUp || fams[0].GetMetric()[0].GetGauge().GetValue() != 0 {
		t.Errorf("Gather = %v, %v; want %s{check=flag} 0", fams, err, metricUp)
	}
	if err := c.Configure(context.Background(), &pb.CheckerConfig{IntervalMs: 30}); !errors.Is(err, ErrClosed) {
		t.Errorf("Configure after Close = %v, want ErrClosed", err)
	}
}
