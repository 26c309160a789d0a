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
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
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
	nodeNS, peerNS string // the namespaces' names
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
	// No duplicate address detection: the link-local addresses the links
	// get when they come up are usable at once (the NDP socket binds to the
	// node's), instead of tentative for a second or two.
	runIP(t, "netns", "exec", nodeNS, "sysctl", "-q", "-w", "net.ipv6.conf."+nodeIf+".accept_dad=0")
	runIP(t, "netns", "exec", peerNS, "sysctl", "-q", "-w", "net.ipv6.conf."+peerIf+".accept_dad=0")
	runIP(t, "-n", nodeNS, "link", "set", nodeIf, "up")
	runIP(t, "-n", peerNS, "link", "set", peerIf, "up")

	waitLinkLocal(t, nodeNS, nodeIf)

	tn := &testNet{nodeNS: nodeNS, peerNS: peerNS, node: startNSRunner(t, nodeNS), peer: startNSRunner(t, peerNS)}
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

// waitLinkLocal waits until ifname in ns has a link-local address that is
// no longer tentative: even without DAD the kernel marks it usable from a
// work queue, a little after the link comes up.
func waitLinkLocal(t *testing.T, ns, ifname string) {
	t.Helper()
	var out []byte
	ok := eventually(5*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		out, err = exec.CommandContext(ctx, "ip", "-n", ns, "-6", "addr", "show", "dev", ifname, "scope", "link").CombinedOutput()
		return err == nil && strings.Contains(string(out), "inet6 fe80::") && !strings.Contains(string(out), "tentative")
	})
	if !ok {
		t.Fatalf("%s in %s: no usable link-local address: %s", ifname, ns, out)
	}
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
	return tn.nodeHasOn(t, nodeIf, vip)
}

// nodeHasOn is nodeHas for the node's interface ifname.
func (tn *testNet) nodeHasOn(t *testing.T, ifname string, vip netip.Addr) (bool, int) {
	t.Helper()
	l, err := tn.nodeNL.LinkByName(ifname)
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

// captured is one announcement the peer received: a gratuitous ARP (p is
// set) or a neighbour advertisement (na is set).
type captured struct {
	at       time.Time
	src, dst net.HardwareAddr
	p        arp.Packet

	na       *ndp.NeighborAdvertisement
	ipSrc    netip.Addr
	ipDst    netip.Addr
	hopLimit uint8
}

// capture records the ARP packets and ICMPv6 neighbour advertisements
// arriving on the peer's interface.
type capture struct {
	mu   sync.Mutex
	pkts []captured
}

func (tn *testNet) capture(t *testing.T) *capture {
	t.Helper()
	var conn *packet.Conn
	err := tn.peer.do(func() error {
		ifi, err := net.InterfaceByName(peerIf)
		if err != nil {
			return err
		}
		conn, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	c := &capture{}
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
			if x, ok := parseAnnouncement(buf[:n]); ok {
				x.at = time.Now()
				c.mu.Lock()
				c.pkts = append(c.pkts, x)
				c.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	return c
}

// parseAnnouncement reads an ethernet frame carrying an ARP packet or an
// ICMPv6 neighbour advertisement (in an IPv6 header without extensions).
func parseAnnouncement(b []byte) (captured, bool) {
	var f ethernet.Frame
	if f.UnmarshalBinary(b) != nil {
		return captured{}, false
	}
	x := captured{src: f.Source, dst: f.Destination}
	switch f.EtherType {
	case ethernet.EtherTypeARP:
		if x.p.UnmarshalBinary(f.Payload) != nil {
			return captured{}, false
		}
		return x, true
	case ethernet.EtherTypeIPv6:
		ip := f.Payload
		const icmpv6 = 58
		if len(ip) < 40 || ip[0]>>4 != 6 || ip[6] != icmpv6 {
			return captured{}, false
		}
		x.hopLimit = ip[7]
		x.ipSrc = netip.AddrFrom16([16]byte(ip[8:24]))
		x.ipDst = netip.AddrFrom16([16]byte(ip[24:40]))
		m, err := ndp.ParseMessage(ip[40:])
		if err != nil {
			return captured{}, false
		}
		na, ok := m.(*ndp.NeighborAdvertisement)
		if !ok {
			return captured{}, false
		}
		x.na = na
		return x, true
	}
	return captured{}, false
}

// garps returns the gratuitous ARP packets seen for vip from mac.
func (c *capture) garps(vip netip.Addr, mac net.HardwareAddr) []captured {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []captured
	for _, x := range c.pkts {
		if x.na == nil && x.p.SenderIP == vip && x.p.TargetIP == vip && x.p.SenderHardwareAddr.String() == mac.String() {
			out = append(out, x)
		}
	}
	return out
}

// nas returns the neighbour advertisements seen for target vip in frames
// from mac.
func (c *capture) nas(vip netip.Addr, mac net.HardwareAddr) []captured {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []captured
	for _, x := range c.pkts {
		if x.na != nil && x.na.TargetAddress == vip && x.src.String() == mac.String() {
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
