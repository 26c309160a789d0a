package supervisor

import (
	"os/exec"
	"testing"
	"time"
)

// The watch fires when the process ends, not before, and leaves the
// process to its parent to reap; release ends a watch whose process lives.
func TestWatchExit(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	exited, release, err := watchExit(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	select {
	case <-exited:
		t.Fatal("exit reported while the process runs")
	case <-time.After(100 * time.Millisecond):
	}
	start := time.Now()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		t.Logf("exit seen after %s", time.Since(start))
	case <-time.After(5 * time.Second):
		t.Fatal("exit not reported within 5s")
	}
	// Still ours to reap: the watch must not have waited for it.
	if err := cmd.Wait(); err == nil || cmd.ProcessState == nil {
		t.Fatalf("wait after the watch: %v", err)
	}

	live := exec.Command("sleep", "30")
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = live.Process.Kill(); _ = live.Wait() })
	exited, release2, err := watchExit(live.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	release2()
	select {
	case <-exited:
		t.Fatal("a released watch reported an exit")
	case <-time.After(100 * time.Millisecond):
	}

	if _, _, err := watchExit(0); err == nil {
		t.Error("watch of pid 0: no error")
	}
}
