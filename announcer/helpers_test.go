package announcer

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// oldMAC stands for the VIP's previous holder in the peer's neighbour cache.
var oldMAC = net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, 0x53, 0x01}

// configurePB runs Configure with c inside the node namespace.
func (tn *testNet) configurePB(a *Announcer, c *pb.AnnouncerConfig) error {
	return tn.node.do(func() error { return a.Configure(context.Background(), c) })
}

// burstCfg is a config with a burst of burst announcements spacing apart
// and a refresh too long to be seen in a test.
func burstCfg(burst int, spacing time.Duration, vips ...netip.Addr) *pb.AnnouncerConfig {
	c := cfgFor(nodeIf, time.Hour, vips...)
	c.BurstCount, c.BurstIntervalMs = int32(burst), spacing.Milliseconds()
	return c
}

// peerNeighbour is the peer's neighbour entry for ip: its link-layer
// address, or nil when there is none.
func (tn *testNet) peerNeighbour(t *testing.T, ip netip.Addr) net.HardwareAddr {
	t.Helper()
	l, err := tn.peerNL.LinkByName(peerIf)
	if err != nil {
		t.Fatal(err)
	}
	family := netlink.FAMILY_V4
	if ip.Is6() {
		family = netlink.FAMILY_V6
	}
	neighs, err := tn.peerNL.NeighList(l.Attrs().Index, family)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range neighs {
		if a, _ := netip.AddrFromSlice(n.IP); a.Unmap() == ip {
			return n.HardwareAddr
		}
	}
	return nil
}

// addStaleNeighbour gives the peer a neighbour entry for ip pointing at
// oldMAC, in state STALE, as a host that talked to the previous holder has.
func (tn *testNet) addStaleNeighbour(t *testing.T, ip netip.Addr) {
	t.Helper()
	runIP(t, "-n", tn.peerNS, "neigh", "replace", ip.String(), "lladdr", oldMAC.String(), "dev", peerIf, "nud", "stale")
	if got := tn.peerNeighbour(t, ip); got.String() != oldMAC.String() {
		t.Fatalf("setup: peer's neighbour entry for %s is %v, want %s", ip, got, oldMAC)
	}
}

// nodeLink is the node's interface.
func (tn *testNet) nodeLink(t *testing.T) netlink.Link {
	t.Helper()
	l, err := tn.nodeNL.LinkByName(nodeIf)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// watchLog collects what one Watch stream sends.
type watchLog struct {
	mu   sync.Mutex
	evs  []*pb.InterfaceEvent
	done chan struct{}
}

// startWatch opens a Watch stream on a; it ends with the test.
func startWatch(t *testing.T, a *Announcer) *watchLog {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watchLog{done: make(chan struct{})}
	go func() {
		defer close(w.done)
		_ = a.Watch(ctx, func(ev *pb.InterfaceEvent) error {
			w.mu.Lock()
			w.evs = append(w.evs, ev)
			w.mu.Unlock()
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-w.done
	})
	return w
}

func (w *watchLog) last() *pb.InterfaceEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.evs) == 0 {
		return nil
	}
	return w.evs[len(w.evs)-1]
}

func (w *watchLog) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.evs)
}

// waitLast waits until the stream's newest event satisfies cond, and
// returns it and how long that took.
func (w *watchLog) waitLast(t *testing.T, within time.Duration, what string, cond func(*pb.InterfaceEvent) bool) (*pb.InterfaceEvent, time.Duration) {
	t.Helper()
	start := time.Now()
	ok := eventually(within, func() bool { ev := w.last(); return ev != nil && cond(ev) })
	if !ok {
		t.Fatalf("watch: no event with %s within %s; last %v", what, within, w.last())
	}
	return w.last(), time.Since(start)
}
