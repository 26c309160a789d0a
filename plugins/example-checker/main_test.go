package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/keep-vip/keep-vip/rpc"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// TestPluginOverGRPC builds this command and talks to it as the supervisor
// does: go-plugin handshake, then Configure and Watch over gRPC.
func TestPluginOverGRPC(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the plugin binary")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build the plugin with")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "example-checker")
	if out, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	flag := filepath.Join(dir, "up")
	if err := os.WriteFile(flag, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  rpc.Handshake,
		Plugins:          rpc.PluginMap,
		Cmd:              exec.Command(bin),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           hclog.NewNullLogger(),
		StartTimeout:     5 * time.Second,
	})
	t.Cleanup(client.Kill)
	conn, err := client.Client()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := conn.Dispense(rpc.KindChecker)
	if err != nil {
		t.Fatal(err)
	}
	c := raw.(rpc.Checker)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cfg := &pb.CheckerConfig{IntervalMs: 50, Checks: []*pb.Check{{Name: "flag", Protocol: "file", Address: flag, TimeoutMs: 20}}}
	if err := c.Configure(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	errGot := errors.New("got a verdict")
	var got *pb.Health
	err = c.Watch(ctx, func(h *pb.Health) error { got = h; return errGot })
	if !errors.Is(err, errGot) {
		t.Fatalf("Watch = %v", err)
	}
	if !got.Healthy || len(got.Checks) != 1 || got.Checks[0].Name != "flag" {
		t.Errorf("verdict = %v, want flag healthy", got)
	}
	st, err := c.Status(ctx)
	if err != nil || st.State != "healthy" {
		t.Errorf("Status = %v, %v", st, err)
	}
	if _, err := c.Gather(); err != nil {
		t.Errorf("Gather: %v", err)
	}
	// The supervisor names the check type; this checker refuses others.
	cfg.Checks[0].Protocol = "tcp"
	if err := c.Configure(ctx, cfg); err == nil {
		t.Error("Configure with a tcp check succeeded")
	}
}
