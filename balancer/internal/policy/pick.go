// Package policy is the balancing policy: load balancers as configured
// and validated (config.go), the choice of a backend (pick.go: round robin,
// least connections, source hashing), backends' health from active checks
// and passive ejection (health.go), the balancer's own faults told apart
// from theirs (localfault.go), and the metrics of it all. It knows
// nothing of sockets and event loops: the tcp, udp and http handlers ask
// it for a backend and tell it how the connect went.
package policy

import (
	"math"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/keep-vip/keep-vip/rpc/limits"
)

// TriedSet marks the backends a client has already been offered, so a retry
// after a failed connect goes to another one. Up to 64 backends it is one
// word on the stack.
type TriedSet struct {
	bits uint64
	more map[int]bool
}

func (t *TriedSet) Add(i int) {
	if i < 64 {
		t.bits |= 1 << i
		return
	}
	if t.more == nil {
		t.more = map[int]bool{}
	}
	t.more[i] = true
}

func (t *TriedSet) has(i int) bool {
	if i < 64 {
		return t.bits&(1<<i) != 0
	}
	return t.more[i]
}

// HashKey is what the algorithm hashes of a client: its IP for source
// hashing, nothing otherwise.
func (lb *LoadBalancer) HashKey(client netip.AddrPort) netip.Addr {
	if lb.Algorithm == limits.AlgoSourceHash {
		return client.Addr().Unmap()
	}
	return netip.Addr{}
}

// Pick chooses the backend for a new connection or request among those up
// and not yet tried, by lb's algorithm; nil when there is none. client is
// lb.HashKey of the client's address, used by sourcehash.
func (j *Judge) Pick(lb *LoadBalancer, client netip.Addr, tried *TriedSet) *Backend {
	switch lb.Algorithm {
	case limits.AlgoLeastConn:
		return j.pickLeastConn(lb, tried)
	case limits.AlgoSourceHash:
		return j.pickSourceHash(lb, client, tried)
	}
	return j.pickRoundRobin(lb, tried)
}

func (j *Judge) eligible(lb *LoadBalancer, i int, tried *TriedSet) bool {
	return !tried.has(i) && j.available(lb.Backends[i])
}

// rrState is round robin's position: a plain counter while the weights are
// equal, nginx's smooth weighted round robin otherwise.
type rrState struct {
	next atomic.Uint64
	mu   sync.Mutex
	cur  []int
}

func (r *rrState) init(n int) { r.cur = make([]int, n) }

func (j *Judge) pickRoundRobin(lb *LoadBalancer, tried *TriedSet) *Backend {
	n := len(lb.Backends)
	if n == 0 {
		return nil
	}
	if lb.equalWeights {
		start := int((lb.rr.next.Add(1) - 1) % uint64(n))
		for k := range n {
			i := (start + k) % n
			if j.eligible(lb, i, tried) {
				if k > 0 {
					// Skipping a backend that is down or failed must not
					// send its share to the next one alone: move the
					// position past the backend chosen, as nginx does.
					lb.rr.next.Store(uint64(i + 1))
				}
				return lb.Backends[i]
			}
		}
		return nil
	}
	// Smooth weighted round robin (nginx): every eligible backend gains its
	// weight, the richest is chosen and pays the total. Over sum(weights)
	// picks each backend is chosen weight times, interleaved.
	lb.rr.mu.Lock()
	defer lb.rr.mu.Unlock()
	best, total := -1, 0
	for i, be := range lb.Backends {
		if !j.eligible(lb, i, tried) {
			continue
		}
		lb.rr.cur[i] += be.weight
		total += be.weight
		if best < 0 || lb.rr.cur[i] > lb.rr.cur[best] {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	lb.rr.cur[best] -= total
	return lb.Backends[best]
}

// pickLeastConn chooses the backend with the fewest active connections per
// unit of weight; ties go round robin so equal backends share the load.
func (j *Judge) pickLeastConn(lb *LoadBalancer, tried *TriedSet) *Backend {
	n := len(lb.Backends)
	if n == 0 {
		return nil
	}
	start := int((lb.rr.next.Add(1) - 1) % uint64(n))
	var best *Backend
	var bestActive int64
	for k := range n {
		i := (start + k) % n
		if !j.eligible(lb, i, tried) {
			continue
		}
		be := lb.Backends[i]
		a := be.State.Active.Load()
		// a/w < bestActive/bestWeight, without division.
		if best == nil || a*int64(best.weight) < bestActive*int64(be.weight) {
			best, bestActive = be, a
		}
	}
	return best
}

// pickSourceHash maps the client's address to a backend by weighted
// rendezvous hashing (highest random weight): every backend scores the
// client, the highest score wins. A backend going down or away moves only
// its own clients, each to its second choice, and the mapping is the same on
// every member because it hashes addresses, not positions.
func (j *Judge) pickSourceHash(lb *LoadBalancer, client netip.Addr, tried *TriedSet) *Backend {
	a16 := client.Unmap().As16()
	h := hashBytes(a16[:])
	var best *Backend
	bestScore := math.Inf(-1)
	for i, be := range lb.Backends {
		if !j.eligible(lb, i, tried) {
			continue
		}
		x := mix64(h ^ be.hash)
		// A uniform draw in (0, 1) turned into weight / -ln(u): the
		// largest wins with probability proportional to the weight.
		u := (float64(x>>11) + 0.5) / (1 << 53)
		score := float64(be.weight) / -math.Log(u)
		if score > bestScore {
			best, bestScore = be, score
		}
	}
	return best
}

// FNV-1a, inlined so hashing a client address allocates nothing.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func hashBytes(p []byte) uint64 {
	h := uint64(fnvOffset)
	for _, c := range p {
		h ^= uint64(c)
		h *= fnvPrime
	}
	return mix64(h)
}

func hashString(s string) uint64 { return hashBytes([]byte(s)) }

// mix64 is splitmix64's finalizer: FNV alone spreads close inputs (a /24 of
// clients) poorly over the high bits.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
