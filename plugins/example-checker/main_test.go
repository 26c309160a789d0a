package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/keep-vip/keep-vip/rpc"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// allowedImports is all a third-party checker needs besides the standard
// library: the SDK, its messages, and Prometheus for its metrics.
var allowedImports = map[string]bool{
	"github.com/keep-vip/keep-vip/rpc":                               true,
	"github.com/keep-vip/keep-vip/rpc/keepvip/v1":                    true,
	"github.com/prometheus/client_golang/prometheus":                 true,
	"github.com/keep-vip/keep-vip/plugins/example-checker/filecheck": true, // its own package
}

// TestImportsOnlyTheSDK keeps the example honest: nothing of keep-vip but
// the SDK, so it can be copied out of this repository as it is.
func TestImportsOnlyTheSDK(t *testing.T) {
	for _, dir := range []string{".", "filecheck"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			parsed, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range parsed.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				first, _, _ := strings.Cut(path, "/")
				if strings.Contains(first, ".") && !allowedImports[path] {
					t.Errorf("%s imports %s; a third-party checker has only the SDK (rpc, pb) and Prometheus", f, path)
				}
			}
		}
	}
}

// buildOutside copies the example into a module of its own, as a third
// party would have it (module example.com/file-checker, requiring keep-vip
// for the SDK), and builds it there. The build is offline: the requirements
// come from keep-vip's go.mod and the module cache. They are all listed in
// the example's go.mod, as `go mod tidy` would list them: with keep-vip's
// alone, the go command would walk the whole module graph, and with it the
// go.mod of versions no build here needed (so never in the cache).
func buildOutside(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build the plugin with")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	edit := exec.Command(goBin, "mod", "edit", "-json")
	edit.Dir = root
	out, err := edit.Output()
	if err != nil {
		t.Fatalf("go mod edit -json in %s: %v", root, err)
	}
	var goMod struct {
		Go      string
		Require []struct{ Path, Version string }
	}
	if err := json.Unmarshal(out, &goMod); err != nil {
		t.Fatalf("go mod edit -json: %v", err)
	}
	src := t.TempDir()
	copyFile := func(from, to string, replace ...string) {
		t.Helper()
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, []byte(strings.NewReplacer(replace...).Replace(string(b))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const ownPath = "github.com/keep-vip/keep-vip/plugins/example-checker/filecheck"
	copyFile("main.go", filepath.Join(src, "main.go"), ownPath, "example.com/file-checker/filecheck")
	copyFile(filepath.Join("filecheck", "filecheck.go"), filepath.Join(src, "filecheck", "filecheck.go"))
	copyFile(filepath.Join(root, "go.sum"), filepath.Join(src, "go.sum"))
	var mod strings.Builder
	fmt.Fprintf(&mod, "module example.com/file-checker\n\ngo %s\n\nrequire github.com/keep-vip/keep-vip v0.0.0\n\n", goMod.Go)
	for _, r := range goMod.Require {
		fmt.Fprintf(&mod, "require %s %s\n", r.Path, r.Version)
	}
	fmt.Fprintf(&mod, "\nreplace github.com/keep-vip/keep-vip => %s\n", root)
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte(mod.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "file-checker")
	cmd := exec.Command(goBin, "build", "-o", bin, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build as module example.com/file-checker: %v\n%s", err, out)
	}
	return bin
}

// TestPluginOverGRPC builds this command outside this module and talks to
// it as the supervisor does: go-plugin handshake, then Configure and Watch
// over gRPC.
func TestPluginOverGRPC(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the plugin binary")
	}
	bin := buildOutside(t)
	dir := t.TempDir()
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
