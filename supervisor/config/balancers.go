package config

import (
	"fmt"
	"strings"
	"time"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
	"github.com/keep-vip/keep-vip/rpc/limits"
)

// Defaults of the load balancer keys; the balancer's own where it has one.
const (
	// DefaultDrainTimeout is how long connections of a removed load
	// balancer, or of every one when keep-vip stops, may take to finish.
	DefaultDrainTimeout     = 5 * time.Second
	DefaultConnectTimeout   = limits.DefaultConnectTimeout
	DefaultHealthInterval   = limits.DefaultHealthInterval
	DefaultHealthTimeout    = limits.DefaultHealthTimeout
	DefaultHealthRise       = limits.DefaultHealthRise
	DefaultHealthFall       = limits.DefaultHealthFall
	DefaultEjectAfterErrors = 3
	maxWeight               = limits.MaxWeight
	maxBackendRiseFall      = 100
	maxDrainTimeout         = time.Hour
)

// Supported values, in the order error messages list them.
var (
	BalancerTypes       = limits.BalancerTypes
	BalancerAlgorithms  = limits.Algorithms
	BackendHealthChecks = limits.HealthTypes
)

// LoadBalancer is one listener in front of backends.
type LoadBalancer struct {
	Name        string `koanf:"name"`
	BindAddress string `koanf:"bindaddress"`
	// Type is tcp, udp or http.
	Type string `koanf:"type"`
	// Algorithm is roundrobin (default), leastconn or sourcehash.
	Algorithm string        `koanf:"algorithm"`
	Health    BackendHealth `koanf:"health"`
	// ProxyProtocol is the PROXY protocol version sent to backends, 0 off.
	ProxyProtocol  int           `koanf:"proxyprotocol"`
	ConnectTimeout time.Duration `koanf:"connecttimeout"`
	IdleTimeout    time.Duration `koanf:"idletimeout"`
	// Splice: a connection direction that streams moves by splice, the
	// kernel's pages handed on instead of copied (HAProxy's splice-auto).
	Splice   bool      `koanf:"splice"`
	Backends []Backend `koanf:"backends"`
}

// BackendHealth checks a load balancer's backends: actively (Type tcp or
// http, every Interval, Rise successes to come back and Fall failures to
// go) and passively (EjectAfterErrors connect errors in a row take one out).
type BackendHealth struct {
	Type     string        `koanf:"type"`
	Path     string        `koanf:"path"`
	Interval time.Duration `koanf:"interval"`
	Timeout  time.Duration `koanf:"timeout"`
	Rise     int           `koanf:"rise"`
	Fall     int           `koanf:"fall"`
	// EjectAfterErrors: nil is the default, 0 turns ejection off.
	EjectAfterErrors *int `koanf:"ejectaftererrors"`
}

// Backend is one server behind a load balancer.
type Backend struct {
	Name    string `koanf:"name"`
	Address string `koanf:"address"`
	// Weight is the backend's share, 1 to 1000; 0 means 1.
	Weight int `koanf:"weight"`
}

// fillLoadBalancers sets the defaults of every load balancer.
func (c *Config) fillLoadBalancers() {
	for i := range c.LoadBalancers {
		lb := &c.LoadBalancers[i]
		if lb.Algorithm == "" {
			lb.Algorithm = limits.AlgoRoundRobin
		}
		if lb.ConnectTimeout == 0 {
			lb.ConnectTimeout = DefaultConnectTimeout
		}
		if lb.IdleTimeout == 0 {
			lb.IdleTimeout = limits.DefaultIdleTimeout(lb.Type)
		}
		h := &lb.Health
		if h.Interval == 0 {
			h.Interval = DefaultHealthInterval
		}
		if h.Timeout == 0 {
			h.Timeout = min(DefaultHealthTimeout, h.Interval)
		}
		if h.Rise == 0 {
			h.Rise = DefaultHealthRise
		}
		if h.Fall == 0 {
			h.Fall = DefaultHealthFall
		}
		if h.Type == limits.HealthHTTP && h.Path == "" {
			h.Path = "/"
		}
		if h.EjectAfterErrors == nil {
			n := DefaultEjectAfterErrors
			h.EjectAfterErrors = &n
		}
		for j := range lb.Backends {
			if lb.Backends[j].Weight == 0 {
				lb.Backends[j].Weight = 1
			}
		}
	}
}

func (c *Config) validateLoadBalancers(bad func(string, ...any)) {
	if c.DrainTimeout < 0 || c.DrainTimeout > maxDrainTimeout {
		bad("drainTimeout: %s must be 0 (no draining) to %s", c.DrainTimeout, maxDrainTimeout)
	}
	names := map[string]int{}
	// tcp and http listen on tcp sockets; a udp one may share their port.
	binds := map[string]int{}
	for i, lb := range c.LoadBalancers {
		key := fmt.Sprintf("loadBalancers[%d]", i)
		if lb.Name == "" {
			bad("%s.name: missing", key)
		} else if j, dup := names[lb.Name]; dup {
			bad("%s.name: %q is also loadBalancers[%d].name", key, lb.Name, j)
		} else {
			names[lb.Name] = i
		}
		family := "tcp"
		if lb.Type == limits.TypeUDP {
			family = "udp"
		}
		if err := hostPort(lb.BindAddress, true); err != nil {
			bad("%s.bindAddress: %q %v", key, lb.BindAddress, err)
		} else if j, dup := binds[family+" "+lb.BindAddress]; dup {
			bad("%s.bindAddress: %q is also loadBalancers[%d].bindAddress, both %s", key, lb.BindAddress, j, family)
		} else {
			binds[family+" "+lb.BindAddress] = i
		}
		if !contains(BalancerTypes, lb.Type) {
			bad("%s.type: %q is unknown (supported: %s)", key, lb.Type, strings.Join(BalancerTypes, ", "))
		}
		if !contains(BalancerAlgorithms, lb.Algorithm) {
			bad("%s.algorithm: %q is not one of %s", key, lb.Algorithm, strings.Join(BalancerAlgorithms, ", "))
		}
		switch {
		case lb.ProxyProtocol < 0 || lb.ProxyProtocol > 2:
			bad("%s.proxyProtocol: %d is not 0 (off), 1 or 2", key, lb.ProxyProtocol)
		case lb.ProxyProtocol > 0 && lb.Type == limits.TypeUDP:
			bad("%s.proxyProtocol: %d is for tcp and http load balancers, not udp", key, lb.ProxyProtocol)
		}
		if lb.Splice && lb.Type == limits.TypeUDP {
			bad("%s.splice: true is for tcp and http load balancers, not udp", key)
		}
		if lb.ConnectTimeout < time.Millisecond {
			bad("%s.connectTimeout: %s must be at least 1ms", key, lb.ConnectTimeout)
		}
		if lb.IdleTimeout < time.Millisecond {
			bad("%s.idleTimeout: %s must be at least 1ms", key, lb.IdleTimeout)
		}
		validateBackendHealth(key+".health", lb.Health, bad)
		if len(lb.Backends) == 0 {
			bad("%s.backends: missing; a load balancer needs at least one backend", key)
		}
		bnames, baddrs := map[string]int{}, map[string]int{}
		for j, b := range lb.Backends {
			bkey := fmt.Sprintf("%s.backends[%d]", key, j)
			if b.Name == "" {
				bad("%s.name: missing", bkey)
			} else if k, dup := bnames[b.Name]; dup {
				bad("%s.name: %q is also backends[%d].name", bkey, b.Name, k)
			} else {
				bnames[b.Name] = j
			}
			if err := hostPort(b.Address, false); err != nil {
				bad("%s.address: %q %v", bkey, b.Address, err)
			} else if k, dup := baddrs[b.Address]; dup {
				bad("%s.address: %q is also backends[%d].address", bkey, b.Address, k)
			} else {
				baddrs[b.Address] = j
			}
			if b.Weight < 1 || b.Weight > maxWeight {
				bad("%s.weight: %d must be 1 to %d", bkey, b.Weight, maxWeight)
			}
		}
	}
}

func validateBackendHealth(key string, h BackendHealth, bad func(string, ...any)) {
	if h.Type != "" && !contains(BackendHealthChecks, h.Type) {
		bad("%s.type: %q is not one of %s (or empty: no active checks)", key, h.Type, strings.Join(BackendHealthChecks, ", "))
	}
	if h.Path != "" {
		if h.Type != limits.HealthHTTP {
			bad("%s.path: %q needs %s.type http", key, h.Path, key)
		} else if !strings.HasPrefix(h.Path, "/") {
			bad("%s.path: %q must start with /", key, h.Path)
		}
	}
	if h.Interval < time.Millisecond {
		bad("%s.interval: %s must be at least 1ms", key, h.Interval)
	}
	if h.Timeout < time.Millisecond || h.Timeout > h.Interval {
		bad("%s.timeout: %s must be at least 1ms and at most %s.interval (%s)", key, h.Timeout, key, h.Interval)
	}
	if h.Rise < 1 || h.Rise > maxBackendRiseFall {
		bad("%s.rise: %d must be 1 to %d", key, h.Rise, maxBackendRiseFall)
	}
	if h.Fall < 1 || h.Fall > maxBackendRiseFall {
		bad("%s.fall: %d must be 1 to %d", key, h.Fall, maxBackendRiseFall)
	}
	if h.EjectAfterErrors != nil && (*h.EjectAfterErrors < 0 || *h.EjectAfterErrors > maxBackendRiseFall) {
		bad("%s.ejectAfterErrors: %d must be 0 (off) to %d", key, *h.EjectAfterErrors, maxBackendRiseFall)
	}
}

// BalancerConfig is the balancer plugin's part of the config.
func (c *Config) BalancerConfig() *pb.BalancerConfig {
	out := &pb.BalancerConfig{DrainTimeoutMs: c.DrainTimeout.Milliseconds()}
	for _, lb := range c.LoadBalancers {
		h := lb.Health
		l := &pb.LoadBalancer{
			Name:             lb.Name,
			BindAddress:      lb.BindAddress,
			Type:             lb.Type,
			Algorithm:        lb.Algorithm,
			ProxyProtocol:    int32(lb.ProxyProtocol),
			ConnectTimeoutMs: lb.ConnectTimeout.Milliseconds(),
			IdleTimeoutMs:    lb.IdleTimeout.Milliseconds(),
			Splice:           lb.Splice,
			Health: &pb.BackendHealth{
				Type:       h.Type,
				Path:       h.Path,
				IntervalMs: h.Interval.Milliseconds(),
				TimeoutMs:  h.Timeout.Milliseconds(),
				Rise:       int32(h.Rise),
				Fall:       int32(h.Fall),
			},
		}
		if h.EjectAfterErrors != nil {
			l.Health.EjectAfterErrors = int32(*h.EjectAfterErrors)
		}
		for _, b := range lb.Backends {
			l.Backends = append(l.Backends, &pb.Backend{Name: b.Name, Address: b.Address, Weight: int32(b.Weight)})
		}
		out.LoadBalancers = append(out.LoadBalancers, l)
	}
	return out
}
