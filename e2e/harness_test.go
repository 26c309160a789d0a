package e2e

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// TestHarness checks the harness itself, without keep-vip binaries: the
// namespaces are joined, backends answer the client, the Sampler sees a VIP
// held by two nodes, and the Prober measures a gap.
func TestHarness(t *testing.T) {
	requireRoot(t)
	n := NewNet(t, 2)
	client := NewClient(t, n.ClientNS)
	const anyAddrPort = 9001 // served on every address, so on the VIP too
	for i := 1; i <= 2; i++ {
		NewServerProcess(t, n.NodeNS[i-1], fmt.Sprintf("%s:%d", n.NodeIP(i), backendPort), fmt.Sprintf("server%d", i))
		NewServerProcess(t, n.NodeNS[i-1], fmt.Sprintf("0.0.0.0:%d", anyAddrPort), fmt.Sprintf("any%d", i))
	}
	for i := 1; i <= 2; i++ {
		addr := fmt.Sprintf("%s:%d", n.NodeIP(i), backendPort)
		if r, err := client.Ask(addr, 2*time.Second); err != nil || r != fmt.Sprintf("server%d", i) {
			t.Fatalf("ask %s from the client ns: %q, %v", addr, r, err)
		}
	}
	if r, err := client.Ask("127.0.0.1:1", time.Second); err == nil {
		t.Errorf("ask a closed port answered %q", r)
	}

	s, err := startSampling(n.VIP(), n.NodeNS)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	vipOn := func(i int, verb string) {
		t.Helper()
		if out, err := runIP("-n", n.NodeNS[i-1], "addr", verb, n.VIP()+"/32", "dev", nodeIfName); err != nil {
			t.Fatalf("ip addr %s VIP on node %d: %v: %s", verb, i, err, out)
		}
	}
	// The prober on the VIP: answers while node 1 holds it, a gap of about
	// 400ms while nobody does (the client's ARP entry stays valid).
	vipOn(1, "add")
	prober := client.StartProber(fmt.Sprintf("%s:%d", n.VIP(), anyAddrPort))
	defer prober.Stop()
	time.Sleep(300 * time.Millisecond)
	vipOn(1, "del")
	time.Sleep(400 * time.Millisecond)
	vipOn(1, "add")
	time.Sleep(300 * time.Millisecond)
	pr := prober.Stop()
	vipOn(2, "add") // split brain on purpose
	time.Sleep(100 * time.Millisecond)
	vipOn(1, "del")
	time.Sleep(100 * time.Millisecond)

	if addrs, err := n.Eth0Addrs(n.NodeNS[1]); err != nil || len(addrs) != 2 {
		t.Errorf("node 2 eth0 addresses %v, %v; want its own and the VIP", addrs, err)
	}
	r := s.Stop()
	t.Logf("sampler: %d samples in %s, %d violations, timeline %s", r.Samples, r.Duration.Round(time.Millisecond), len(r.Violations), r.describeTimeline())
	if r.Samples < 50 {
		t.Errorf("sampler took %d samples in %s, want one per <= 10ms", r.Samples, r.Duration)
	}
	if len(r.Violations) == 0 || !slices.Equal(r.Violations[0].Holders, []int{1, 2}) {
		t.Errorf("sampler missed the split brain: %+v", r.Violations)
	}
	if r.ReadErrors > 0 {
		t.Errorf("sampler read errors: %d (%s)", r.ReadErrors, r.FirstError)
	}
	t.Logf("prober: %s", pr)
	if !pr.Recovered || pr.LongestGap < 300*time.Millisecond || pr.LongestGap > 3*time.Second {
		t.Errorf("prober: want answers and a gap of about 400ms: %s", pr)
	}
}
