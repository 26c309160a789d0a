package policy

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
	"github.com/keep-vip/keep-vip/rpc/limits"
)

// pool builds a load balancer of the given algorithm over backends named a,
// b, c... with the given weights, ready for pick.
func pool(t *testing.T, j *Judge, algo string, weights ...int32) *LoadBalancer {
	t.Helper()
	p := &pb.LoadBalancer{Name: "lb", BindAddress: "127.0.0.1:0", Type: limits.TypeTCP, Algorithm: algo}
	for i, w := range weights {
		p.Backends = append(p.Backends, &pb.Backend{Name: string(rune('a' + i)), Address: fmt.Sprintf("127.0.0.1:%d", 1000+i), Weight: w})
	}
	lb, err := build(0, p)
	if err != nil {
		t.Fatal(err)
	}
	lb.Adopt(nil)
	for _, be := range lb.Backends {
		be.Metrics = j.Metrics.ForBackend(lb.Name, be.Name)
	}
	return lb
}

func picks(j *Judge, lb *LoadBalancer, client netip.Addr, n int) string {
	var out []string
	for range n {
		var tried TriedSet
		be := j.Pick(lb, client, &tried)
		if be == nil {
			out = append(out, "-")
			continue
		}
		out = append(out, be.Name)
	}
	return strings.Join(out, " ")
}

func TestRoundRobinWeights(t *testing.T) {
	j := NewJudge(context.Background(), zerolog.Nop(), prometheus.NewRegistry())
	for _, tc := range []struct {
		weights []int32
		want    string
	}{
		{[]int32{1, 1, 1}, "a b c a b c a"},
		{[]int32{0, 0}, "a b a b"}, // 0 means 1
		// nginx's documented sequence for 5, 1, 1: smooth, not a a a a a b c.
		{[]int32{5, 1, 1}, "a a b a c a a"},
		{[]int32{2, 1}, "a b a a b a"},
	} {
		lb := pool(t, j, limits.AlgoRoundRobin, tc.weights...)
		if got := picks(j, lb, netip.Addr{}, len(strings.Fields(tc.want))); got != tc.want {
			t.Errorf("weights %v: %s, want %s", tc.weights, got, tc.want)
		}
	}
}

func TestPickSkipsDownAndTried(t *testing.T) {
	j := NewJudge(context.Background(), zerolog.Nop(), prometheus.NewRegistry())
	for _, algo := range limits.Algorithms {
		for _, weights := range [][]int32{{1, 1, 1}, {3, 2, 1}} {
			lb := pool(t, j, algo, weights...)
			lb.Backends[1].State.Up.Store(false)
			client := netip.MustParseAddr("192.0.2.1")
			for range 10 {
				var tried TriedSet
				seen := map[string]bool{}
				for {
					be := j.Pick(lb, client, &tried)
					if be == nil {
						break
					}
					if be.Name == "b" {
						t.Fatalf("%s %v: picked the down backend", algo, weights)
					}
					if seen[be.Name] {
						t.Fatalf("%s %v: picked %s twice for one client", algo, weights, be.Name)
					}
					seen[be.Name] = true
					tried.Add(be.Index)
				}
				if len(seen) != 2 {
					t.Fatalf("%s %v: offered %v, want a and c", algo, weights, seen)
				}
			}
			lb.Backends[0].State.Up.Store(false)
			lb.Backends[2].State.Up.Store(false)
			if got := picks(j, lb, client, 1); got != "-" {
				t.Errorf("%s: all down, picked %s", algo, got)
			}
		}
	}
}

func TestLeastConn(t *testing.T) {
	j := NewJudge(context.Background(), zerolog.Nop(), prometheus.NewRegistry())
	for _, tc := range []struct {
		weights []int32
		active  []int64
		want    string
	}{
		{[]int32{1, 1, 1}, []int64{3, 1, 2}, "b"},
		{[]int32{1, 1, 4}, []int64{1, 1, 3}, "c"}, // 3/4 < 1/1
		{[]int32{1, 1, 1}, []int64{0, 5, 5}, "a"},
	} {
		lb := pool(t, j, limits.AlgoLeastConn, tc.weights...)
		for i, a := range tc.active {
			lb.Backends[i].State.Active.Store(a)
		}
		for range 3 {
			if got := picks(j, lb, netip.Addr{}, 1); got != tc.want {
				t.Errorf("weights %v active %v: %s, want %s", tc.weights, tc.active, got, tc.want)
			}
		}
	}
	// Ties go round.
	lb := pool(t, j, limits.AlgoLeastConn, 1, 1, 1)
	if got := picks(j, lb, netip.Addr{}, 3); got != "a b c" {
		t.Errorf("all idle: %s, want a b c", got)
	}
}

func TestSourceHash(t *testing.T) {
	j := NewJudge(context.Background(), zerolog.Nop(), prometheus.NewRegistry())
	lb := pool(t, j, limits.AlgoSourceHash, 1, 1, 2)
	const clients = 20000
	first := map[netip.Addr]string{}
	count := map[string]int{}
	for i := range clients {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		got := picks(j, lb, ip, 1)
		first[ip] = got
		count[got]++
		if again := picks(j, lb, ip, 1); again != got {
			t.Fatalf("%s went to %s, then %s", ip, got, again)
		}
	}
	// Shares follow the weights 1:1:2.
	for name, want := range map[string]float64{"a": .25, "b": .25, "c": .5} {
		if share := float64(count[name]) / clients; math.Abs(share-want) > .02 {
			t.Errorf("backend %s got %.3f of the clients, want %.2f", name, share, want)
		}
	}
	// c going down moves only c's clients.
	lb.Backends[2].State.Up.Store(false)
	for ip, was := range first {
		got := picks(j, lb, ip, 1)
		if was != "c" && got != was {
			t.Fatalf("%s moved from %s to %s when c went down", ip, was, got)
		}
		if got == "c" {
			t.Fatalf("%s still on c", ip)
		}
	}
	// The same mapping in another process: hashes of addresses, not of
	// positions or a random seed.
	other := pool(t, j, limits.AlgoSourceHash, 1, 1, 2)
	for ip, was := range first {
		if got := picks(j, other, ip, 1); got != was {
			t.Fatalf("%s: %s in one pool, %s in an identical one", ip, was, got)
		}
		break
	}
}

func TestTriedSetBeyond64(t *testing.T) {
	var s TriedSet
	for _, i := range []int{0, 63, 64, 200} {
		s.Add(i)
	}
	for i := range 256 {
		want := i == 0 || i == 63 || i == 64 || i == 200
		if s.has(i) != want {
			t.Errorf("has(%d) = %v", i, !want)
		}
	}
}
