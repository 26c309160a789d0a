package announcer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The test network: two namespaces joined by a veth pair, in 198.18.7.0/24
// (benchmarking space, RFC 2544). The names inside the namespaces are fixed;
// the namespaces' own names are unique per test.
const (
	nodeIf   = "kvn0"
	peerIf   = "kvp0"
	nodeAddr = "198.18.7.1/24"
	peerAddr = "198.18.7.2/24"
	nodeV6   = "2001:db8:7::1/64"
	peerV6   = "2001:db8:7::2/64"
)

var (
	testVIP  = netip.MustParseAddr("198.18.7.100")
	testVIP2 = netip.MustParseAddr("198.18.7.101")
	testVIP6 = netip.MustParseAddr("2001:db8:7::100")
)

// nsRunner runs functions on one goroutine locked to a thread that has
// entered a network namespace. That thread never goes back to Go's pool: the
// goroutine ends still locked, and the runtime then ends the thread.
//
// Functions it runs must not call t.Fatal and friends (that would end the
// runner, not the test); they return errors instead.
type nsRunner struct {
	fns  chan func()
	done chan struct{}
}

func startNSRunner(t *testing.T, name string) *nsRunner {
	t.Helper()
	r := &nsRunner{fns: make(chan func()), done: make(chan struct{})}
	ready := make(chan error, 1)
	go func() {
		defer close(r.done)
		runtime.LockOSThread()
		// Deliberately no UnlockOSThread: see the type's comment.
		h, err := netns.GetFromName(name)
		if err != nil {
			ready <- fmt.Errorf("open netns %s: %w", name, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			ready <- fmt.Errorf("enter netns %s: %w", name, err)
			return
		}
		ready <- nil
		for fn := range r.fns {
			fn()
		}
	}()
	if err := <-ready; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		close(r.fns)
		<-r.done
	})
	return r
}

// do runs fn in the namespace and waits for it.
func (r *nsRunner) do(fn func() error) error {
	errc := make(chan error, 1)
	r.fns <- func() { errc <- fn() }
	return <-errc
}

// testNet is a node namespace, where the announcer runs, and a peer
// namespace that watches what the node announces.
type testNet struct {
	node, peer     *nsRunner
	nodeNL, peerNL *netlink.Handle // opened inside the namespaces
	nodeMAC        net.HardwareAddr
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip")
	}
}

func runIP(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %v: %v: %s", args, err, out)
	}
}

func newTestNet(t *testing.T) *testNet {
	t.Helper()
	requireRoot(t)
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	suffix := hex.EncodeToString(b[:])
	nodeNS, peerNS := "kvtA-"+suffix, "kvtB-"+suffix
	for _, ns := range []string{nodeNS, peerNS} {
		runIP(t, "netns", "add", ns)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if out, err := exec.CommandContext(ctx, "ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v: %s", ns, err, out)
			}
		})
	}
	runIP(t, "-n", nodeNS, "link", "add", nodeIf, "type", "veth", "peer", "name", peerIf, "netns", peerNS)
	runIP(t, "-n", nodeNS, "addr", "add", nodeAddr, "dev", nodeIf)
	runIP(t, "-n", peerNS, "addr", "add", peerAddr, "dev", peerIf)
	runIP(t, "-n", nodeNS, "-6", "addr", "add", nodeV6, "dev", nodeIf, "nodad")
	runIP(t, "-n", peerNS, "-6", "addr", "add", peerV6, "dev", peerIf, "nodad")
	runIP(t, "-n", nodeNS, "link", "set", nodeIf, "up")
	runIP(t, "-n", peerNS, "link", "set", peerIf, "up")

	tn := &testNet{node: startNSRunner(t, nodeNS), peer: startNSRunner(t, peerNS)}
	for _, x := range []struct {
		r  *nsRunner
		nl **netlink.Handle
	}{{tn.node, &tn.nodeNL}, {tn.peer, &tn.peerNL}} {
		err := x.r.do(func() (err error) {
			*x.nl, err = netlink.NewHandle(unix.NETLINK_ROUTE)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		h := *x.nl
		t.Cleanup(h.Close)
	}
	l, err := tn.nodeNL.LinkByName(nodeIf)
	if err != nil {
		t.Fatal(err)
	}
	tn.nodeMAC = l.Attrs().HardwareAddr
	return tn
}

// newAnnouncer makes an announcer whose Close runs, inside the node
// namespace, when the test ends.
func (tn *testNet) newAnnouncer(t *testing.T) *Announcer {
	t.Helper()
	a := New(testLogger(t))
	t.Cleanup(func() {
		if err := tn.node.do(a.Close); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return a
}

// configure runs Configure inside the node namespace, where it opens its
// sockets.
func (tn *testNet) configure(a *Announcer, ifname string, refresh time.Duration, vips ...netip.Addr) error {
	c := cfgFor(ifname, refresh, vips...)
	return tn.node.do(func() error { return a.Configure(context.Background(), c) })
}

// nodeHas reports whether vip is on the node's interface as a host address,
// and its address flags.
func (tn *testNet) nodeHas(t *testing.T, vip netip.Addr) (bool, int) {
	t.Helper()
	l, err := tn.nodeNL.LinkByName(nodeIf)
	if err != nil {
		t.Fatal(err)
	}
	list, err := tn.nodeNL.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, na := range list {
		ip, _ := netip.AddrFromSlice(na.IP)
		ones, bits := na.Mask.Size()
		if ip.Unmap() == vip && ones == bits {
			return true, na.Flags
		}
	}
	return false, 0
}

// addLeftover puts vip on the node's interface the way a crashed earlier
// run would have left it.
func (tn *testNet) addLeftover(t *testing.T, vip netip.Addr) {
	t.Helper()
	l, err := tn.nodeNL.LinkByName(nodeIf)
	if err != nil {
		t.Fatal(err)
	}
	if err := tn.nodeNL.AddrAdd(l, hostAddr(vip)); err != nil {
		t.Fatal(err)
	}
}

// captured is one ARP packet the peer received.
type captured struct {
	dst net.HardwareAddr
	p   arp.Packet
}

// arpCapture records the ARP packets arriving on the peer's interface.
type arpCapture struct {
	mu   sync.Mutex
	pkts []captured
}

func (tn *testNet) captureARP(t *testing.T) *arpCapture {
	t.Helper()
	var conn *packet.Conn
	err := tn.peer.do(func() error {
		ifi, err := net.InterfaceByName(peerIf)
		if err != nil {
			return err
		}
		conn, err = packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeARP), nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	c := &arpCapture{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		// Closing conn ends the read; the count only bounds a runaway.
		for range 100000 {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			var f ethernet.Frame
			var p arp.Packet
			if f.UnmarshalBinary(buf[:n]) != nil || f.EtherType != ethernet.EtherTypeARP || p.UnmarshalBinary(f.Payload) != nil {
				continue
			}
			c.mu.Lock()
			c.pkts = append(c.pkts, captured{dst: f.Destination, p: p})
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	return c
}

// garps returns the gratuitous ARP packets seen for vip from mac.
func (c *arpCapture) garps(vip netip.Addr, mac net.HardwareAddr) []captured {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []captured
	for _, x := range c.pkts {
		if x.p.SenderIP == vip && x.p.TargetIP == vip && x.p.SenderHardwareAddr.String() == mac.String() {
			out = append(out, x)
		}
	}
	return out
}

// eventually polls cond every 20ms until it holds or within passes.
func eventually(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for range int(within/(20*time.Millisecond)) + 1 {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return cond()
}
