package e2e

import (
	"fmt"
	"os"
	"testing"

	"github.com/keep-vip/keep-vip/supervisor"
)

// TestMain turns the test binary into one of the small helper programs the
// harness runs inside namespaces (see helper_test.go) when helperModeEnv is
// set; otherwise it runs the tests and removes the binaries it built.
func TestMain(m *testing.M) {
	if mode := os.Getenv(helperModeEnv); mode != "" {
		os.Exit(runHelper(mode, os.Args[1:]))
	}
	// The supervisors run at normal priority unless a test asks (the
	// busy-host bench does; KEEP_VIP_PRIORITY=realtime in the environment
	// runs any test at the product's default): go test runs other packages
	// beside this one, and realtime supervisors would take the CPU from
	// their in-process timing tests. The realtime path is checked under
	// systemd (packaging) and measured by the busy-host bench.
	if os.Getenv(supervisor.PriorityEnv) == "" {
		_ = os.Setenv(supervisor.PriorityEnv, "normal")
	}
	if os.Geteuid() == 0 {
		if err := reapStaleRuns(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: reaping leftovers of earlier runs: %v\n", err)
		}
		reapStaleBinaries()
	}
	code := m.Run()
	removeBuiltBinaries()
	os.Exit(code)
}

// requireRoot skips a test that needs namespaces when it does not run as root.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("e2e tests need root (network namespaces, veths, bridges)")
	}
}
