// Package limits holds the defaults and bounds of the plugin configuration
// that both sides of the contract need: the supervisor fills defaults in and
// refuses a file out of bounds with the config key named, and each built-in
// plugin applies the same defaults to a field left 0 and refuses the same
// values. Keeping them here, in the contract, gives each fact one home; it
// has no dependencies, so the supervisor links no plugin library for them.
package limits

import (
	"fmt"
	"net/netip"
	"time"
)

// ---------------------------------------------------------------- elector

// Raft timing (elector/timing.go says why these values).
const (
	// DefaultHeartbeatTimeout is tuned for a LAN: a lost leader is replaced
	// about 300ms after its last heartbeat.
	DefaultHeartbeatTimeout = 300 * time.Millisecond
	// DefaultPreemptDelay is how long a higher-priority member must have
	// been healthy and caught up before leadership is moved to it.
	DefaultPreemptDelay = 10 * time.Second
)

// DefaultElectionTimeout is the election timeout for a heartbeat timeout.
func DefaultElectionTimeout(heartbeat time.Duration) time.Duration { return heartbeat }

// DefaultLeaderLeaseTimeout is the lease for a heartbeat timeout: 2/5 of it,
// below the hb/2 maximum so the safety margin is 0.4·hb.
func DefaultLeaderLeaseTimeout(heartbeat time.Duration) time.Duration { return heartbeat * 2 / 5 }

// MaxLeaderLeaseTimeout is the longest lease for a heartbeat timeout: a
// leader cut off from its quorum steps down before another can be elected.
func MaxLeaderLeaseTimeout(heartbeat time.Duration) time.Duration { return heartbeat / 2 }

// ---------------------------------------------------------------- announcer

// The burst on acquire, used when the config leaves burst_count or
// burst_interval_ms at 0: one announcement can be lost on a busy segment or
// arrive while a switch port is still learning; three, 100ms apart, reach
// every neighbour within a fraction of a second without being a storm.
const (
	DefaultBurstCount    = 3
	DefaultBurstInterval = 100 * time.Millisecond
	MaxBurstCount        = 100
	MinBurstInterval     = 10 * time.Millisecond
	MaxBurstInterval     = 10 * time.Second
)

// ---------------------------------------------------------------- balancer

// Load balancer types.
const (
	TypeTCP  = "tcp"
	TypeUDP  = "udp"
	TypeHTTP = "http"
)

// Algorithms, the first the default.
const (
	AlgoRoundRobin = "roundrobin"
	AlgoLeastConn  = "leastconn"
	AlgoSourceHash = "sourcehash"
)

// Active backend health check types.
const (
	HealthTCP  = "tcp"
	HealthHTTP = "http"
)

// Defaults of the balancer's pb fields left 0, and bounds.
const (
	// DefaultConnectTimeout bounds the connect to one backend; one that does
	// not answer within it is skipped for the next one.
	DefaultConnectTimeout = 2 * time.Second
	// Idle timeouts by type: a tcp connection with no byte either way, a udp
	// session with no datagram either way, an http backend that sends no
	// response header (answered 504) and an idle client keep-alive.
	DefaultIdleTimeoutTCP  = 10 * time.Minute
	DefaultIdleTimeoutUDP  = 30 * time.Second
	DefaultIdleTimeoutHTTP = 60 * time.Second
	DefaultHealthInterval  = 2 * time.Second
	DefaultHealthTimeout   = time.Second
	DefaultHealthRise      = 2
	DefaultHealthFall      = 3
	// MaxWeight bounds backend weights.
	MaxWeight = 1000
)

// BalancerTypes, Algorithms and HealthTypes list the supported values, in
// the order error messages list them.
var (
	BalancerTypes = []string{TypeTCP, TypeUDP, TypeHTTP}
	Algorithms    = []string{AlgoRoundRobin, AlgoLeastConn, AlgoSourceHash}
	HealthTypes   = []string{HealthTCP, HealthHTTP}
)

// DefaultIdleTimeout is the idle timeout of a load balancer type.
func DefaultIdleTimeout(typ string) time.Duration {
	switch typ {
	case TypeUDP:
		return DefaultIdleTimeoutUDP
	case TypeHTTP:
		return DefaultIdleTimeoutHTTP
	}
	return DefaultIdleTimeoutTCP
}

// ParseVIP accepts what a VIP may be: a plain unicast IPv4 or IPv6 address
// that can be put on an interface as a host address and announced. Prefixes,
// zones and addresses no one could reach through us are refused here rather
// than half-working later. An IPv4-mapped IPv6 address is its IPv4 address.
// The supervisor checks the file with it and the announcer its config.
func ParseVIP(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	}
	a = a.Unmap()
	if a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() ||
		a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return netip.Addr{}, fmt.Errorf("%s cannot be a virtual IP (unspecified, loopback, multicast, link-local or broadcast)", s)
	}
	return a, nil
}

// RaftTimingKeys are the names each side gives the three Raft timeouts:
// the supervisor's config keys, the elector's pb fields.
type RaftTimingKeys struct{ Heartbeat, Election, Lease string }

// MinRaftTimeout is the shortest of each Raft timeout.
const MinRaftTimeout = 10 * time.Millisecond

// CheckRaftTimings checks the three timeouts (after defaults), naming each
// by its key (the supervisor's config key or the elector's pb field): the rules
// live here once, each side words the key. The first problem is returned.
func CheckRaftTimings(heartbeat, election, lease time.Duration, key RaftTimingKeys) error {
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{key.Heartbeat, heartbeat}, {key.Election, election}, {key.Lease, lease}} {
		if d.v < MinRaftTimeout {
			return fmt.Errorf("%s: %s must be at least %s", d.key, d.v, MinRaftTimeout)
		}
	}
	// Why half (elector/timing.go): the leader steps down within one lease
	// (plus 10ms) after it last heard from a quorum, and that hearing can be
	// late by one transport timeout (heartbeat/4); a follower votes for
	// another no sooner than one heartbeat timeout after it last heard from
	// the leader.
	if lease > MaxLeaderLeaseTimeout(heartbeat) {
		return fmt.Errorf("%s: %s must be at most half of %s (%s), so a leader cut off from its quorum steps down before another can be elected",
			key.Lease, lease, key.Heartbeat, heartbeat)
	}
	if election < heartbeat {
		return fmt.Errorf("%s: %s must be at least %s (%s)", key.Election, election, key.Heartbeat, heartbeat)
	}
	return nil
}
