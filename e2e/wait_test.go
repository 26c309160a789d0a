package e2e

import (
	"testing"
	"time"
)

const (
	pollInterval = 50 * time.Millisecond
	// cleanupReserve is kept free before the test deadline so cleanups
	// (stopping supervisors, deleting namespaces) still get to run.
	cleanupReserve = 45 * time.Second
)

// waitFor polls cond every pollInterval until it reports done or timeout
// passes (cut short so the test deadline leaves room for cleanup). It
// returns how long it took, whether cond was met, and cond's last detail,
// which says what was still missing.
func waitFor(t *testing.T, timeout time.Duration, cond func() (done bool, detail string)) (time.Duration, bool, string) {
	t.Helper()
	if dl, ok := t.Deadline(); ok {
		if left := time.Until(dl) - cleanupReserve; left < timeout {
			timeout = max(left, time.Second)
		}
	}
	start := time.Now()
	var detail string
	maxPolls := int(timeout/pollInterval) + 2
	for range maxPolls {
		var done bool
		done, detail = cond()
		if done {
			return time.Since(start), true, detail
		}
		if time.Since(start) >= timeout {
			break
		}
		time.Sleep(pollInterval)
	}
	return time.Since(start), false, detail
}

// mustWaitFor is waitFor that fails the test (now) on timeout.
func mustWaitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	took, ok, detail := waitFor(t, timeout, cond)
	if !ok {
		t.Fatalf("timed out after %s waiting for %s: %s", took.Round(time.Millisecond), what, detail)
	}
	return took
}
