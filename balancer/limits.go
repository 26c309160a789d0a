package balancer

import (
	"time"

	"github.com/keep-vip/keep-vip/balancer/internal/policy"
	"github.com/keep-vip/keep-vip/rpc/limits"
)

// The types, algorithms, defaults and bounds are the contract's
// (rpc/limits), shared with the supervisor's config.
const (
	TypeTCP  = limits.TypeTCP
	TypeUDP  = limits.TypeUDP
	TypeHTTP = limits.TypeHTTP

	AlgoRoundRobin = limits.AlgoRoundRobin
	AlgoLeastConn  = limits.AlgoLeastConn
	AlgoSourceHash = limits.AlgoSourceHash

	HealthTCP  = limits.HealthTCP
	HealthHTTP = limits.HealthHTTP

	DefaultConnectTimeout = limits.DefaultConnectTimeout
	DefaultHealthInterval = limits.DefaultHealthInterval
	DefaultHealthTimeout  = limits.DefaultHealthTimeout
	DefaultRise           = limits.DefaultHealthRise
	DefaultFall           = limits.DefaultHealthFall
	MaxWeight             = limits.MaxWeight
	// DefaultEjectCooldown is how long a backend ejected after connect
	// errors stays out when no active check can bring it back sooner.
	DefaultEjectCooldown = policy.DefaultEjectCooldown
)

// Types, Algorithms and HealthTypes list the supported values.
var (
	Types       = limits.BalancerTypes
	Algorithms  = limits.Algorithms
	HealthTypes = limits.HealthTypes
)

// DefaultIdleTimeout is the idle timeout of a load balancer type.
func DefaultIdleTimeout(typ string) time.Duration { return limits.DefaultIdleTimeout(typ) }
