package announcer

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

// Acquire announces each VIP burst times, spacing apart, the first at once;
// with both families, one round is a gratuitous ARP request and reply per
// IPv4 VIP and a neighbour advertisement per IPv6 VIP.
func TestBurstOnAcquire(t *testing.T) {
	for _, tc := range []struct {
		name    string
		burst   int
		spacing time.Duration
	}{
		{"one", 1, 50 * time.Millisecond},
		{"four at 50ms", 4, 50 * time.Millisecond},
		{"default", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tn := newTestNet(t)
			capture := tn.capture(t)
			a := tn.newAnnouncer(t)
			vips := []netip.Addr{testVIP, testVIP2, testVIP6}
			if err := tn.configurePB(a, burstCfg(tc.burst, tc.spacing, vips...)); err != nil {
				t.Fatal(err)
			}
			burst, spacing := tc.burst, tc.spacing
			if burst == 0 {
				burst, spacing = DefaultBurstCount, DefaultBurstInterval
			}
			acquired := time.Now()
			if err := a.Acquire(context.Background(), nil); err != nil {
				t.Fatal(err)
			}
			// The first round is Acquire's own, sent before it returns.
			if st := status(t, a); st.Details["garp_sent"] != "4" || st.Details["na_sent"] != "1" {
				t.Errorf("sent by Acquire: garp_sent %s na_sent %s, want 4 and 1", st.Details["garp_sent"], st.Details["na_sent"])
			}
			// Generous: a loaded machine delays timers and the capture.
			want := time.Duration(burst-1)*spacing + 5*time.Second
			complete := func() bool {
				return len(capture.garps(testVIP, tn.nodeMAC)) >= 2*burst && len(capture.garps(testVIP2, tn.nodeMAC)) >= 2*burst &&
					len(capture.nas(testVIP6, tn.nodeMAC)) >= burst
			}
			if !eventually(want, complete) {
				t.Fatalf("within %s the peer saw %d, %d gratuitous arps and %d neighbour advertisements, want %d, %d and %d", want,
					len(capture.garps(testVIP, tn.nodeMAC)), len(capture.garps(testVIP2, tn.nodeMAC)), len(capture.nas(testVIP6, tn.nodeMAC)),
					2*burst, 2*burst, burst)
			}
			// Nothing more: the refresh is an hour away.
			time.Sleep(3*spacing + 100*time.Millisecond)
			garps, nas := capture.garps(testVIP, tn.nodeMAC), capture.nas(testVIP6, tn.nodeMAC)
			if len(garps) != 2*burst || len(nas) != burst || len(capture.garps(testVIP2, tn.nodeMAC)) != 2*burst {
				t.Errorf("after the burst: %d gratuitous arps for %s and %d advertisements, want %d and %d", len(garps), testVIP, len(nas), 2*burst, burst)
			}
			if v, _ := metricValue(t, a, metricGARPSent, nil); v != float64(4*burst) {
				t.Errorf("%s = %v, want %d", metricGARPSent, v, 4*burst)
			}
			if v, _ := metricValue(t, a, metricNASent, nil); v != float64(burst) {
				t.Errorf("%s = %v, want %d", metricNASent, v, burst)
			}

			// Requests mark the rounds; their spacing is the burst's.
			var rounds []time.Time
			for _, g := range garps {
				if g.p.Operation == 1 {
					rounds = append(rounds, g.at)
				}
			}
			if len(rounds) != burst {
				t.Fatalf("%d requests, want %d", len(rounds), burst)
			}
			t.Logf("burst %d at %s: first round %s after Acquire", burst, spacing, rounds[0].Sub(acquired).Round(time.Microsecond))
			for i := 1; i < len(rounds); i++ {
				gap := rounds[i].Sub(rounds[i-1])
				t.Logf("round %d: %s after round %d", i+1, gap.Round(time.Microsecond), i)
				// Receive times: a loaded machine delays some reads (the
				// gap after a late one looks short) and some rounds; a
				// burst sent all at once would show gaps near 0.
				if gap < spacing/2 || gap > spacing+time.Second {
					t.Errorf("round %d came %s after the one before, want about %s", i+1, gap, spacing)
				}
			}
		})
	}
}

// Once the burst is over the refresh takes over, at its own interval.
func TestBurstThenRefresh(t *testing.T) {
	tn := newTestNet(t)
	capture := tn.capture(t)
	a := tn.newAnnouncer(t)
	c := cfgFor(nodeIf, 300*time.Millisecond, testVIP)
	c.BurstCount, c.BurstIntervalMs = 3, 20
	if err := tn.configurePB(a, c); err != nil {
		t.Fatal(err)
	}
	if err := a.Acquire(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	// Rounds at 0, 20, 40ms (burst), then 340, 640, 940ms (refresh).
	time.Sleep(800 * time.Millisecond)
	var rounds []time.Time
	for _, g := range capture.garps(testVIP, tn.nodeMAC) {
		if g.p.Operation == 1 {
			rounds = append(rounds, g.at)
		}
	}
	if len(rounds) < 4 || len(rounds) > 6 {
		t.Fatalf("%d rounds in 800ms, want 3 in the burst and 1 or 2 refreshes", len(rounds))
	}
	if gap := rounds[3].Sub(rounds[2]); gap < 250*time.Millisecond {
		t.Errorf("first refresh %s after the burst's last round, want about 300ms", gap)
	}
}
