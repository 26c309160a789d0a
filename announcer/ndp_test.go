package announcer

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/ndp"
)

// The peer, which has a neighbour entry for the VIP pointing at the old
// holder, sees a burst of unsolicited neighbour advertisements for it from
// the node and points the entry at the node.
func TestNeighbourAdvertisementSeenByPeer(t *testing.T) {
	tn := newTestNet(t)
	tn.addStaleNeighbour(t, testVIP6)
	capture := tn.capture(t)
	a := tn.newAnnouncer(t)
	const burst = 3
	if err := tn.configurePB(a, burstCfg(burst, 50*time.Millisecond, testVIP6)); err != nil {
		t.Fatal(err)
	}
	acquired := time.Now()
	if err := a.Acquire(context.Background(), nil); err != nil {
		t.Fatal(err)
	}

	if !eventually(5*time.Second, func() bool { return len(capture.nas(testVIP6, tn.nodeMAC)) >= burst }) {
		t.Fatalf("peer saw %d neighbour advertisements for %s from %s, want %d", len(capture.nas(testVIP6, tn.nodeMAC)), testVIP6, tn.nodeMAC, burst)
	}
	// The refresh is an hour away: the burst is all there is.
	time.Sleep(300 * time.Millisecond)
	nas := capture.nas(testVIP6, tn.nodeMAC)
	if len(nas) != burst {
		t.Errorf("peer saw %d neighbour advertisements, want a burst of %d", len(nas), burst)
	}
	allNodesMAC := net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}
	for i, x := range nas {
		switch {
		case !x.na.Override || x.na.Solicited || x.na.Router:
			t.Errorf("na %d: override %v solicited %v router %v, want override only", i, x.na.Override, x.na.Solicited, x.na.Router)
		case x.ipDst != netip.IPv6LinkLocalAllNodes() || x.dst.String() != allNodesMAC.String():
			t.Errorf("na %d: to %s (%s), want ff02::1 (%s)", i, x.ipDst, x.dst, allNodesMAC)
		case !x.ipSrc.IsLinkLocalUnicast():
			t.Errorf("na %d: from %s, want a link-local address", i, x.ipSrc)
		case x.hopLimit != 255:
			t.Errorf("na %d: hop limit %d, want 255", i, x.hopLimit)
		}
		var tlla net.HardwareAddr
		for _, o := range x.na.Options {
			if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Target {
				tlla = lla.Addr
			}
		}
		if tlla.String() != tn.nodeMAC.String() {
			t.Errorf("na %d: target link-layer address %v, want %s", i, tlla, tn.nodeMAC)
		}
	}
	if len(nas) >= 2 {
		t.Logf("burst of %d neighbour advertisements: first %s after Acquire, spread over %s",
			len(nas), nas[0].at.Sub(acquired).Round(time.Microsecond), nas[len(nas)-1].at.Sub(nas[0].at).Round(time.Millisecond))
	}
	if v, _ := metricValue(t, a, metricNASent, nil); v != burst {
		t.Errorf("%s = %v, want %d", metricNASent, v, burst)
	}
	if v, _ := metricValue(t, a, metricGARPSent, nil); v != 0 {
		t.Errorf("%s = %v for an IPv6 VIP, want 0", metricGARPSent, v)
	}
	if !eventually(time.Second, func() bool { return tn.peerNeighbour(t, testVIP6).String() == tn.nodeMAC.String() }) {
		t.Errorf("peer's neighbour entry for %s is %v, want %s (override)", testVIP6, tn.peerNeighbour(t, testVIP6), tn.nodeMAC)
	}
}

// Without a link-local address (IPv6 just enabled, the link just up and
// DAD running, or the address removed) the NDP socket cannot be bound to
// one: the error says why, and the announcer sends from the VIP instead,
// so the burst on acquire is not lost.
func TestNDPWithoutLinkLocal(t *testing.T) {
	tn := newTestNet(t)
	runIP(t, "-n", tn.nodeNS, "-6", "addr", "flush", "dev", nodeIf, "scope", "link")

	err := tn.node.do(func() error {
		ifi, err := net.InterfaceByName(nodeIf)
		if err != nil {
			return err
		}
		s, err := newNDPSender(ifi, netip.Addr{})
		if err == nil {
			s.close()
		}
		return err
	})
	if !errors.Is(err, ErrNoLinkLocal) || !strings.Contains(err.Error(), "link-local") || !strings.Contains(err.Error(), nodeIf) {
		t.Fatalf("newNDPSender without a link-local address: %v, want ErrNoLinkLocal naming %s", err, nodeIf)
	}
	t.Logf("error: %v", err)

	capture := tn.capture(t)
	a := tn.newAnnouncer(t)
	if err := tn.configurePB(a, burstCfg(1, 50*time.Millisecond, testVIP6)); err != nil {
		t.Fatalf("Configure must not fail for want of a link-local address: %v", err)
	}
	if err := a.Acquire(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if st := status(t, a); st.Details["na_sent"] != "1" {
		t.Errorf("na_sent = %s after Acquire, want 1", st.Details["na_sent"])
	}
	if !eventually(5*time.Second, func() bool { return len(capture.nas(testVIP6, tn.nodeMAC)) > 0 }) {
		t.Fatal("no neighbour advertisement seen")
	}
	if src := capture.nas(testVIP6, tn.nodeMAC)[0].ipSrc; src != testVIP6 {
		t.Errorf("advertisement from %s, want the vip %s", src, testVIP6)
	}
}

// An IPv6 VIP on an interface with IPv6 disabled cannot be added: Acquire
// says why, and holds nothing, not even the IPv4 VIP it could add.
func TestAcquireIPv6Disabled(t *testing.T) {
	tn := newTestNet(t)
	runIP(t, "netns", "exec", tn.nodeNS, "sysctl", "-q", "-w", "net.ipv6.conf."+nodeIf+".disable_ipv6=1")
	a := tn.newAnnouncer(t)
	if err := tn.configure(a, nodeIf, time.Hour, testVIP, testVIP6); err != nil {
		t.Fatal(err)
	}
	err := a.Acquire(context.Background(), nil)
	if err == nil || !strings.Contains(err.Error(), "IPv6 disabled") {
		t.Fatalf("Acquire = %v, want an error saying IPv6 is disabled", err)
	}
	if has, _ := tn.nodeHas(t, testVIP); has {
		t.Error("the ipv4 vip stayed on the interface after the failed Acquire")
	}
	if st := status(t, a); st.State != StateReleased {
		t.Errorf("state %q after a failed Acquire", st.State)
	}
}
