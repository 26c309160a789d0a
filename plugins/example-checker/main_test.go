package main

import (
	"context"
	"errors"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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

// forbiddenModules must not be in the example's module graph: keep-vip's
// own module (the SDK is a module of its own) and the libraries only the
// built-in plugins and packaging use.
var forbiddenModules = []string{
	"github.com/keep-vip/keep-vip ",
	"github.com/hashicorp/raft",
	"go.etcd.io/bbolt",
	"github.com/boltdb/bolt",
	"github.com/vishvananda/netlink",
	"github.com/mdlayher/",
	"github.com/goreleaser/nfpm",
	"github.com/knadh/koanf",
}

// copyOutside copies the example into a module of its own, as a third
// party would have it: module example.com/file-checker, its go.mod and
// go.sum as they are here, with the SDK replaced by this tree's rpc/ (the
// absolute path: the copy is elsewhere). It returns the copy's directory
// and the go command to run in it, offline and outside any workspace.
func copyOutside(t *testing.T) (string, func(args ...string) ([]byte, error)) {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build the plugin with")
	}
	sdk, err := filepath.Abs(filepath.Join("..", "..", "rpc"))
	if err != nil {
		t.Fatal(err)
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
	const ownModule = "github.com/keep-vip/keep-vip/plugins/example-checker"
	copyFile("main.go", filepath.Join(src, "main.go"), ownModule, "example.com/file-checker")
	copyFile(filepath.Join("filecheck", "filecheck.go"), filepath.Join(src, "filecheck", "filecheck.go"))
	copyFile("go.mod", filepath.Join(src, "go.mod"), ownModule, "example.com/file-checker", "=> ../../rpc", "=> "+sdk)
	copyFile("go.sum", filepath.Join(src, "go.sum"))
	return src, func(args ...string) ([]byte, error) {
		cmd := exec.Command(goBin, args...)
		cmd.Dir = src
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off")
		return cmd.CombinedOutput()
	}
}

// buildOutside builds the example from copyOutside's module: with the SDK
// module alone.
func buildOutside(t *testing.T) string {
	t.Helper()
	_, goCmd := copyOutside(t)
	bin := filepath.Join(t.TempDir(), "file-checker")
	if out, err := goCmd("build", "-o", bin, "."); err != nil {
		t.Fatalf("go build as module example.com/file-checker: %v\n%s", err, out)
	}
	return bin
}

// TestModuleGraphIsTheSDK: a checker built on the SDK pulls in the SDK's
// requirements (gRPC, protobuf, go-plugin, Prometheus), not keep-vip's.
func TestModuleGraphIsTheSDK(t *testing.T) {
	_, goCmd := copyOutside(t)
	out, err := goCmd("list", "-m", "all")
	if err != nil {
		t.Fatalf("go list -m all: %v\n%s", err, out)
	}
	mods := strings.Split(strings.TrimSpace(string(out)), "\n")
	for _, m := range mods {
		for _, bad := range forbiddenModules {
			if strings.HasPrefix(m+" ", bad) {
				t.Errorf("module graph has %s", m)
			}
		}
	}
	if !slices.ContainsFunc(mods, func(m string) bool { return strings.HasPrefix(m, "github.com/keep-vip/keep-vip/rpc ") }) {
		t.Errorf("module graph lacks the SDK: %v", mods)
	}
	t.Logf("%d modules in the graph", len(mods))
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
