package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

const (
	netnsRunDir = "/run/netns"
	// runMarkerDir holds one file per live run, named by its suffix and
	// holding its pid, so a later run can remove what a killed one left.
	runMarkerDir = "/run/keep-vip-e2e"
	namePrefix   = "kv"
	nodeIfName   = "eth0"
)

// Net is one run's private network: a bridge in a namespace of its own, and
// node and client namespaces each joined to it by a veth whose inside end is
// eth0. Everything lives in 198.18.X.0/24 with X random per run; nothing is
// created in, or routed from, the root namespace.
type Net struct {
	t        *testing.T
	Suffix   string // random, in every namespace and link name of the run
	Subnet   int    // X in 198.18.X.0/24
	BridgeNS string
	NodeNS   []string // NodeNS[i-1] is node i's namespace
	ClientNS string
	created  []string // namespaces to delete, in creation order
}

// NewNet builds the network for nodes nodes plus one client; t.Cleanup
// tears it down, also when the test fails half-way.
func NewNet(t *testing.T, nodes int) *Net {
	t.Helper()
	if nodes < 1 || nodes > 9 {
		t.Fatalf("NewNet: %d nodes, want 1..9 (one digit in link names)", nodes)
	}
	n := &Net{t: t, Subnet: randomInt(256)}
	n.Suffix = claimRunSuffix(t)
	n.BridgeNS = n.name("br")
	for i := 1; i <= nodes; i++ {
		n.NodeNS = append(n.NodeNS, n.name(fmt.Sprintf("n%d", i)))
	}
	n.ClientNS = n.name("cl")
	t.Cleanup(n.destroy)

	bridge := n.name("br") // a link name in the bridge namespace, <= 15 chars
	n.addNamespace(n.BridgeNS)
	n.mustIP("-n", n.BridgeNS, "link", "add", bridge, "type", "bridge")
	n.mustIP("-n", n.BridgeNS, "link", "set", bridge, "up")
	for i, ns := range n.NodeNS {
		n.attach(ns, bridge, fmt.Sprintf("v%d", i+1), n.NodeIP(i+1))
	}
	n.attach(n.ClientNS, bridge, "vc", n.ClientIP())
	t.Logf("net: bridge ns %s, nodes %v, client %s, subnet 198.18.%d.0/24, VIP %s",
		n.BridgeNS, n.NodeNS, n.ClientNS, n.Subnet, n.VIP())
	return n
}

func (n *Net) name(what string) string { return namePrefix + n.Suffix + what }

// NodeIP is node i's (1-based) eth0 address.
func (n *Net) NodeIP(i int) string { return fmt.Sprintf("198.18.%d.%d", n.Subnet, 10+i) }

// ClientIP is the client namespace's eth0 address.
func (n *Net) ClientIP() string { return fmt.Sprintf("198.18.%d.2", n.Subnet) }

// VIP is the virtual IP the cluster is configured with.
func (n *Net) VIP() string { return fmt.Sprintf("198.18.%d.100", n.Subnet) }

func (n *Net) addNamespace(ns string) {
	n.t.Helper()
	n.mustIP("netns", "add", ns)
	n.created = append(n.created, ns)
	// IPv4 only: no link-local v6 chatter on the bridge.
	if _, err := n.Exec(ns, "sysctl", "-q", "-w",
		"net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"); err != nil {
		n.t.Logf("net: disable IPv6 in %s: %v", ns, err)
	}
	n.mustIP("-n", ns, "link", "set", "lo", "up")
}

// attach creates namespace ns with eth0 (holding addr/24) whose veth peer,
// kv<suffix><peerTag>, is a port of bridge in the bridge namespace. The veth
// is made in the bridge namespace with its eth0 end put straight into ns.
func (n *Net) attach(ns, bridge, peerTag, addr string) {
	n.t.Helper()
	n.addNamespace(ns)
	peer := n.name(peerTag)
	n.mustIP("-n", n.BridgeNS, "link", "add", peer, "type", "veth", "peer", "name", nodeIfName, "netns", ns)
	n.mustIP("-n", n.BridgeNS, "link", "set", peer, "master", bridge)
	n.mustIP("-n", n.BridgeNS, "link", "set", peer, "up")
	n.mustIP("-n", ns, "addr", "add", addr+"/24", "dev", nodeIfName)
	n.mustIP("-n", ns, "link", "set", nodeIfName, "up")
}

func (n *Net) mustIP(args ...string) {
	n.t.Helper()
	if out, err := runIP(args...); err != nil {
		n.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// Exec runs a command in namespace ns (ip netns exec), bounded to 20s.
func (n *Net) Exec(ns string, argv ...string) (string, error) {
	return runIP(append([]string{"netns", "exec", ns}, argv...)...)
}

func runIP(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after 20s: %w", err)
	}
	return strings.TrimSpace(string(out)), err
}

// Eth0Addrs reads the IPv4 addresses on eth0 in namespace ns.
func (n *Net) Eth0Addrs(ns string) ([]netip.Addr, error) {
	r, err := newEth0AddrReader([]string{ns})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return r.Read(0)
}

// destroy kills whatever still runs in the run's namespaces and deletes
// them, bridge last.
func (n *Net) destroy() {
	for i := len(n.created) - 1; i >= 0; i-- {
		ns := n.created[i]
		if err := killProcessesInNetns(ns, 5*time.Second); err != nil {
			n.t.Errorf("net cleanup: %v", err)
		}
		if out, err := runIP("netns", "del", ns); err != nil {
			n.t.Errorf("net cleanup: ip netns del %s: %v: %s", ns, err, out)
		}
	}
	_ = os.Remove(filepath.Join(runMarkerDir, n.Suffix))
	leftovers, _ := filepath.Glob(filepath.Join(netnsRunDir, namePrefix+n.Suffix+"*"))
	if len(leftovers) > 0 {
		n.t.Errorf("net cleanup: namespaces left behind: %v", leftovers)
	}
}

// killProcessesInNetns SIGKILLs every process inside ns and waits (bounded)
// for them to go.
func killProcessesInNetns(ns string, wait time.Duration) error {
	procs, err := processesInNetns(ns)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, p := range procs {
		_ = syscall.Kill(p.PID, syscall.SIGKILL)
	}
	deadline := time.Now().Add(wait)
	for range 1000 {
		left, err := processesInNetns(ns)
		if err != nil || len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes still in %s after SIGKILL and %s: %s", ns, wait, describeProcesses(left))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// claimRunSuffix picks a random suffix no namespace or live run uses and
// writes the run marker for it.
func claimRunSuffix(t *testing.T) string {
	t.Helper()
	if err := os.MkdirAll(runMarkerDir, 0o755); err != nil {
		t.Fatalf("create %s: %v", runMarkerDir, err)
	}
	for range 50 {
		b := make([]byte, 2)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		s := hex.EncodeToString(b)
		if used, _ := filepath.Glob(filepath.Join(netnsRunDir, namePrefix+s+"*")); len(used) > 0 {
			continue
		}
		f, err := os.OpenFile(filepath.Join(runMarkerDir, s), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			continue // taken by a concurrent run
		}
		_, _ = fmt.Fprintf(f, "%d\n", os.Getpid())
		_ = f.Close()
		return s
	}
	t.Fatal("no free run suffix after 50 tries")
	return ""
}

// reapStaleRuns removes the namespaces (and what runs in them) of earlier
// runs that died without their cleanups, e.g. on a go test -timeout panic.
// Only runs with a marker whose test process is gone are touched.
func reapStaleRuns() error {
	markers, err := os.ReadDir(runMarkerDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range markers {
		suffix := m.Name()
		raw, _ := os.ReadFile(filepath.Join(runMarkerDir, suffix))
		if pid, err := strconv.Atoi(strings.TrimSpace(string(raw))); err == nil && pid != os.Getpid() && isTestProcess(pid) {
			continue // that run is still going
		}
		leftovers, _ := filepath.Glob(filepath.Join(netnsRunDir, namePrefix+suffix+"*"))
		for _, path := range leftovers {
			ns := filepath.Base(path)
			if err := killProcessesInNetns(ns, 5*time.Second); err != nil {
				errs = append(errs, err)
			}
			if out, err := runIP("netns", "del", ns); err != nil {
				errs = append(errs, fmt.Errorf("ip netns del %s: %w: %s", ns, err, out))
			}
		}
		fmt.Fprintf(os.Stderr, "e2e: reaped %d namespaces of dead run %s\n", len(leftovers), suffix)
		_ = os.Remove(filepath.Join(runMarkerDir, suffix))
	}
	return errors.Join(errs...)
}

func isTestProcess(pid int) bool {
	if !processAlive(pid) {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(cmdline), ".test")
}

func randomInt(n int) int {
	b := make([]byte, 2)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return (int(b[0])<<8 | int(b[1])) % n
}

// eth0AddrReader keeps one netlink handle per namespace open, so reading
// eth0's addresses costs one netlink dump and no thread switching. Not safe
// for concurrent use: each goroutine opens its own.
type eth0AddrReader struct {
	namespaces []string
	handles    []*netlink.Handle
	links      []netlink.Link
}

func newEth0AddrReader(namespaces []string) (*eth0AddrReader, error) {
	r := &eth0AddrReader{namespaces: namespaces}
	for _, ns := range namespaces {
		nsh, err := netns.GetFromName(ns)
		if err != nil {
			r.Close()
			return nil, fmt.Errorf("open netns %s: %w", ns, err)
		}
		h, err := netlink.NewHandleAt(nsh)
		_ = nsh.Close()
		if err != nil {
			r.Close()
			return nil, fmt.Errorf("netlink handle in %s: %w", ns, err)
		}
		r.handles = append(r.handles, h)
		link, err := h.LinkByName(nodeIfName)
		if err != nil {
			r.Close()
			return nil, fmt.Errorf("find %s in %s: %w", nodeIfName, ns, err)
		}
		r.links = append(r.links, link)
	}
	return r, nil
}

// Read lists the IPv4 addresses on eth0 of the i-th namespace (0-based).
func (r *eth0AddrReader) Read(i int) ([]netip.Addr, error) {
	var addrs []netlink.Addr
	var err error
	// An address added or removed mid-dump interrupts it: read again.
	for range 5 {
		addrs, err = r.handles[i].AddrList(r.links[i], netlink.FAMILY_V4)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s in %s: %w", nodeIfName, r.namespaces[i], err)
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
			out = append(out, ip)
		}
	}
	return out, nil
}

// Holds tells whether the i-th namespace's eth0 has addr.
func (r *eth0AddrReader) Holds(i int, addr netip.Addr) (bool, error) {
	addrs, err := r.Read(i)
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if a == addr {
			return true, nil
		}
	}
	return false, nil
}

func (r *eth0AddrReader) Close() {
	for _, h := range r.handles {
		h.Close()
	}
	r.handles = nil
}
