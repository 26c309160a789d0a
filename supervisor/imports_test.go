package supervisor

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// pluginLibraries are the plugin implementations and the system libraries
// only they should link: the supervisor reaches them over the plugin
// contract (rpc/) alone, so its binary holds no Raft, bbolt, netlink,
// ARP/NDP or proxy code.
var pluginLibraries = []string{
	"github.com/keep-vip/keep-vip/elector",
	"github.com/keep-vip/keep-vip/announcer",
	"github.com/keep-vip/keep-vip/checker",
	"github.com/keep-vip/keep-vip/balancer",
	"github.com/hashicorp/raft",
	"github.com/hashicorp/raft-boltdb/v2",
	"go.etcd.io/bbolt",
	"github.com/vishvananda/netlink",
	"github.com/mdlayher/arp",
	"github.com/mdlayher/ndp",
}

// isPluginLibrary tells whether pkg is one of pluginLibraries or below one.
func isPluginLibrary(pkg string) bool {
	return slices.ContainsFunc(pluginLibraries, func(lib string) bool {
		return pkg == lib || strings.HasPrefix(pkg, lib+"/")
	})
}

// TestNoPluginLibraryImports: no package under supervisor/ imports a plugin
// library, and nothing the supervisor's command links does, even through
// another package.
func TestNoPluginLibraryImports(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	out, err := exec.Command(goBin, "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "github.com/keep-vip/keep-vip/supervisor/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		for _, imp := range fields[min(1, len(fields)):] {
			if isPluginLibrary(imp) {
				t.Errorf("%s imports %s: reach the plugin over rpc/ instead", fields[0], imp)
			}
		}
	}
	deps, err := exec.Command(goBin, "list", "-deps", "github.com/keep-vip/keep-vip/supervisor/cmd/keep-vip-supervisor").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(deps)) {
		if isPluginLibrary(dep) {
			t.Errorf("keep-vip-supervisor links %s", dep)
		}
	}
}
