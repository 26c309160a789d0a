// Package limits holds the defaults and bounds of the plugin configuration
// that both sides of the contract need: the supervisor fills defaults in and
// refuses a file out of bounds with the config key named, and each built-in
// plugin applies the same defaults to a field left 0 and refuses the same
// values. Keeping them here, in the contract, gives each fact one home; it
// has no dependencies, so the supervisor links no plugin library for them.
package limits

import "time"

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
