package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
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

// The announcer's end-to-end tests (issue 4): a failover takes effect in
// the client's neighbour cache at once, for IPv4 and IPv6 VIPs; a VIP
// deleted by hand on the leader comes back; the leader's link going down
// moves the VIP; cleanup removes several VIPs, IPv6 ones too.

const (
	// announceBound is how soon after the new holder has the VIP the
	// client's neighbour entry must point at it: the burst's first
	// announcement goes out right after the address is added, so this is
	// generous, and far below any neighbour cache timeout (30s reachable,
	// then 5s delay and probes).
	announceBound = time.Second
	// fastPoll is the period of the polls that time announcements.
	fastPoll = 5 * time.Millisecond
	// The cluster's burst (the defaults, written out in the config).
	e2eBurst   = 3
	e2eSpacing = 100 * time.Millisecond
)

// vip6 is the run's IPv6 VIP, in 2001:db8:X::/64 beside 198.18.X.0/24.
func vip6(n *Net) string { return fmt.Sprintf("2001:db8:%x::100", n.Subnet) }

// nodeIP6 and clientIP6 are the IPv6 addresses (with /64) of node i and
// the client, so the VIP is on-link for the client and the holder can
// answer it.
func nodeIP6(n *Net, i int) string { return fmt.Sprintf("2001:db8:%x::%d/64", n.Subnet, 10+i) }
func clientIP6(n *Net) string      { return fmt.Sprintf("2001:db8:%x::2/64", n.Subnet) }

// startAnnounceCluster starts a 3-node cluster whose config also has extra
// (rendered for the run's Net); with ipv6, IPv6 is enabled (the harness
// turns it off) in the node and client namespaces before any node starts.
func startAnnounceCluster(t *testing.T, ipv6 bool, extra func(n *Net) string) *Cluster {
	t.Helper()
	var once sync.Once
	return StartClusterWith(t, 3, func(cfg *NodeConfig) {
		cfg.Render = func(c NodeConfig, n *Net) string {
			// Rendered for node 1 first, before any supervisor runs.
			if ipv6 {
				once.Do(func() { enableIPv6(t, n) })
			}
			c.Render = nil
			yaml := c.YAML(n) + fmt.Sprintf("announce:\n  burstCount: %d\n  burstInterval: %s\n", e2eBurst, e2eSpacing)
			if extra != nil {
				yaml += extra(n)
			}
			return yaml
		}
	})
}

// enableIPv6 turns IPv6 on for eth0 in every node namespace and the client
// namespace, without duplicate address detection (the link-local address
// is usable at once), and gives each its address in 2001:db8:X::/64.
func enableIPv6(t *testing.T, n *Net) {
	t.Helper()
	spaces := append(append([]string{}, n.NodeNS...), n.ClientNS)
	for i, ns := range spaces {
		if out, err := n.Exec(ns, "sysctl", "-q", "-w",
			"net.ipv6.conf."+nodeIfName+".accept_dad=0",
			"net.ipv6.conf.all.disable_ipv6=0",
			"net.ipv6.conf."+nodeIfName+".disable_ipv6=0"); err != nil {
			t.Fatalf("enable IPv6 in %s: %v: %s", ns, err, out)
		}
		addr := clientIP6(n)
		if i < len(n.NodeNS) {
			addr = nodeIP6(n, i+1)
		}
		n.mustIP("-n", ns, "-6", "addr", "add", addr, "dev", nodeIfName, "nodad")
	}
	for _, ns := range spaces {
		mustWaitFor(t, 10*time.Second, "a usable link-local address in "+ns, func() (bool, string) {
			out, err := runIP("-n", ns, "-6", "addr", "show", "dev", nodeIfName, "scope", "link")
			return err == nil && strings.Contains(out, "inet6 fe80::") && !strings.Contains(out, "tentative"), out
		})
	}
}

// inNetns runs fn on a thread inside namespace name. The thread is a fresh
// goroutine's; if it cannot get back to its own namespace it stays locked,
// so the runtime ends it rather than reuse it.
func inNetns(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(name)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open netns %s: %w", name, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", name, err)
			return
		}
		err = fn()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// eth0MAC is the MAC address of eth0 in namespace ns.
func eth0MAC(t *testing.T, ns string) net.HardwareAddr {
	t.Helper()
	var mac net.HardwareAddr
	err := inNetns(ns, func() error {
		ifi, err := net.InterfaceByName(nodeIfName)
		if err == nil {
			mac = ifi.HardwareAddr
		}
		return err
	})
	if err != nil {
		t.Fatalf("eth0 of %s: %v", ns, err)
	}
	return mac
}

// clientNeighbour is the client's neighbour entry for ip as `ip neigh`
// shows it: the link-layer address ("" if none) and the whole line.
func clientNeighbour(n *Net, ip string) (string, string) {
	out, err := runIP("-n", n.ClientNS, "neigh", "show", ip, "dev", nodeIfName)
	if err != nil {
		return "", fmt.Sprintf("ip neigh: %v: %s", err, out)
	}
	f := strings.Fields(out)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "lladdr" {
			return f[i+1], out
		}
	}
	return "", out
}

// touch makes the client talk to addr (host:port) once, so it has a
// neighbour entry for the host, as any client of the VIP has. A refused
// connection is fine: the entry is made before the first packet goes.
func touch(n *Net, network, addr string) error {
	return inNetns(n.ClientNS, func() error {
		c, err := net.DialTimeout(network, addr, time.Second)
		if err == nil {
			c.Close()
		}
		return nil
	})
}

// holdsAddr tells whether eth0 in ns has ip (any family).
func holdsAddr(ns string, ip netip.Addr) (bool, error) {
	nsh, err := netns.GetFromName(ns)
	if err != nil {
		return false, err
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		return false, err
	}
	defer h.Close()
	l, err := h.LinkByName(nodeIfName)
	if err != nil {
		return false, err
	}
	var addrs []netlink.Addr
	for range 5 { // a dump interrupted by a change is read again
		if addrs, err = h.AddrList(l, netlink.FAMILY_ALL); err == nil {
			break
		}
	}
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
			return true, nil
		}
	}
	return false, nil
}

// seenAnnouncement is one gratuitous ARP or neighbour advertisement the
// capture saw.
type seenAnnouncement struct {
	at     time.Time
	srcMAC net.HardwareAddr
	dstMAC net.HardwareAddr
	arp    *arp.Packet
	na     *ndp.NeighborAdvertisement
	ipDst  netip.Addr
}

// announceCapture records the gratuitous ARPs and neighbour advertisements
// arriving on eth0 of a namespace, from a packet socket opened there.
type announceCapture struct {
	mu   sync.Mutex
	seen []seenAnnouncement
}

func startAnnounceCapture(t *testing.T, ns string) *announceCapture {
	t.Helper()
	var conn *packet.Conn
	err := inNetns(ns, func() error {
		ifi, err := net.InterfaceByName(nodeIfName)
		if err != nil {
			return err
		}
		conn, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, nil)
		return err
	})
	if err != nil {
		t.Fatalf("capture in %s: %v", ns, err)
	}
	c := &announceCapture{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		// Closing conn ends the read; the count only bounds a runaway.
		for range 1_000_000 {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			if s, ok := parseSeen(buf[:n]); ok {
				s.at = time.Now()
				c.mu.Lock()
				c.seen = append(c.seen, s)
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

func parseSeen(b []byte) (seenAnnouncement, bool) {
	var f ethernet.Frame
	if f.UnmarshalBinary(b) != nil {
		return seenAnnouncement{}, false
	}
	s := seenAnnouncement{srcMAC: f.Source, dstMAC: f.Destination}
	switch f.EtherType {
	case ethernet.EtherTypeARP:
		var p arp.Packet
		if p.UnmarshalBinary(f.Payload) != nil || p.SenderIP != p.TargetIP {
			return seenAnnouncement{}, false // not gratuitous
		}
		s.arp = &p
		return s, true
	case ethernet.EtherTypeIPv6:
		ip := f.Payload
		if len(ip) < 40 || ip[6] != 58 { // ICMPv6, no extension headers
			return seenAnnouncement{}, false
		}
		m, err := ndp.ParseMessage(ip[40:])
		if err != nil {
			return seenAnnouncement{}, false
		}
		na, ok := m.(*ndp.NeighborAdvertisement)
		if !ok {
			return seenAnnouncement{}, false
		}
		s.na, s.ipDst = na, netip.AddrFrom16([16]byte(ip[24:40]))
		return s, true
	}
	return seenAnnouncement{}, false
}

// from lists what was seen for vip from mac since since: gratuitous ARPs
// (sender and target the VIP, sender MAC mac) or neighbour advertisements
// (target the VIP, in frames from mac).
func (c *announceCapture) from(vip netip.Addr, mac net.HardwareAddr, since time.Time) []seenAnnouncement {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []seenAnnouncement
	for _, s := range c.seen {
		if s.at.Before(since) {
			continue
		}
		switch {
		case s.arp != nil && s.arp.SenderIP == vip && s.arp.SenderHardwareAddr.String() == mac.String():
		case s.na != nil && s.na.TargetAddress == vip && s.srcMAC.String() == mac.String():
		default:
			continue
		}
		out = append(out, s)
	}
	return out
}

// describe summarises announcements: kinds and times relative to t0.
func describe(list []seenAnnouncement, t0 time.Time) string {
	var parts []string
	for _, s := range list {
		kind := "na"
		if s.arp != nil {
			kind = "arp-" + strings.TrimPrefix(s.arp.Operation.String(), "Operation")
		}
		parts = append(parts, fmt.Sprintf("%s@%s", kind, s.at.Sub(t0).Round(time.Millisecond)))
	}
	return strings.Join(parts, " ")
}

// waitNewHolder polls (every fastPoll) until a node other than old holds
// vip on eth0, and returns it and when it was first seen.
func waitNewHolder(t *testing.T, c *Cluster, vip netip.Addr, old int, timeout time.Duration) (int, time.Time) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for range int(timeout/fastPoll) + 1 {
		for i := range c.Nodes {
			if i+1 == old {
				continue
			}
			if held, err := holdsAddr(c.Net.NodeNS[i], vip); err == nil && held {
				return i + 1, time.Now()
			}
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(fastPoll)
	}
	t.Fatalf("no node but %d holds %s after %s", old, vip, timeout)
	return 0, time.Time{}
}

// waitHeld polls (every fastPoll) until eth0 in ns has vip (want) or not,
// and returns when it was seen so.
func waitHeld(t *testing.T, ns string, vip netip.Addr, want bool, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for range int(timeout/fastPoll) + 1 {
		var held bool
		if held, err = holdsAddr(ns, vip); err == nil && held == want {
			return time.Now()
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(fastPoll)
	}
	t.Fatalf("%s in %s: held != %v after %s (last error %v)", vip, ns, want, timeout, err)
	return time.Time{}
}

// runCmd runs a command bounded by ctx and returns its combined output.
func runCmd(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// waitClientNeighbour polls (every fastPoll) until the client's entry for
// ip shows mac, and returns when it did.
func waitClientNeighbour(t *testing.T, n *Net, ip string, mac net.HardwareAddr, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var line string
	for range int(timeout/fastPoll) + 1 {
		var got string
		got, line = clientNeighbour(n, ip)
		if got == mac.String() {
			return time.Now()
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(fastPoll)
	}
	t.Fatalf("client's neighbour entry for %s not %s within %s: %q", ip, mac, timeout, line)
	return time.Time{}
}

// checkBurst checks the new holder's announcements for vip: at least the
// burst, spaced about e2eSpacing apart, and none from the old holder once
// the new one has the VIP.
func checkBurst(t *testing.T, capt *announceCapture, vip netip.Addr, newMAC, oldMAC net.HardwareAddr, since time.Time) {
	t.Helper()
	var firsts []seenAnnouncement // one per round: the request, or the NA
	mustWaitFor(t, 5*time.Second, fmt.Sprintf("a burst of %d announcements of %s from %s", e2eBurst, vip, newMAC), func() (bool, string) {
		firsts = firsts[:0]
		all := capt.from(vip, newMAC, since)
		for _, s := range all {
			if s.na != nil || s.arp.Operation == arp.OperationRequest {
				firsts = append(firsts, s)
			}
		}
		return len(firsts) >= e2eBurst, describe(all, since)
	})
	all := capt.from(vip, newMAC, since)
	t.Logf("announcements of %s from the new holder %s: %s", vip, newMAC, describe(all, since))
	for _, s := range all {
		switch {
		case s.arp != nil && s.arp.Operation == arp.OperationReply && s.arp.TargetHardwareAddr.String() != newMAC.String():
			t.Errorf("gratuitous reply with target mac %s, want %s", s.arp.TargetHardwareAddr, newMAC)
		case s.arp != nil && s.dstMAC.String() != "ff:ff:ff:ff:ff:ff":
			t.Errorf("gratuitous arp to %s, want broadcast", s.dstMAC)
		case s.na != nil && (!s.na.Override || s.na.Solicited || s.ipDst != netip.IPv6LinkLocalAllNodes()):
			t.Errorf("neighbour advertisement override=%v solicited=%v to %s, want override to ff02::1", s.na.Override, s.na.Solicited, s.ipDst)
		}
	}
	if len(firsts) >= 2 {
		if gap := firsts[1].at.Sub(firsts[0].at); gap < e2eSpacing/2 || gap > e2eSpacing+time.Second {
			t.Errorf("second round %s after the first, want about %s", gap, e2eSpacing)
		}
	}
	if old := capt.from(vip, oldMAC, firsts[0].at.Add(50*time.Millisecond)); len(old) > 0 {
		t.Errorf("the old holder %s still announced %s after the new one: %s", oldMAC, vip, describe(old, since))
	}
}

// TestAnnounceFailoverUpdatesClientNeighbour: the client talked to the VIP,
// so it has a neighbour entry pointing at the holder; after a failover
// (the holder's check fails) the entry points at the new holder as soon as
// its gratuitous ARP arrives, with no traffic from the client and no wait
// for the entry to expire. The client is a plain host: arp_accept off.
func TestAnnounceFailoverUpdatesClientNeighbour(t *testing.T) {
	c := startAnnounceCluster(t, false, nil)
	vip := netip.MustParseAddr(c.Net.VIP())
	leader := c.WaitSingleHolder(electionBound, nil)
	c.WaitClientReachesBackend(reachBound)
	oldMAC := eth0MAC(t, c.Node(leader).NS)
	if got, line := clientNeighbour(c.Net, vip.String()); got != oldMAC.String() {
		t.Fatalf("before the failover the client's entry is %q, want %s", line, oldMAC)
	}
	if out, _ := c.Net.Exec(c.Net.ClientNS, "sysctl", "-n", "net.ipv4.conf.eth0.arp_accept"); strings.TrimSpace(out) != "0" {
		t.Logf("client arp_accept = %q (expected the default 0)", out)
	}
	capt := startAnnounceCapture(t, c.Net.ClientNS)

	failedAt := time.Now()
	c.Node(leader).Health.Stop()
	holder, heldAt := waitNewHolder(t, c, vip, leader, electionBound)
	newMAC := eth0MAC(t, c.Node(holder).NS)
	updatedAt := waitClientNeighbour(t, c.Net, vip.String(), newMAC, announceBound)
	_, line := clientNeighbour(c.Net, vip.String())
	t.Logf("failover %s -> %s: VIP on the new holder %s after the check failed; client's entry %q %s after that",
		c.Node(leader).ID, c.Node(holder).ID, heldAt.Sub(failedAt).Round(time.Millisecond), line, updatedAt.Sub(heldAt).Round(time.Millisecond))
	checkBurst(t, capt, vip, newMAC, oldMAC, failedAt)

	c.WaitSingleHolder(electionBound, func(i int) bool { return i == holder })
	c.WaitClientReachesBackend(reachBound)
	body, err := c.Node(holder).Metrics()
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := metricValue(body, "keep_vip_announcer_gratuitous_arp_sent_total"); !ok || v < 2*e2eBurst {
		t.Errorf("%s: keep_vip_announcer_gratuitous_arp_sent_total = %v (found %v), want at least %d", c.Node(holder).ID, v, ok, 2*e2eBurst)
	}
}

// TestAnnounceIPv6Failover is the same for a cluster with an IPv6 VIP
// beside the IPv4 one: both move together, and the client's IPv6
// neighbour entry follows on the unsolicited neighbour advertisements.
// Stopping the holder takes both VIPs off its interface.
func TestAnnounceIPv6Failover(t *testing.T) {
	c := startAnnounceCluster(t, true, func(n *Net) string {
		return fmt.Sprintf("vips:\n  - %q\n", vip6(n))
	})
	vip4, v6 := netip.MustParseAddr(c.Net.VIP()), netip.MustParseAddr(vip6(c.Net))
	leader := c.WaitSingleHolder(electionBound, nil)
	c.WaitClientReachesBackend(reachBound)
	mustWaitFor(t, processBound, "the IPv6 VIP on the leader", func() (bool, string) {
		held, err := holdsAddr(c.Node(leader).NS, v6)
		return err == nil && held, fmt.Sprintf("held %v, %v", held, err)
	})
	// The client talks to the IPv6 VIP too (a refused connection will do).
	if err := touch(c.Net, "tcp6", net.JoinHostPort(v6.String(), "9")); err != nil {
		t.Fatal(err)
	}
	oldMAC := eth0MAC(t, c.Node(leader).NS)
	for _, ip := range []string{vip4.String(), v6.String()} {
		mustWaitFor(t, 5*time.Second, "the client's entry for "+ip, func() (bool, string) {
			got, line := clientNeighbour(c.Net, ip)
			return got == oldMAC.String(), line
		})
	}
	capt := startAnnounceCapture(t, c.Net.ClientNS)

	failedAt := time.Now()
	c.Node(leader).Health.Stop()
	holder, heldAt := waitNewHolder(t, c, v6, leader, electionBound)
	newMAC := eth0MAC(t, c.Node(holder).NS)
	updated6 := waitClientNeighbour(t, c.Net, v6.String(), newMAC, announceBound)
	updated4 := waitClientNeighbour(t, c.Net, vip4.String(), newMAC, announceBound)
	_, line := clientNeighbour(c.Net, v6.String())
	t.Logf("failover %s -> %s: IPv6 VIP on the new holder %s after the check failed; client's entry %q %s after that (IPv4 %s)",
		c.Node(leader).ID, c.Node(holder).ID, heldAt.Sub(failedAt).Round(time.Millisecond), line,
		updated6.Sub(heldAt).Round(time.Millisecond), updated4.Sub(heldAt).Round(time.Millisecond))
	checkBurst(t, capt, v6, newMAC, oldMAC, failedAt)
	if held, err := holdsAddr(c.Node(leader).NS, v6); err != nil || held {
		t.Errorf("old holder still has %s (%v)", v6, err)
	}
	body, err := c.Node(holder).Metrics()
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := metricValue(body, "keep_vip_announcer_neighbor_advertisements_sent_total"); !ok || v < e2eBurst {
		t.Errorf("%s: keep_vip_announcer_neighbor_advertisements_sent_total = %v (found %v), want at least %d", c.Node(holder).ID, v, ok, e2eBurst)
	}

	// Release on stop: SIGTERM to the holder's supervisor takes both VIPs
	// off its interface.
	c.WaitSingleHolder(electionBound, func(i int) bool { return i == holder })
	c.Node(holder).Stop()
	for _, ip := range []netip.Addr{vip4, v6} {
		if held, err := holdsAddr(c.Node(holder).NS, ip); err != nil || held {
			t.Errorf("%s still has %s after its supervisor stopped (%v)", c.Node(holder).ID, ip, err)
		}
	}
}

// TestAnnounceReaddsDeletedVIP: a VIP deleted by hand on the leader is back
// at once, announced again, counted, and the VIP never moves.
func TestAnnounceReaddsDeletedVIP(t *testing.T) {
	c := startAnnounceCluster(t, false, nil)
	vip := netip.MustParseAddr(c.Net.VIP())
	leader := c.WaitSingleHolder(electionBound, nil)
	c.WaitClientReachesBackend(reachBound)
	node := c.Node(leader)
	mac := eth0MAC(t, node.NS)
	capt := startAnnounceCapture(t, c.Net.ClientNS)

	const deletes = 3
	for i := range deletes {
		deletedAt := time.Now()
		if out, err := runIP("-n", node.NS, "addr", "del", vip.String()+"/32", "dev", nodeIfName); err != nil {
			t.Fatalf("ip addr del: %v: %s", err, out)
		}
		backAt := waitHeld(t, node.NS, vip, true, 5*time.Second)
		mustWaitFor(t, 5*time.Second, "an announcement after the readd", func() (bool, string) {
			return len(capt.from(vip, mac, deletedAt)) > 0, ""
		})
		time.Sleep(400 * time.Millisecond)
		t.Logf("delete %d: VIP back on %s within %s (polled every %s); announced after the delete: %s", i+1, node.ID,
			backAt.Sub(deletedAt).Round(time.Millisecond), fastPoll, describe(capt.from(vip, mac, deletedAt), deletedAt))
	}
	mustWaitFor(t, metricsBound, node.ID+"'s readds metric", func() (bool, string) {
		body, err := node.Metrics()
		if err != nil {
			return false, err.Error()
		}
		v, ok := metricValue(body, "keep_vip_announcer_vip_readds_total")
		return ok && v == deletes, fmt.Sprintf("keep_vip_announcer_vip_readds_total = %v (found %v)", v, ok)
	})
	if hs, err := c.VIPHolders(); err != nil || len(hs) != 1 || hs[0] != leader {
		t.Errorf("VIP holders %v (%v), want [%d]: a readd must not move the VIP", hs, err, leader)
	}
	if !strings.Contains(node.LogTail(400), "added it back") {
		t.Errorf("%s's log does not tell of the readd", node.ID)
	}
}

// TestAnnounceLinkDownMovesVIP: the leader's eth0 set down (inside its
// namespace) makes it unusable: the leader gives the VIP up at once, leaves
// the election, and another node takes the VIP; once the link is back it
// rejoins as a follower.
func TestAnnounceLinkDownMovesVIP(t *testing.T) {
	c := startAnnounceCluster(t, false, nil)
	vip := netip.MustParseAddr(c.Net.VIP())
	leader := c.WaitSingleHolder(electionBound, nil)
	c.WaitClientReachesBackend(reachBound)
	node := c.Node(leader)
	c.WaitPlugins(leader, processBound)

	downAt := time.Now()
	if out, err := runIP("-n", node.NS, "link", "set", nodeIfName, "down"); err != nil {
		t.Fatalf("ip link set down: %v: %s", err, out)
	}
	goneAt := waitHeld(t, node.NS, vip, false, processBound)
	t.Logf("%s: VIP off its interface %s after its link went down", node.ID, goneAt.Sub(downAt).Round(time.Millisecond))
	holder, heldAt := waitNewHolder(t, c, vip, leader, electionBound)
	t.Logf("VIP moved %s -> %s %s after the link went down", node.ID, c.Node(holder).ID, heldAt.Sub(downAt).Round(time.Millisecond))
	c.WaitSingleHolder(electionBound, func(i int) bool { return i != leader })
	c.WaitClientReachesBackend(reachBound)
	mustWaitFor(t, processBound, node.ID+" to leave the election", func() (bool, string) {
		kids, err := node.PluginChildren()
		if err != nil {
			return false, err.Error()
		}
		return len(kids["keep-vip-elector"]) == 0, "keep-vip-elector still running"
	})
	c.RequireSupervisorRunning(leader)
	if log := node.LogTail(400); !strings.Contains(log, "has no carrier") && !strings.Contains(log, "is down") {
		t.Errorf("%s's log does not tell why the interface is unusable", node.ID)
	}

	upAt := time.Now()
	if out, err := runIP("-n", node.NS, "link", "set", nodeIfName, "up"); err != nil {
		t.Fatalf("ip link set up: %v: %s", err, out)
	}
	took := mustWaitFor(t, processBound, node.ID+" to rejoin the election", func() (bool, string) {
		pid, err := node.PluginPID("keep-vip-elector")
		return err == nil && pid > 0, fmt.Sprint(err)
	})
	t.Logf("%s: elector back %s after the link came up", node.ID, took.Round(time.Millisecond))
	mustWaitFor(t, metricsBound, node.ID+" to report its interface usable", func() (bool, string) {
		body, err := node.Metrics()
		if err != nil {
			return false, err.Error()
		}
		v, ok := metricValue(body, "keep_vip_announcer_interface_usable")
		return ok && v == 1, fmt.Sprintf("keep_vip_announcer_interface_usable = %v (found %v)", v, ok)
	})
	if hold := c.WaitSingleHolder(electionBound, nil); hold != holder {
		t.Errorf("VIP on %s after %s came back, want it to stay on %s", c.Node(hold).ID, node.ID, c.Node(holder).ID)
	}
	t.Logf("%s is a follower again %s after its link came up", node.ID, time.Since(upAt).Round(time.Millisecond))
}

// TestAnnounceCleanup: `keep-vip-supervisor cleanup -c FILE` takes every
// VIP of vip and vips, IPv4 and IPv6, off the interface, and leaves the
// node's own address alone.
func TestAnnounceCleanup(t *testing.T) {
	requireRoot(t)
	bins := binariesForTest(t)
	n := NewNet(t, 1)
	enableIPv6(t, n)
	ns := n.NodeNS[0]
	vip2 := fmt.Sprintf("198.18.%d.101", n.Subnet)
	cfg := NodeConfig{Cluster: "e2e-" + n.Suffix, Index: 1, Members: 1, DataDir: t.TempDir()}
	yaml := cfg.YAML(n) + fmt.Sprintf("vips: [%s, %q, %s]\n", vip2, vip6(n), n.VIP())
	path := filepath.Join(t.TempDir(), "keep-vip.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	vips := []string{n.VIP() + "/32", vip2 + "/32", vip6(n) + "/128"}
	for _, v := range vips {
		args := []string{"-n", ns, "addr", "add", v, "dev", nodeIfName}
		if strings.Contains(v, ":") {
			args = append(args, "nodad")
		}
		n.mustIP(args...)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	out, err := runCmd(ctx, "ip", "netns", "exec", ns, bins.Supervisor(), "cleanup", "-c", path)
	if err != nil {
		t.Fatalf("cleanup: %v: %s", err, out)
	}
	t.Logf("cleanup took %s", time.Since(start).Round(time.Millisecond))
	for _, v := range vips {
		ip := netip.MustParsePrefix(v).Addr()
		if held, err := holdsAddr(ns, ip); err != nil || held {
			t.Errorf("%s still on eth0 after cleanup (%v)", ip, err)
		}
	}
	if held, err := holdsAddr(ns, netip.MustParseAddr(n.NodeIP(1))); err != nil || !held {
		t.Errorf("cleanup took the node's own address %s (%v)", n.NodeIP(1), err)
	}
}
