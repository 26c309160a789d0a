package balancer

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/keep-vip/keep-vip/rpc/limits"

	"github.com/prometheus/client_golang/prometheus"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
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
	DefaultEjectCooldown = 10 * time.Second
)

// Types, Algorithms and HealthTypes list the supported values.
var (
	Types       = limits.BalancerTypes
	Algorithms  = limits.Algorithms
	HealthTypes = limits.HealthTypes
)

// DefaultIdleTimeout is the idle timeout of a load balancer type.
func DefaultIdleTimeout(typ string) time.Duration { return limits.DefaultIdleTimeout(typ) }

// network is the socket family a type listens with: tcp and http load
// balancers can hand a listening socket to each other, udp ones cannot.
func network(typ string) string {
	if typ == TypeUDP {
		return "udp"
	}
	return "tcp"
}

// loadBalancer is one validated pb.LoadBalancer with its pick state. It is
// never modified once serving, except for the state its backends share
// across configs.
type loadBalancer struct {
	name          string
	bind          string
	typ           string
	algorithm     string
	proxyProtocol int
	// splice: streaming tcp directions move through pipes (reactor.Pipe).
	splice         bool
	connectTimeout time.Duration
	idleTimeout    time.Duration
	health         healthConfig
	backends       []*backend
	// equalWeights lets round robin skip its weighted arithmetic.
	equalWeights bool

	rr rrState
	// mActive counts the client connections; mNone the http answers the
	// balancer gives itself.
	mActive prometheus.Gauge
	mNone   *backendMetrics
	// lastWarn rate-limits the "no backend" warnings to one a second.
	lastWarn atomic.Int64
	// stopHealth ends this config's active checks.
	stopHealth func()
}

type healthConfig struct {
	typ        string // "" for none
	path       string
	interval   time.Duration
	timeout    time.Duration
	rise, fall int
	ejectAfter int
}

// backend is one configured backend. Its state lives in st, which a later
// config of the same load balancer takes over when the backend keeps its
// address, so health, ejection and active connections survive a reload.
type backend struct {
	idx     int
	name    string
	address string
	ap      netip.AddrPort
	weight  int
	hash    uint64 // of the address, for source hashing
	lb      *loadBalancer
	st      *backendState
	m       *backendMetrics
}

// frontendKey says which configured load balancers share a socket across
// Configure calls: those of the same socket family and bind address. Port 0
// asks for a fresh port each time, so there the name tells them apart too.
func frontendKey(lb *loadBalancer) string {
	if _, port, _ := net.SplitHostPort(lb.bind); port == "0" {
		return network(lb.typ) + " " + lb.bind + " " + lb.name
	}
	return network(lb.typ) + " " + lb.bind
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// validate checks cfg as a whole before anything is bound, and builds the
// load balancers with their defaults filled in.
func validate(cfg *pb.BalancerConfig) ([]*loadBalancer, error) {
	if cfg.GetDrainTimeoutMs() < 0 {
		return nil, fmt.Errorf("drain timeout %dms is negative", cfg.GetDrainTimeoutMs())
	}
	names := map[string]bool{}
	binds := map[string]string{}
	lbs := make([]*loadBalancer, 0, len(cfg.GetLoadBalancers()))
	for i, p := range cfg.GetLoadBalancers() {
		lb, err := build(i, p)
		if err != nil {
			return nil, err
		}
		if names[lb.name] {
			return nil, fmt.Errorf("load balancer %q is defined twice", lb.name)
		}
		names[lb.name] = true
		// Port 0 gets a fresh port per socket, so it may be shared; tcp and
		// udp sockets never clash.
		bk := network(lb.typ) + " " + lb.bind
		if other, ok := binds[bk]; ok && !strings.HasSuffix(lb.bind, ":0") {
			return nil, fmt.Errorf("load balancers %q and %q both bind %s %s", other, lb.name, network(lb.typ), lb.bind)
		}
		binds[bk] = lb.name
		lbs = append(lbs, lb)
	}
	return lbs, nil
}

func build(i int, p *pb.LoadBalancer) (*loadBalancer, error) {
	name := p.GetName()
	if name == "" {
		return nil, fmt.Errorf("load balancer #%d has no name", i+1)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("load balancer %q: %s", name, fmt.Sprintf(format, args...))
	}
	if !contains(Types, p.GetType()) {
		return nil, bad("type %q is not one of %s", p.GetType(), strings.Join(Types, ", "))
	}
	host, _, err := net.SplitHostPort(p.GetBindAddress())
	if err != nil {
		return nil, bad("bind address %q: %v", p.GetBindAddress(), err)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			return nil, bad("bind address %q: %q is not an IP address", p.GetBindAddress(), host)
		}
	}
	lb := &loadBalancer{
		name:           name,
		bind:           p.GetBindAddress(),
		typ:            p.GetType(),
		algorithm:      p.GetAlgorithm(),
		proxyProtocol:  int(p.GetProxyProtocol()),
		splice:         p.GetSplice(),
		connectTimeout: time.Duration(p.GetConnectTimeoutMs()) * time.Millisecond,
		idleTimeout:    time.Duration(p.GetIdleTimeoutMs()) * time.Millisecond,
		equalWeights:   true,
	}
	if lb.algorithm == "" {
		lb.algorithm = AlgoRoundRobin
	}
	if !contains(Algorithms, lb.algorithm) {
		return nil, bad("algorithm %q is not one of %s", lb.algorithm, strings.Join(Algorithms, ", "))
	}
	switch {
	case lb.proxyProtocol < 0 || lb.proxyProtocol > 2:
		return nil, bad("proxy protocol version %d is not 0 (off), 1 or 2", lb.proxyProtocol)
	case lb.proxyProtocol > 0 && lb.typ == TypeUDP:
		return nil, bad("the PROXY protocol is for tcp and http load balancers, not udp")
	}
	if lb.splice && lb.typ == TypeUDP {
		return nil, bad("splice is for tcp and http load balancers, not udp")
	}
	if lb.connectTimeout < 0 || lb.idleTimeout < 0 {
		return nil, bad("connect timeout %s and idle timeout %s must not be negative", lb.connectTimeout, lb.idleTimeout)
	}
	if lb.connectTimeout == 0 {
		lb.connectTimeout = DefaultConnectTimeout
	}
	if lb.idleTimeout == 0 {
		lb.idleTimeout = DefaultIdleTimeout(lb.typ)
	}
	if lb.health, err = buildHealth(p.GetHealth()); err != nil {
		return nil, bad("%v", err)
	}

	addrs, beNames := map[netip.AddrPort]int{}, map[string]int{}
	for j, pbe := range p.GetBackends() {
		be := &backend{idx: j, name: pbe.GetName(), address: pbe.GetAddress(), weight: int(pbe.GetWeight()), lb: lb}
		bbad := func(format string, args ...any) error {
			return bad("backend #%d %q: %s", j+1, pbe.GetName(), fmt.Sprintf(format, args...))
		}
		host, _, err := net.SplitHostPort(be.address)
		if err != nil {
			return nil, bbad("address %q: %v", be.address, err)
		}
		if be.ap, err = netip.ParseAddrPort(be.address); err != nil || be.ap.Port() == 0 {
			return nil, bbad("address %q: %q is not an IP address and port", be.address, host)
		}
		be.ap = netip.AddrPortFrom(be.ap.Addr().Unmap(), be.ap.Port())
		if k, dup := addrs[be.ap]; dup {
			return nil, bbad("address %s is also backend #%d's", be.address, k+1)
		}
		addrs[be.ap] = j
		if be.name == "" {
			// The name labels metrics; the address is the next best.
			be.name = be.address
		}
		if k, dup := beNames[be.name]; dup {
			return nil, bbad("name is also backend #%d's", k+1)
		}
		beNames[be.name] = j
		switch {
		case be.weight == 0:
			be.weight = 1
		case be.weight < 0 || be.weight > MaxWeight:
			return nil, bbad("weight %d is not between 1 and %d", be.weight, MaxWeight)
		}
		be.hash = hashString(be.ap.String())
		lb.backends = append(lb.backends, be)
	}
	for _, be := range lb.backends {
		if be.weight != lb.backends[0].weight {
			lb.equalWeights = false
		}
	}
	lb.rr.init(len(lb.backends))
	return lb, nil
}

func buildHealth(p *pb.BackendHealth) (healthConfig, error) {
	h := healthConfig{
		typ:        p.GetType(),
		path:       p.GetPath(),
		interval:   time.Duration(p.GetIntervalMs()) * time.Millisecond,
		timeout:    time.Duration(p.GetTimeoutMs()) * time.Millisecond,
		rise:       int(p.GetRise()),
		fall:       int(p.GetFall()),
		ejectAfter: int(p.GetEjectAfterErrors()),
	}
	if h.typ != "" && !contains(HealthTypes, h.typ) {
		return h, fmt.Errorf("health check type %q is not one of %s", h.typ, strings.Join(HealthTypes, ", "))
	}
	if h.interval < 0 || h.timeout < 0 || h.rise < 0 || h.fall < 0 || h.ejectAfter < 0 {
		return h, fmt.Errorf("health: interval %s, timeout %s, rise %d, fall %d and eject after %d errors must not be negative",
			h.interval, h.timeout, h.rise, h.fall, h.ejectAfter)
	}
	if h.interval == 0 {
		h.interval = DefaultHealthInterval
	}
	if h.timeout == 0 {
		h.timeout = min(DefaultHealthTimeout, h.interval)
	}
	if h.timeout > h.interval {
		return h, fmt.Errorf("health check timeout %s is above its interval %s", h.timeout, h.interval)
	}
	if h.rise == 0 {
		h.rise = DefaultRise
	}
	if h.fall == 0 {
		h.fall = DefaultFall
	}
	if h.typ == HealthHTTP {
		if h.path == "" {
			h.path = "/"
		}
		if !strings.HasPrefix(h.path, "/") {
			return h, fmt.Errorf("health check path %q does not start with /", h.path)
		}
	}
	return h, nil
}

// adopt takes over the state of old's backends that kept their address, so a
// reload keeps what is known of them. old is the config this one replaces on
// the same socket and type, or nil.
func (lb *loadBalancer) adopt(old *loadBalancer) {
	prev := map[netip.AddrPort]*backend{}
	if old != nil {
		for _, be := range old.backends {
			prev[be.ap] = be
		}
	}
	for _, be := range lb.backends {
		if o, ok := prev[be.ap]; ok && o.name == be.name {
			be.st = o.st
			continue
		}
		be.st = newBackendState()
	}
}
