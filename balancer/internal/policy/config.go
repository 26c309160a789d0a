package policy

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

// DefaultEjectCooldown is how long a backend ejected after connect errors
// stays out when no active check can bring it back sooner.
const DefaultEjectCooldown = 10 * time.Second

// Network is the socket family a type listens with: tcp and http load
// balancers can hand a listening socket to each other, udp ones cannot.
func Network(typ string) string {
	if typ == limits.TypeUDP {
		return "udp"
	}
	return "tcp"
}

// LoadBalancer is one validated pb.LoadBalancer with its pick state. It is
// never modified once serving, except for the state its backends share
// across configs.
type LoadBalancer struct {
	Name          string
	Bind          string
	Type          string
	Algorithm     string
	ProxyProtocol int
	// Splice: streaming tcp directions move through pipes (reactor.Pipe).
	Splice         bool
	ConnectTimeout time.Duration
	IdleTimeout    time.Duration
	health         healthConfig
	Backends       []*Backend
	// equalWeights lets round robin skip its weighted arithmetic.
	equalWeights bool

	rr rrState
	// Clients counts the client connections; OwnAnswers the http answers
	// the balancer gives itself.
	Clients    prometheus.Gauge
	OwnAnswers *BackendMetrics
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

// Backend is one configured backend. Its state lives in State, which a
// later config of the same load balancer takes over when the backend keeps its
// address, so health, ejection and active connections survive a reload.
type Backend struct {
	Index    int
	Name     string
	Address  string
	AddrPort netip.AddrPort
	weight   int
	hash     uint64 // of the address, for source hashing
	lb       *LoadBalancer
	State    *BackendState
	Metrics  *BackendMetrics
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// Validate checks cfg as a whole before anything is bound, and builds the
// load balancers with their defaults filled in.
func Validate(cfg *pb.BalancerConfig) ([]*LoadBalancer, error) {
	if cfg.GetDrainTimeoutMs() < 0 {
		return nil, fmt.Errorf("drain timeout %dms is negative", cfg.GetDrainTimeoutMs())
	}
	names := map[string]bool{}
	binds := map[string]string{}
	lbs := make([]*LoadBalancer, 0, len(cfg.GetLoadBalancers()))
	for i, p := range cfg.GetLoadBalancers() {
		lb, err := build(i, p)
		if err != nil {
			return nil, err
		}
		if names[lb.Name] {
			return nil, fmt.Errorf("load balancer %q is defined twice", lb.Name)
		}
		names[lb.Name] = true
		// Port 0 gets a fresh port per socket, so it may be shared; tcp and
		// udp sockets never clash.
		bk := Network(lb.Type) + " " + lb.Bind
		if other, ok := binds[bk]; ok && !strings.HasSuffix(lb.Bind, ":0") {
			return nil, fmt.Errorf("load balancers %q and %q both bind %s %s", other, lb.Name, Network(lb.Type), lb.Bind)
		}
		binds[bk] = lb.Name
		lbs = append(lbs, lb)
	}
	return lbs, nil
}

func build(i int, p *pb.LoadBalancer) (*LoadBalancer, error) {
	name := p.GetName()
	if name == "" {
		return nil, fmt.Errorf("load balancer #%d has no name", i+1)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("load balancer %q: %s", name, fmt.Sprintf(format, args...))
	}
	if !contains(limits.BalancerTypes, p.GetType()) {
		return nil, bad("type %q is not one of %s", p.GetType(), strings.Join(limits.BalancerTypes, ", "))
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
	lb := &LoadBalancer{
		Name:           name,
		Bind:           p.GetBindAddress(),
		Type:           p.GetType(),
		Algorithm:      p.GetAlgorithm(),
		ProxyProtocol:  int(p.GetProxyProtocol()),
		Splice:         p.GetSplice(),
		ConnectTimeout: time.Duration(p.GetConnectTimeoutMs()) * time.Millisecond,
		IdleTimeout:    time.Duration(p.GetIdleTimeoutMs()) * time.Millisecond,
		equalWeights:   true,
	}
	if lb.Algorithm == "" {
		lb.Algorithm = limits.AlgoRoundRobin
	}
	if !contains(limits.Algorithms, lb.Algorithm) {
		return nil, bad("algorithm %q is not one of %s", lb.Algorithm, strings.Join(limits.Algorithms, ", "))
	}
	switch {
	case lb.ProxyProtocol < 0 || lb.ProxyProtocol > 2:
		return nil, bad("proxy protocol version %d is not 0 (off), 1 or 2", lb.ProxyProtocol)
	case lb.ProxyProtocol > 0 && lb.Type == limits.TypeUDP:
		return nil, bad("the PROXY protocol is for tcp and http load balancers, not udp")
	}
	if lb.Splice && lb.Type == limits.TypeUDP {
		return nil, bad("splice is for tcp and http load balancers, not udp")
	}
	if lb.ConnectTimeout < 0 || lb.IdleTimeout < 0 {
		return nil, bad("connect timeout %s and idle timeout %s must not be negative", lb.ConnectTimeout, lb.IdleTimeout)
	}
	if lb.ConnectTimeout == 0 {
		lb.ConnectTimeout = limits.DefaultConnectTimeout
	}
	if lb.IdleTimeout == 0 {
		lb.IdleTimeout = limits.DefaultIdleTimeout(lb.Type)
	}
	if lb.health, err = buildHealth(p.GetHealth()); err != nil {
		return nil, bad("%v", err)
	}

	addrs, beNames := map[netip.AddrPort]int{}, map[string]int{}
	for j, pbe := range p.GetBackends() {
		be := &Backend{Index: j, Name: pbe.GetName(), Address: pbe.GetAddress(), weight: int(pbe.GetWeight()), lb: lb}
		bbad := func(format string, args ...any) error {
			return bad("backend #%d %q: %s", j+1, pbe.GetName(), fmt.Sprintf(format, args...))
		}
		host, _, err := net.SplitHostPort(be.Address)
		if err != nil {
			return nil, bbad("address %q: %v", be.Address, err)
		}
		if be.AddrPort, err = netip.ParseAddrPort(be.Address); err != nil || be.AddrPort.Port() == 0 {
			return nil, bbad("address %q: %q is not an IP address and port", be.Address, host)
		}
		be.AddrPort = netip.AddrPortFrom(be.AddrPort.Addr().Unmap(), be.AddrPort.Port())
		if k, dup := addrs[be.AddrPort]; dup {
			return nil, bbad("address %s is also backend #%d's", be.Address, k+1)
		}
		addrs[be.AddrPort] = j
		if be.Name == "" {
			// The name labels metrics; the address is the next best.
			be.Name = be.Address
		}
		if k, dup := beNames[be.Name]; dup {
			return nil, bbad("name is also backend #%d's", k+1)
		}
		beNames[be.Name] = j
		switch {
		case be.weight == 0:
			be.weight = 1
		case be.weight < 0 || be.weight > limits.MaxWeight:
			return nil, bbad("weight %d is not between 1 and %d", be.weight, limits.MaxWeight)
		}
		be.hash = hashString(be.AddrPort.String())
		lb.Backends = append(lb.Backends, be)
	}
	for _, be := range lb.Backends {
		if be.weight != lb.Backends[0].weight {
			lb.equalWeights = false
		}
	}
	lb.rr.init(len(lb.Backends))
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
	if h.typ != "" && !contains(limits.HealthTypes, h.typ) {
		return h, fmt.Errorf("health check type %q is not one of %s", h.typ, strings.Join(limits.HealthTypes, ", "))
	}
	if h.interval < 0 || h.timeout < 0 || h.rise < 0 || h.fall < 0 || h.ejectAfter < 0 {
		return h, fmt.Errorf("health: interval %s, timeout %s, rise %d, fall %d and eject after %d errors must not be negative",
			h.interval, h.timeout, h.rise, h.fall, h.ejectAfter)
	}
	if h.interval == 0 {
		h.interval = limits.DefaultHealthInterval
	}
	if h.timeout == 0 {
		h.timeout = min(limits.DefaultHealthTimeout, h.interval)
	}
	if h.timeout > h.interval {
		return h, fmt.Errorf("health check timeout %s is above its interval %s", h.timeout, h.interval)
	}
	if h.rise == 0 {
		h.rise = limits.DefaultHealthRise
	}
	if h.fall == 0 {
		h.fall = limits.DefaultHealthFall
	}
	if h.typ == limits.HealthHTTP {
		if h.path == "" {
			h.path = "/"
		}
		if !strings.HasPrefix(h.path, "/") {
			return h, fmt.Errorf("health check path %q does not start with /", h.path)
		}
	}
	return h, nil
}

// Adopt takes over the state of old's backends that kept their address, so a
// reload keeps what is known of them. old is the config this one replaces on
// the same socket and type, or nil.
func (lb *LoadBalancer) Adopt(old *LoadBalancer) {
	prev := map[netip.AddrPort]*Backend{}
	if old != nil {
		for _, be := range old.Backends {
			prev[be.AddrPort] = be
		}
	}
	for _, be := range lb.Backends {
		if o, ok := prev[be.AddrPort]; ok && o.Name == be.Name {
			be.State = o.State
			continue
		}
		be.State = newBackendState()
	}
}
