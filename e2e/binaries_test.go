package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	binDirEnv         = "KEEPVIP_BIN_DIR"
	builtBinDirPrefix = "keep-vip-e2e-bin-"
	supervisorName    = "keep-vip-supervisor"
)

// pluginNames are the plugin binaries the supervisor starts, in the order
// TestKillEachPluginOnLeader kills them.
var pluginNames = []string{"keep-vip-checker", "keep-vip-announcer", "keep-vip-balancer", "keep-vip-elector"}

// Binaries is the directory holding the supervisor and its four plugins.
type Binaries struct {
	Dir string
}

// Supervisor is the supervisor binary's path.
func (b Binaries) Supervisor() string { return filepath.Join(b.Dir, supervisorName) }

var (
	buildOnce     sync.Once
	builtBinaries Binaries
	buildErr      error
	buildTempDir  string
)

// binariesForTest returns KEEPVIP_BIN_DIR when set, else the binaries built
// from this module, once per test binary run.
func binariesForTest(t *testing.T) Binaries {
	t.Helper()
	if dir := os.Getenv(binDirEnv); dir != "" {
		// Resolved, so it compares with /proc/PID/exe targets.
		resolved, err := filepath.EvalSymlinks(dir)
		if err == nil {
			dir, err = filepath.Abs(resolved)
		}
		if err != nil {
			t.Fatalf("%s=%s: %v", binDirEnv, dir, err)
		}
		b := Binaries{Dir: dir}
		for _, name := range append([]string{supervisorName}, pluginNames...) {
			if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
				t.Fatalf("%s=%s: %v", binDirEnv, dir, err)
			}
		}
		return b
	}
	buildOnce.Do(func() {
		start := time.Now()
		builtBinaries, buildErr = buildBinaries()
		if buildErr == nil {
			t.Logf("built keep-vip binaries into %s in %s", builtBinaries.Dir, time.Since(start).Round(time.Millisecond))
		}
	})
	if buildErr != nil {
		t.Fatalf("build keep-vip binaries: %v", buildErr)
	}
	return builtBinaries
}

func buildBinaries() (Binaries, error) {
	root, err := moduleRoot()
	if err != nil {
		return Binaries{}, err
	}
	// The pid in the name lets reapStaleRuns remove the directory of a run
	// that was killed before removeBuiltBinaries.
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", builtBinDirPrefix, os.Getpid()))
	if err != nil {
		return Binaries{}, err
	}
	if resolved, err := filepath.EvalSymlinks(dir); err == nil {
		dir = resolved
	}
	buildTempDir = dir
	// Package directory -> binary name, as the supervisor looks them up
	// next to its own binary.
	targets := [][2]string{{"./supervisor/cmd/keep-vip-supervisor", supervisorName}}
	for _, name := range pluginNames {
		targets = append(targets, [2]string{"./plugins/" + strings.TrimPrefix(name, "keep-vip-"), name})
	}
	// One go build per binary, sharing the build cache; bounded in time so a
	// wedged build cannot eat the whole test timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	for _, tg := range targets {
		cmd := exec.CommandContext(ctx, goCommand(), "build", "-o", filepath.Join(dir, tg[1]), tg[0])
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			return Binaries{}, fmt.Errorf("go build %s (in %s): %w\n%s", tg[0], root, err, tail(string(out), 4000))
		}
	}
	return Binaries{Dir: dir}, nil
}

// moduleRoot is the directory of this module's go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command(goCommand(), "env", "GOMOD").Output()
	if gomod := strings.TrimSpace(string(out)); err == nil && gomod != "" && gomod != os.DevNull {
		return filepath.Dir(gomod), nil
	}
	// go test runs in the package directory, one below the root.
	abs, aerr := filepath.Abs("..")
	if aerr != nil {
		return "", aerr
	}
	if _, serr := os.Stat(filepath.Join(abs, "go.mod")); serr != nil {
		return "", fmt.Errorf("find module root: go env GOMOD: %v; ../go.mod: %w", err, serr)
	}
	return abs, nil
}

func goCommand() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	// go test puts GOROOT/bin first in PATH; this covers being run by hand.
	if goroot := os.Getenv("GOROOT"); goroot != "" {
		return filepath.Join(goroot, "bin", "go")
	}
	return "go"
}

// reapStaleBinaries removes binary directories of test processes that are
// gone.
func reapStaleBinaries() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), builtBinDirPrefix+"*"))
	for _, dir := range dirs {
		rest := strings.TrimPrefix(filepath.Base(dir), builtBinDirPrefix)
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() || isTestProcess(pid) {
			continue
		}
		_ = os.RemoveAll(dir)
	}
}

func removeBuiltBinaries() {
	if buildTempDir != "" {
		_ = os.RemoveAll(buildTempDir)
	}
}

// tail is the last n bytes of s, cut at a line start.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return "...\n" + s
}
