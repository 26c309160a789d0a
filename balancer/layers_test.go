package balancer

import (
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// balancerLayers are the balancer's packages by layer, the lowest first,
// relative to this one. A package imports only packages of lower layers,
// even through another package: the I/O engine, the HTTP/1 wire format and
// the PROXY header know nothing of balancing, the policy nothing of
// sockets, and the handlers nothing of the public API.
var balancerLayers = [][]string{
	{"internal/reactor", "internal/httpwire", "internal/proxyheader"},
	{"internal/policy"},
	{"internal/proxy"},
	{"."},
}

const balancerPath = "github.com/keep-vip/keep-vip/balancer"

func layerPath(rel string) string {
	if rel == "." {
		return balancerPath
	}
	return balancerPath + "/" + rel
}

// TestLayers: every package under balancer/ is in a layer, and none
// depends on a package of its own layer or a higher one.
func TestLayers(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	layerOf := map[string]int{}
	for i, layer := range balancerLayers {
		for _, rel := range layer {
			layerOf[layerPath(rel)] = i
		}
	}
	out, err := goList(goBin, balancerPath+"/...")
	if err != nil {
		t.Fatal(err)
	}
	pkgs := strings.Fields(out)
	for _, pkg := range pkgs {
		if _, ok := layerOf[pkg]; !ok {
			t.Errorf("%s is in no layer: add it to balancerLayers", pkg)
		}
	}
	for pkg, i := range layerOf {
		if !slices.Contains(pkgs, pkg) {
			t.Errorf("balancerLayers names %s, which does not exist", pkg)
			continue
		}
		deps, err := goList(goBin, "-deps", pkg)
		if err != nil {
			t.Fatal(err)
		}
		for _, dep := range strings.Fields(deps) {
			if j, ok := layerOf[dep]; ok && dep != pkg && j >= i {
				t.Errorf("%s (layer %d) depends on %s (layer %d): a package imports only lower layers", pkg, i, dep, j)
			}
		}
	}
}

// goList runs go list with args, and says why when it fails.
func goList(goBin string, args ...string) (string, error) {
	out, err := exec.Command(goBin, append([]string{"list"}, args...)...).Output()
	if ee, ok := err.(*exec.ExitError); ok {
		return "", fmt.Errorf("go list %s: %v: %s", strings.Join(args, " "), err, ee.Stderr)
	}
	if err != nil {
		return "", fmt.Errorf("go list %s: %v", strings.Join(args, " "), err)
	}
	return string(out), nil
}
