package announcer

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

func testLogger(t *testing.T) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.DebugLevel)
}

// cfgFor is a config with a burst of one: each test that counts
// announcements asks for the burst it wants.
func cfgFor(ifname string, refresh time.Duration, vips ...netip.Addr) *pb.AnnouncerConfig {
	c := &pb.AnnouncerConfig{Interface: ifname, RefreshIntervalMs: refresh.Milliseconds(), BurstCount: 1}
	for _, v := range vips {
		c.Vips = append(c.Vips, v.String())
	}
	return c
}

// metricValue is the value of the named family's series whose labels
// include want; ok is false when there is none.
func metricValue(t *testing.T, a *Announcer, name string, want map[string]string) (float64, bool) {
	t.Helper()
	fams, err := a.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	metric:
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue metric
				}
			}
			return value(m), true
		}
	}
	return 0, false
}

func value(m *dto.Metric) float64 {
	switch {
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	}
	return 0
}

func status(t *testing.T, a *Announcer) *pb.PluginStatus {
	t.Helper()
	st, err := a.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestParseConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     *pb.AnnouncerConfig
		wantErr string // substring; empty for success
		refresh time.Duration
		burst   int           // 0: the default
		spacing time.Duration // 0: the default
	}{
		{name: "ok", cfg: &pb.AnnouncerConfig{Interface: "eth0", Vips: []string{"198.18.7.100", "2001:db8::1"}, RefreshIntervalMs: 500, BurstCount: 5, BurstIntervalMs: 20}, refresh: 500 * time.Millisecond, burst: 5, spacing: 20 * time.Millisecond},
		{name: "default refresh and burst", cfg: &pb.AnnouncerConfig{Interface: "eth0", Vips: []string{"198.18.7.100"}}, refresh: DefaultRefreshInterval},
		{name: "negative burst", cfg: &pb.AnnouncerConfig{Interface: "eth0", Vips: []string{"198.18.7.100"}, BurstCount: -1}, wantErr: "burst_count -1"},
		{name: "huge burst", cfg: &pb.AnnouncerConfig{Interface: "eth0", Vips: []string{"198.18.7.100"}, BurstCount: 101}, wantErr: "burst_count 101"},
		{name: "tiny burst interval", cfg: &pb.AnnouncerConfig{Interface: "eth0", Vips: []string{"198.18.7.100"}, BurstIntervalMs: 1}, wantErr: "burst_interval_ms 1"},
		{name: "long burst interval", cfg: &pb.AnnouncerConfig{Interface: "eth0", Vips: []string{"198.18.7.100"}, BurstIntervalMs: 60000}, wantErr: "burst_interval_ms 60000"},
		{name: "nil", cfg: nil, wantErr: "no announcer config"},
		{name: "no interface", cfg: &pb.AnnouncerConfig{Vips: []string{"198.18.7.100"}}, wantErr: "no interface"},
		{name: "no vips", cfg: &pb.AnnouncerConfig{Interface: "eth0"}, wantErr: "interface eth0: no vips"},
		{name: "bad vip", cfg: &pb.AnnouncerConfig{Interface: "eth0", Vips: []string{"198.18.7.300"}}, wantErr: `vip "198.18.7.300"`},
		{name: "prefix", cfg: &pb.AnnouncerConfig{Interface: "eth0", Vips: []string{"198.18.7.100/32"}}, wantErr: `vip "198.18.7.100/32"`},
		{name: "zone", cfg: &pb.AnnouncerConfig{Interface: "eth0", Vips: []string{"2001:db8::1%eth0"}}, wantErr: `vip "2001:db8::1%eth0" is not an IP address`},
		{name: "unspecified", cfg: &pb.AnnouncerConfig{Interface: "eth0", Vips: []string{"0.0.0.0"}}, wantErr: `vip 0.0.0.0 cannot be a virtual IP`},
		{name: "multicast", cfg: &pb.AnnouncerConfig{Interface: "eth0", Vips: []string{"224.0.0.18"}}, wantErr: `vip 224.0.0.18 cannot be a virtual IP`},
		{name: "duplicate", cfg: &pb.AnnouncerConfig{Interface: "eth0", Vips: []string{"198.18.7.100", "::ffff:198.18.7.100"}}, wantErr: "vip 198.18.7.100: listed twice"},
		{name: "negative refresh", cfg: &pb.AnnouncerConfig{Interface: "eth0", Vips: []string{"198.18.7.100"}, RefreshIntervalMs: -1}, wantErr: "refresh_interval_ms -1"},
		{name: "tiny refresh", cfg: &pb.AnnouncerConfig{Interface: "eth0", Vips: []string{"198.18.7.100"}, RefreshIntervalMs: 1}, wantErr: "refresh_interval_ms 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseConfig(tc.cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.refresh != tc.refresh {
				t.Errorf("refresh = %s, want %s", got.refresh, tc.refresh)
			}
			if tc.burst == 0 {
				tc.burst = DefaultBurstCount
			}
			if tc.spacing == 0 {
				tc.spacing = DefaultBurstInterval
			}
			if got.burst != tc.burst || got.spacing != tc.spacing {
				t.Errorf("burst %d every %s, want %d every %s", got.burst, got.spacing, tc.burst, tc.spacing)
			}
			if len(got.vips) != len(tc.cfg.Vips) {
				t.Errorf("vips = %v, want %d", got.vips, len(tc.cfg.Vips))
			}
		})
	}
}

func TestAcquireBeforeConfigure(t *testing.T) {
	a := New(testLogger(t))
	if err := a.Acquire(context.Background(), nil); !errors.Is(err, ErrNotConfigured) {
		t.Fatalf("Acquire = %v, want ErrNotConfigured", err)
	}
	// Nothing configured: Release and Close have nothing to do.
	if err := a.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if st := status(t, a); st.State != StateReleased {
		t.Fatalf("state = %q", st.State)
	}
}

func TestAcquireRelease(t *testing.T) {
	for _, tc := range []struct {
		name string
		vip  netip.Addr
	}{
		{"ipv4", testVIP},
		{"ipv6", testVIP6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tn := newTestNet(t)
			a := tn.newAnnouncer(t)
			if err := tn.configure(a, nodeIf, time.Second, tc.vip); err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			// Twice: the second must be a no-op.
			for range 2 {
				if err := a.Acquire(ctx, nil); err != nil {
					t.Fatal(err)
				}
			}
			has, flags := tn.nodeHas(t, tc.vip)
			if !has {
				t.Fatalf("vip %s not on %s after Acquire", tc.vip, nodeIf)
			}
			if tc.vip.Is6() && flags&unix.IFA_F_NODAD == 0 {
				t.Errorf("ipv6 vip flags %#x lack IFA_F_NODAD", flags)
			}
			st := status(t, a)
			if st.State != StateHolding || st.Details["interface"] != nodeIf || st.Details["vips"] != tc.vip.String() {
				t.Errorf("status = %v", st)
			}
			if v, _ := metricValue(t, a, metricVIPHeld, map[string]string{"vip": tc.vip.String()}); v != 1 {
				t.Errorf("%s = %v, want 1", metricVIPHeld, v)
			}
			// A burst of one: one request and one reply, or one
			// neighbour advertisement.
			wantGARP, wantNA := "2", "0"
			if tc.vip.Is6() {
				wantGARP, wantNA = "0", "1"
			}
			if st.Details["garp_sent"] != wantGARP || st.Details["na_sent"] != wantNA {
				t.Errorf("garp_sent = %q, na_sent = %q, want %s and %s", st.Details["garp_sent"], st.Details["na_sent"], wantGARP, wantNA)
			}

			for range 2 {
				if err := a.Release(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if has, _ := tn.nodeHas(t, tc.vip); has {
				t.Fatalf("vip %s still on %s after Release", tc.vip, nodeIf)
			}
			if st := status(t, a); st.State != StateReleased {
				t.Errorf("state = %q after Release", st.State)
			}
			if v, ok := metricValue(t, a, metricVIPHeld, map[string]string{"vip": tc.vip.String()}); !ok || v != 0 {
				t.Errorf("%s = %v (present %v), want 0", metricVIPHeld, v, ok)
			}
		})
	}
}

func TestGratuitousARPSeenByPeer(t *testing.T) {
	tn := newTestNet(t)
	// Let the peer create neighbour entries from gratuitous ARP, so the test
	// also sees the announcement take effect, not just arrive.
	err := tn.peer.do(func() error {
		return os.WriteFile("/proc/sys/net/ipv4/conf/"+peerIf+"/arp_accept", []byte("1"), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	capture := tn.capture(t)
	a := tn.newAnnouncer(t)
	// A long refresh: only Acquire's own announcement can be seen here.
	if err := tn.configure(a, nodeIf, time.Hour, testVIP); err != nil {
		t.Fatal(err)
	}
	if err := a.Acquire(context.Background(), nil); err != nil {
		t.Fatal(err)
	}

	if !eventually(2*time.Second, func() bool { return len(capture.garps(testVIP, tn.nodeMAC)) >= 2 }) {
		t.Fatalf("peer saw %d gratuitous arp packets for %s from %s, want 2", len(capture.garps(testVIP, tn.nodeMAC)), testVIP, tn.nodeMAC)
	}
	var req, rep int
	for _, g := range capture.garps(testVIP, tn.nodeMAC) {
		if g.dst.String() != "ff:ff:ff:ff:ff:ff" {
			t.Errorf("%s sent to %s, want broadcast", g.p.Operation, g.dst)
		}
		switch g.p.Operation {
		case 1: // request
			req++
			if g.p.TargetHardwareAddr.String() != "00:00:00:00:00:00" {
				t.Errorf("request target mac %s, want zero", g.p.TargetHardwareAddr)
			}
		case 2: // reply
			rep++
			if g.p.TargetHardwareAddr.String() != tn.nodeMAC.String() {
				t.Errorf("reply target mac %s, want %s", g.p.TargetHardwareAddr, tn.nodeMAC)
			}
		}
	}
	if req != 1 || rep != 1 {
		t.Errorf("saw %d requests and %d replies, want 1 and 1", req, rep)
	}

	l, err := tn.peerNL.LinkByName(peerIf)
	if err != nil {
		t.Fatal(err)
	}
	var neighErr error
	ok := eventually(2*time.Second, func() bool {
		neighs, err := tn.peerNL.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
		if err != nil {
			neighErr = err
			return false
		}
		for _, n := range neighs {
			if ip, _ := netip.AddrFromSlice(n.IP); ip.Unmap() == testVIP && n.HardwareAddr.String() == tn.nodeMAC.String() {
				return true
			}
		}
		return false
	})
	if !ok {
		t.Errorf("peer has no neighbour entry %s -> %s (last error %v)", testVIP, tn.nodeMAC, neighErr)
	}
}

func TestConfigureRemovesLeftoverVIP(t *testing.T) {
	tn := newTestNet(t)
	tn.addLeftover(t, testVIP)
	tn.addLeftover(t, testVIP6)
	if has, _ := tn.nodeHas(t, testVIP); !has {
		t.Fatal("setup: leftover vip not added")
	}
	a := tn.newAnnouncer(t)
	if err := tn.configure(a, nodeIf, time.Second, testVIP, testVIP6); err != nil {
		t.Fatal(err)
	}
	for _, vip := range []netip.Addr{testVIP, testVIP6} {
		if has, _ := tn.nodeHas(t, vip); has {
			t.Errorf("leftover vip %s still on %s after Configure", vip, nodeIf)
		}
	}
	if st := status(t, a); st.State != StateReleased {
		t.Errorf("state = %q, want released", st.State)
	}
}

func TestCloseRemovesVIP(t *testing.T) {
	tn := newTestNet(t)
	a := tn.newAnnouncer(t)
	if err := tn.configure(a, nodeIf, 50*time.Millisecond, testVIP); err != nil {
		t.Fatal(err)
	}
	if err := a.Acquire(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if has, _ := tn.nodeHas(t, testVIP); !has {
		t.Fatal("vip not on the interface after Acquire")
	}
	for range 2 {
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if has, _ := tn.nodeHas(t, testVIP); has {
		t.Fatal("vip still on the interface after Close")
	}
	if st := status(t, a); st.State != StateReleased {
		t.Errorf("state = %q after Close", st.State)
	}
	// The refresh stopped with Close.
	before := status(t, a).Details["garp_sent"]
	time.Sleep(200 * time.Millisecond)
	if after := status(t, a).Details["garp_sent"]; after != before {
		t.Errorf("garp_sent went from %s to %s after Close", before, after)
	}
}

func TestConfigureErrors(t *testing.T) {
	tn := newTestNet(t)
	for _, tc := range []struct {
		name    string
		cfg     *pb.AnnouncerConfig
		wantErr string
		is      error
	}{
		{name: "missing interface", cfg: cfgFor("eth9", time.Second, testVIP), wantErr: "interface eth9: not found", is: ErrInterfaceNotFound},
		{name: "bad vip", cfg: &pb.AnnouncerConfig{Interface: nodeIf, Vips: []string{"198.18.7.100", "198.18.7.300"}}, wantErr: `vip "198.18.7.300"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := tn.newAnnouncer(t)
			// A good config held first: a bad one must leave it alone.
			if err := tn.configure(a, nodeIf, time.Second, testVIP2); err != nil {
				t.Fatal(err)
			}
			if err := a.Acquire(context.Background(), nil); err != nil {
				t.Fatal(err)
			}
			before, _ := metricValue(t, a, metricErrors, map[string]string{"op": opConfigure})
			err := tn.node.do(func() error { return a.Configure(context.Background(), tc.cfg) })
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Configure = %v, want an error containing %q", err, tc.wantErr)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("Configure = %v, want errors.Is %v", err, tc.is)
			}
			if after, _ := metricValue(t, a, metricErrors, map[string]string{"op": opConfigure}); after != before+1 {
				t.Errorf("%s{op=configure} = %v, want %v", metricErrors, after, before+1)
			}
			if has, _ := tn.nodeHas(t, testVIP2); !has || status(t, a).State != StateHolding {
				t.Errorf("a rejected config dropped the held vip")
			}
		})
	}
}

func TestReconfigureReleasesFirst(t *testing.T) {
	tn := newTestNet(t)
	a := tn.newAnnouncer(t)
	if err := tn.configure(a, nodeIf, time.Second, testVIP); err != nil {
		t.Fatal(err)
	}
	if err := a.Acquire(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if err := tn.configure(a, nodeIf, time.Second, testVIP2); err != nil {
		t.Fatal(err)
	}
	if has, _ := tn.nodeHas(t, testVIP); has {
		t.Error("old vip still on the interface after Configure")
	}
	if st := status(t, a); st.State != StateReleased || st.Details["vips"] != testVIP2.String() {
		t.Errorf("status = %v", st)
	}
	if _, ok := metricValue(t, a, metricVIPHeld, map[string]string{"vip": testVIP.String()}); ok {
		t.Error("old vip still has a held series")
	}
	if err := a.Acquire(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if has, _ := tn.nodeHas(t, testVIP2); !has {
		t.Error("new vip not on the interface after Acquire")
	}
}

// A VIP that is also an address configured with its subnet (here the node's
// own) is only ever added and removed as a host address: the subnet address
// survives Configure, Release and Close.
func TestSubnetAddressSurvives(t *testing.T) {
	tn := newTestNet(t)
	own := netip.MustParsePrefix(nodeAddr)
	ownPresent := func() bool {
		l, err := tn.nodeNL.LinkByName(nodeIf)
		if err != nil {
			t.Fatal(err)
		}
		list, err := tn.nodeNL.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		for _, na := range list {
			ones, _ := na.Mask.Size()
			if ip, _ := netip.AddrFromSlice(na.IP); ip.Unmap() == own.Addr() && ones == own.Bits() {
				return true
			}
		}
		return false
	}
	a := tn.newAnnouncer(t)
	if err := tn.configure(a, nodeIf, time.Second, own.Addr()); err != nil {
		t.Fatal(err)
	}
	if !ownPresent() {
		t.Fatal("Configure removed the node's subnet address")
	}
	if err := a.Acquire(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if has, _ := tn.nodeHas(t, own.Addr()); !has {
		t.Fatal("vip not added as a host address")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if has, _ := tn.nodeHas(t, own.Addr()); has {
		t.Error("host address still there after Close")
	}
	if !ownPresent() {
		t.Error("Close removed the node's subnet address")
	}
}

func TestRefresh(t *testing.T) {
	tn := newTestNet(t)
	capture := tn.capture(t)
	a := tn.newAnnouncer(t)
	if err := tn.configure(a, nodeIf, 100*time.Millisecond, testVIP); err != nil {
		t.Fatal(err)
	}
	if err := a.Acquire(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	first, _ := metricValue(t, a, metricGARPSent, nil)
	time.Sleep(time.Second)
	// About 10 rounds (20 packets) are due; 3 rounds prove repetition
	// without depending on a loaded machine's timing.
	if n := len(capture.garps(testVIP, tn.nodeMAC)); n < 6 {
		t.Errorf("peer saw %d gratuitous arp packets in 1s at a 100ms refresh, want at least 6", n)
	}
	later, _ := metricValue(t, a, metricGARPSent, nil)
	if first != 2 || later < first+4 {
		t.Errorf("%s went from %v to %v, want 2 then at least 6", metricGARPSent, first, later)
	}

	if err := a.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Release returns once the refresh has stopped, so what was sent by
	// then is all there will be; let the capture catch up with it first.
	sent, _ := metricValue(t, a, metricGARPSent, nil)
	if !eventually(time.Second, func() bool { return len(capture.garps(testVIP, tn.nodeMAC)) >= int(sent) }) {
		t.Fatalf("peer saw %d of %v packets sent", len(capture.garps(testVIP, tn.nodeMAC)), sent)
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(capture.garps(testVIP, tn.nodeMAC)); n != int(sent) {
		t.Errorf("peer saw %d gratuitous arp packets, %v were sent before Release", n, sent)
	}
	if after, _ := metricValue(t, a, metricGARPSent, nil); after != sent {
		t.Errorf("%s went from %v to %v after Release", metricGARPSent, sent, after)
	}
}

// A host with an entry for the VIP (it talked to the previous holder)
// points it at the new holder on the gratuitous ARP alone, without
// arp_accept: what makes a failover take effect at once on real hosts.
func TestGratuitousARPUpdatesExistingEntry(t *testing.T) {
	tn := newTestNet(t)
	tn.addStaleNeighbour(t, testVIP)
	a := tn.newAnnouncer(t)
	if err := tn.configure(a, nodeIf, time.Hour, testVIP); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := a.Acquire(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if !eventually(time.Second, func() bool { return tn.peerNeighbour(t, testVIP).String() == tn.nodeMAC.String() }) {
		t.Fatalf("peer's entry for %s is %v, want %s", testVIP, tn.peerNeighbour(t, testVIP), tn.nodeMAC)
	}
	t.Logf("peer's entry for %s moved from %s to %s %s after Acquire", testVIP, oldMAC, tn.nodeMAC, time.Since(start).Round(time.Microsecond))
}

// TestReleaseFromRenamedInterface: an interface renamed while the VIP is
// held keeps its addresses; Release finds it by its index and takes the
// VIP off it, so the VIP never stays behind under the new name.
func TestReleaseFromRenamedInterface(t *testing.T) {
	tn := newTestNet(t)
	a := tn.newAnnouncer(t)
	if err := tn.configure(a, nodeIf, time.Hour, testVIP); err != nil {
		t.Fatal(err)
	}
	if err := a.Acquire(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	const renamed = "kvren0"
	runIP(t, "-n", tn.nodeNS, "link", "set", nodeIf, "down")
	runIP(t, "-n", tn.nodeNS, "link", "set", nodeIf, "name", renamed)
	if err := a.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	if has, _ := tn.nodeHasOn(t, renamed, testVIP); has {
		t.Errorf("VIP %s still on %s (renamed from %s) after Release", testVIP, renamed, nodeIf)
	}
}
