package announcer

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

func usable(ev *pb.InterfaceEvent) bool { return ev.GetUsable() }

// The interface losing carrier (peer end down) or going down itself makes
// every Watch stream report it unusable, with the reason; it coming back
// makes them report it usable again.
func TestWatchLinkState(t *testing.T) {
	tn := newTestNet(t)
	a := tn.newAnnouncer(t)
	// Two streams at once, as a supervisor and a status query would have.
	w1, w2 := startWatch(t, a), startWatch(t, a)
	if err := tn.configure(a, nodeIf, time.Hour, testVIP, testVIP6); err != nil {
		t.Fatal(err)
	}
	if err := a.Acquire(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	for _, w := range []*watchLog{w1, w2} {
		w.waitLast(t, time.Second, "usable", usable)
	}
	wantUsable := func(want float64) {
		t.Helper()
		if v, ok := metricValue(t, a, metricInterfaceUsable, map[string]string{"interface": nodeIf}); !ok || v != want {
			t.Errorf("%s{interface=%s} = %v (present %v), want %v", metricInterfaceUsable, nodeIf, v, ok, want)
		}
	}
	wantUsable(1)

	for _, step := range []struct {
		name       string
		ns, dev    string
		down       string // reason fragment
		v6Survives bool   // the kernel keeps IPv6 addresses on carrier loss, not on down
	}{
		{"peer down: no carrier", tn.peerNS, peerIf, "has no carrier", true},
		{"node down", tn.nodeNS, nodeIf, "is down", false},
	} {
		t.Run(step.name, func(t *testing.T) {
			readdsBefore := a.current().GetReadds()
			start := time.Now()
			runIP(t, "-n", step.ns, "link", "set", step.dev, "down")
			for _, w := range []*watchLog{w1, w2} {
				ev, _ := w.waitLast(t, 2*time.Second, "usable=false", func(ev *pb.InterfaceEvent) bool { return !ev.Usable })
				if !strings.Contains(ev.Reason, step.down) || !strings.Contains(ev.Reason, nodeIf) {
					t.Errorf("reason %q, want it to name %s and say %q", ev.Reason, nodeIf, step.down)
				}
			}
			t.Logf("%s: usable=false on both streams %s after ip link set down", step.name, time.Since(start).Round(time.Microsecond))
			wantUsable(0)
			if st := status(t, a); st.Details["usable"] != "false" || !strings.Contains(st.Details["reason"], step.down) {
				t.Errorf("status %v", st.Details)
			}
			// Nothing is added back while the link is unusable.
			time.Sleep(300 * time.Millisecond)
			if has, _ := tn.nodeHas(t, testVIP6); has != step.v6Survives {
				t.Errorf("ipv6 vip present %v while the link is unusable, want %v", has, step.v6Survives)
			}
			if got := a.current().GetReadds(); got != readdsBefore {
				t.Errorf("readds %d -> %d while the link was unusable", readdsBefore, got)
			}

			start = time.Now()
			runIP(t, "-n", step.ns, "link", "set", step.dev, "up")
			for _, w := range []*watchLog{w1, w2} {
				ev, _ := w.waitLast(t, 2*time.Second, "usable=true", usable)
				if ev.Reason != "" {
					t.Errorf("usable with reason %q", ev.Reason)
				}
			}
			t.Logf("%s: usable=true on both streams %s after ip link set up", step.name, time.Since(start).Round(time.Microsecond))
			wantUsable(1)
			// Still held: every VIP is on the interface again.
			if !eventually(time.Second, func() bool {
				h4, _ := tn.nodeHas(t, testVIP)
				h6, _ := tn.nodeHas(t, testVIP6)
				return h4 && h6
			}) {
				t.Error("vips not all back on the interface once usable again")
			}
		})
	}

	t.Run("interface gone", func(t *testing.T) {
		runIP(t, "-n", tn.nodeNS, "link", "del", nodeIf)
		ev, _ := w1.waitLast(t, 2*time.Second, "usable=false", func(ev *pb.InterfaceEvent) bool { return !ev.Usable })
		if !strings.Contains(ev.Reason, "gone") {
			t.Errorf("reason %q, want gone", ev.Reason)
		}
	})
}

// A VIP someone else removes while it is held is added back at once,
// announced again, counted in the metric and on Watch; one this announcer
// removes itself (Release) stays removed.
func TestReaddAfterExternalDelete(t *testing.T) {
	tn := newTestNet(t)
	capture := tn.capture(t)
	a := tn.newAnnouncer(t)
	w := startWatch(t, a)
	vips := []netip.Addr{testVIP, testVIP6}
	if err := tn.configurePB(a, burstCfg(1, 50*time.Millisecond, vips...)); err != nil {
		t.Fatal(err)
	}
	if err := a.Acquire(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if !eventually(time.Second, func() bool {
		return len(capture.garps(testVIP, tn.nodeMAC)) == 2 && len(capture.nas(testVIP6, tn.nodeMAC)) == 1
	}) {
		t.Fatal("no announcement on acquire")
	}

	l := tn.nodeLink(t)
	for i, vip := range vips {
		start := time.Now()
		if err := tn.nodeNL.AddrDel(l, hostAddr(vip)); err != nil {
			t.Fatal(err)
		}
		if !eventually(2*time.Second, func() bool { has, _ := tn.nodeHas(t, vip); return has }) {
			t.Fatalf("vip %s not added back", vip)
		}
		t.Logf("vip %s back on the interface %s after it was deleted", vip, time.Since(start).Round(time.Microsecond))
		// The metric is counted just after the address is back.
		if !eventually(time.Second, func() bool {
			v, _ := metricValue(t, a, metricReadds, map[string]string{"vip": vip.String()})
			return v == 1
		}) {
			v, _ := metricValue(t, a, metricReadds, map[string]string{"vip": vip.String()})
			t.Errorf("%s{vip=%s} = %v, want 1", metricReadds, vip, v)
		}
		w.waitLast(t, time.Second, "the readd", func(ev *pb.InterfaceEvent) bool { return ev.Usable && ev.Readds == uint64(i+1) })
	}
	if st := status(t, a); st.Details["readds"] != "2" || st.State != StateHolding {
		t.Errorf("status %s %v", st.State, st.Details)
	}
	// Each readd started a new burst (of one round, here: all VIPs).
	if !eventually(time.Second, func() bool {
		return len(capture.garps(testVIP, tn.nodeMAC)) >= 4 && len(capture.nas(testVIP6, tn.nodeMAC)) >= 2
	}) {
		t.Errorf("no announcement after the readds: %d gratuitous arps, %d advertisements", len(capture.garps(testVIP, tn.nodeMAC)), len(capture.nas(testVIP6, tn.nodeMAC)))
	}

	if err := a.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	for _, vip := range vips {
		if has, _ := tn.nodeHas(t, vip); has {
			t.Errorf("vip %s back after Release", vip)
		}
	}
	if got := w.last().GetReadds(); got != 2 {
		t.Errorf("readds %d after Release, want still 2", got)
	}
}

// The Watch stream of an announcer whose Configure has not run yet, or
// whose config changes, follows along; ending the stream's context ends it.
func TestWatchAcrossConfigure(t *testing.T) {
	tn := newTestNet(t)
	a := tn.newAnnouncer(t)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	sent := make(chan *pb.InterfaceEvent, 16)
	go func() {
		errc <- a.Watch(ctx, func(ev *pb.InterfaceEvent) error { sent <- ev; return nil })
	}()
	select {
	case ev := <-sent:
		if !ev.Usable {
			t.Errorf("first event before Configure: %v", ev)
		}
	case <-time.After(time.Second):
		t.Fatal("no event at once")
	}
	runIP(t, "-n", tn.peerNS, "link", "set", peerIf, "down")
	if err := tn.configure(a, nodeIf, time.Hour, testVIP); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-sent:
		if ev.Usable {
			t.Errorf("after Configure on a link without carrier: %v", ev)
		}
	case <-time.After(time.Second):
		t.Fatal("no event after Configure")
	}
	cancel()
	select {
	case err := <-errc:
		if err != context.Canceled {
			t.Errorf("Watch = %v, want context.Canceled", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Watch did not end with its context")
	}
}
