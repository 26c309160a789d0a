package supervisor

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// pluginLibraries are the plugin implementations and the system libraries
// only they should link: the supervisor reaches them over the plugin
// contract (rpc/) alone.
var pluginLibraries = []string{
	"github.com/keep-vip/keep-vip/elector",
	"github.com/keep-vip/keep-vip/announcer",
	"github.com/keep-vip/keep-vip/checker",
	"github.com/keep-vip/keep-vip/balancer",
	"github.com/hashicorp/raft",
	"github.com/hashicorp/raft-boltdb/v2",
	"go.etcd.io/bbolt",
	"github.com/vishvananda/netlink",
}

// knownLeaks are the imports still to be moved behind the contract, by
// package; the list may only shrink. A new import of a plugin library
// anywhere under supervisor/ fails.
var knownLeaks = map[string][]string{
	// Checks for the built-in checker are checked with its Validate.
	"github.com/keep-vip/keep-vip/supervisor/config": {"github.com/keep-vip/keep-vip/checker"},
}

func TestNoPluginLibraryImports(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	out, err := exec.Command(goBin, "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "github.com/keep-vip/keep-vip/supervisor/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	seen := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		pkg := fields[0]
		for _, imp := range fields[1:] {
			if !slices.Contains(pluginLibraries, imp) {
				continue
			}
			seen[pkg] = append(seen[pkg], imp)
			if !slices.Contains(knownLeaks[pkg], imp) {
				t.Errorf("%s imports %s: reach the plugin over rpc/ instead", pkg, imp)
			}
		}
	}
	for pkg, imps := range knownLeaks {
		for _, imp := range imps {
			if !slices.Contains(seen[pkg], imp) {
				t.Errorf("%s no longer imports %s: take it off knownLeaks", pkg, imp)
			}
		}
	}
}
