// Package checkerpython_test runs the Python example checker as the
// supervisor does: go-plugin with AutoMTLS, Configure, Watch, and a stop by
// go-plugin's Shutdown that must not end in SIGKILL.
package checkerpython_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	dto "github.com/prometheus/client_model/go"

	"github.com/keep-vip/keep-vip/rpc"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// build runs build.sh into a temporary directory and returns the script,
// skipping when this machine lacks what the checker needs (make deps
// installs it).
func build(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("protoc"); err != nil {
		t.Skip("protoc not installed (make deps)")
	}
	if err := exec.Command("/usr/bin/python3", "-c", "import grpc, google.protobuf, cryptography").Run(); err != nil {
		t.Skip("python3-grpcio, python3-protobuf or python3-cryptography not installed (make deps)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("./build.sh", dir).CombinedOutput(); err != nil {
		t.Fatalf("build.sh: %v\n%s", err, out)
	}
	return filepath.Join(dir, "checker.py")
}

func TestPythonCheckerOverGRPC(t *testing.T) {
	script := build(t)
	dir := t.TempDir()
	flag := filepath.Join(dir, "up")
	if err := os.WriteFile(flag, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	stderr := &lockedWriter{}
	cmd := exec.Command(script)
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  rpc.Handshake,
		Plugins:          rpc.PluginMap,
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		Logger:           hclog.NewNullLogger(),
		Stderr:           stderr,
		StartTimeout:     20 * time.Second,
	})
	t.Cleanup(client.Kill)
	proto, err := client.Client()
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	raw, err := proto.Dispense(rpc.KindChecker)
	if err != nil {
		t.Fatal(err)
	}
	ck := raw.(rpc.Checker)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Its own validation: a type it does not know is refused, by name.
	err = ck.Configure(ctx, &pb.CheckerConfig{IntervalMs: 100, Checks: []*pb.Check{{Name: "web", Protocol: "tcp", Address: "127.0.0.1:80", TimeoutMs: 50}}})
	if err == nil || !strings.Contains(err.Error(), `check "web"`) || !strings.Contains(err.Error(), "tcp") {
		t.Fatalf("configure with a tcp check: %v, want a refusal naming the check and its type", err)
	}

	cfg := &pb.CheckerConfig{IntervalMs: 100, Checks: []*pb.Check{
		{Name: "in_service", Protocol: "file", Address: flag, TimeoutMs: 50, Rise: 1, Fall: 2},
		{Name: "optional", Protocol: "file", Address: filepath.Join(dir, "never"), TimeoutMs: 50, NotRequired: true},
	}}
	if err := ck.Configure(ctx, cfg); err != nil {
		t.Fatalf("configure: %v", err)
	}
	verdicts := make(chan *pb.Health, 64)
	go func() {
		_ = ck.Watch(ctx, func(h *pb.Health) error {
			select {
			case verdicts <- h:
			default:
			}
			return nil
		})
	}()
	wait := func(want bool) *pb.Health {
		t.Helper()
		for {
			select {
			case h := <-verdicts:
				if h.GetHealthy() == want {
					return h
				}
			case <-ctx.Done():
				t.Fatalf("no verdict healthy=%v; stderr:\n%s", want, stderr.String())
			}
		}
	}
	h := wait(true)
	if len(h.GetChecks()) != 2 || !h.GetChecks()[0].GetHealthy() || h.GetChecks()[1].GetHealthy() || h.GetChecks()[1].GetRequired() {
		t.Fatalf("first healthy verdict %v: want in_service up (required), optional down (not required)", h)
	}
	if got := checkUp(t, ck); len(got) != 2 || got["in_service"] != 1 || got["optional"] != 0 {
		t.Errorf("filecheck_check_up by check = %v, want in_service 1 and optional 0", got)
	}
	removed := time.Now()
	if err := os.Remove(flag); err != nil {
		t.Fatal(err)
	}
	h = wait(false)
	t.Logf("unhealthy %s after the file went (fall 2, interval 100ms)", time.Since(removed).Round(time.Millisecond))
	if h.GetChecks()[0].GetError() == "" {
		t.Errorf("failing check without an error: %v", h.GetChecks()[0])
	}
	st, err := ck.Status(ctx)
	if err != nil || st.GetState() != "unhealthy" {
		t.Errorf("status %v, %v: want state unhealthy", st, err)
	}
	// Its metric families, encoded by hand in Python, decode as the
	// supervisor decodes them: both checks down now (in_service was up).
	if got := checkUp(t, ck); len(got) != 2 || got["in_service"] != 0 || got["optional"] != 0 {
		t.Errorf("filecheck_check_up by check = %v, want in_service 0 and optional 0", got)
	}

	// Stop as the supervisor does: Shutdown, then SIGKILL after 2 s.
	start := time.Now()
	client.Kill()
	took := time.Since(start)
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || ws.Signaled() || ws.ExitStatus() != 0 {
		t.Fatalf("after Kill: %s (took %s), want exit status 0 by Shutdown; stderr:\n%s", cmd.ProcessState, took, stderr.String())
	}
	if !strings.Contains(stderr.String(), `"shutdown requested"`) {
		t.Errorf("no shutdown logged; stderr:\n%s", stderr.String())
	}
	t.Logf("stopped by Shutdown in %s: %s", took.Round(time.Millisecond), cmd.ProcessState)
}

// lockedWriter collects go-plugin's copy of the plugin's stderr, written
// from its own goroutine.
type lockedWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// checkUp is the checker's filecheck_check_up gauge by check, from its
// Metrics RPC decoded as the supervisor decodes it.
func checkUp(t *testing.T, ck rpc.Checker) map[string]float64 {
	t.Helper()
	fams, err := ck.Gather()
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != "filecheck_check_up" || f.GetType() != dto.MetricType_GAUGE {
			t.Errorf("unexpected family %v", f)
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "check" {
					got[l.GetValue()] = m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Logf("metrics from Python: filecheck_check_up %v", got)
	return got
}
