package config

import (
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/keep-vip/keep-vip/balancer"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
	"github.com/keep-vip/keep-vip/rpc/limits"
)

// lbBase is base with the load balancer's own lines replaced by lbYAML.
func lbBase(lbYAML string) string {
	i := strings.Index(base, "loadBalancers:\n")
	return base[:i] + "loadBalancers:\n" + lbYAML
}

const fullLB = `  - name: web
    bindAddress: 0.0.0.0:80
    type: http
    algorithm: leastconn
    proxyProtocol: 1
    connectTimeout: 500ms
    idleTimeout: 30
    splice: true
    health:
      type: http
      path: /healthz
      interval: 1
      timeout: 200ms
      rise: 3
      fall: 4
      ejectAfterErrors: 0
    backends:
      - name: b1
        address: 198.18.0.11:8080
        weight: 3
      - name: b2
        address: 198.18.0.12:8080
  - name: dns
    bindAddress: 0.0.0.0:53
    type: udp
    backends:
      - name: d1
        address: 198.18.0.11:53
  - name: dnstcp
    bindAddress: 0.0.0.0:53
    type: tcp
    backends:
      - name: d1
        address: 198.18.0.11:53
drainTimeout: 20s
`

func TestBalancerConfig(t *testing.T) {
	c, err := Parse([]byte(lbBase(fullLB)), nil)
	if err != nil {
		t.Fatal(err)
	}
	got := c.BalancerConfig()
	want := &pb.BalancerConfig{
		DrainTimeoutMs: 20000,
		LoadBalancers: []*pb.LoadBalancer{{
			Name: "web", BindAddress: "0.0.0.0:80", Type: "http", Algorithm: "leastconn", ProxyProtocol: 1,
			ConnectTimeoutMs: 500, IdleTimeoutMs: 30000, Splice: true,
			Health: &pb.BackendHealth{Type: "http", Path: "/healthz", IntervalMs: 1000, TimeoutMs: 200, Rise: 3, Fall: 4, EjectAfterErrors: 0},
			Backends: []*pb.Backend{
				{Name: "b1", Address: "198.18.0.11:8080", Weight: 3},
				{Name: "b2", Address: "198.18.0.12:8080", Weight: 1},
			},
		}, {
			// Defaults filled in.
			Name: "dns", BindAddress: "0.0.0.0:53", Type: "udp", Algorithm: "roundrobin",
			ConnectTimeoutMs: limits.DefaultConnectTimeout.Milliseconds(), IdleTimeoutMs: limits.DefaultIdleTimeoutUDP.Milliseconds(),
			Health: &pb.BackendHealth{
				IntervalMs: DefaultHealthInterval.Milliseconds(), TimeoutMs: DefaultHealthTimeout.Milliseconds(),
				Rise: DefaultHealthRise, Fall: DefaultHealthFall, EjectAfterErrors: DefaultEjectAfterErrors,
			},
			Backends: []*pb.Backend{{Name: "d1", Address: "198.18.0.11:53", Weight: 1}},
		}},
	}
	if len(got.LoadBalancers) != 3 {
		t.Fatalf("%d load balancers", len(got.LoadBalancers))
	}
	got.LoadBalancers = got.LoadBalancers[:2]
	if !proto.Equal(got, want) {
		t.Errorf("BalancerConfig =\n%v\nwant\n%v", got, want)
	}
	// What the config accepts, the balancer accepts.
	b := balancer.New(zerolog.Nop())
	defer b.Close()
	cfg := c.BalancerConfig()
	for _, lb := range cfg.LoadBalancers {
		lb.BindAddress = "127.0.0.1:0"
	}
	if err := b.Configure(t.Context(), cfg); err != nil {
		t.Errorf("the balancer refuses the config: %v", err)
	}
	if c.DrainTimeout != 20*time.Second {
		t.Errorf("drainTimeout = %s", c.DrainTimeout)
	}
}

func TestDrainTimeoutDefault(t *testing.T) {
	c, err := Parse([]byte(base), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.DrainTimeout != DefaultDrainTimeout {
		t.Errorf("drainTimeout = %s, want %s", c.DrainTimeout, DefaultDrainTimeout)
	}
}

func TestLoadBalancerErrors(t *testing.T) {
	for _, tc := range []struct{ name, old, new, want string }{
		{"algorithm", "algorithm: leastconn", "algorithm: fastest", `loadBalancers[0].algorithm: "fastest" is not one of roundrobin, leastconn, sourcehash`},
		{"proxy protocol", "proxyProtocol: 1", "proxyProtocol: 3", `loadBalancers[0].proxyProtocol: 3 is not 0 (off), 1 or 2`},
		{"connect timeout", "connectTimeout: 500ms", "connectTimeout: -1s", `loadBalancers[0].connectTimeout: -1s must be at least 1ms`},
		{"health type", "      type: http\n", "      type: icmp\n", `loadBalancers[0].health.type: "icmp" is not one of tcp, http`},
		{"health path", "path: /healthz", "path: healthz", `loadBalancers[0].health.path: "healthz" must start with /`},
		{"health path without http", "      type: http\n", "      type: tcp\n", `loadBalancers[0].health.path: "/healthz" needs loadBalancers[0].health.type http`},
		{"health timeout", "timeout: 200ms", "timeout: 2s", `loadBalancers[0].health.timeout: 2s must be at least 1ms and at most loadBalancers[0].health.interval (1s)`},
		{"rise", "rise: 3", "rise: 101", `loadBalancers[0].health.rise: 101 must be 1 to 100`},
		{"fall", "fall: 4", "fall: -1", `loadBalancers[0].health.fall: -1 must be 1 to 100`},
		{"eject", "ejectAfterErrors: 0", "ejectAfterErrors: -2", `loadBalancers[0].health.ejectAfterErrors: -2 must be 0 (off) to 100`},
		{"weight", "weight: 3", "weight: 1001", `loadBalancers[0].backends[0].weight: 1001 must be 1 to 1000`},
		{"duplicate backend", "198.18.0.12:8080", "198.18.0.11:8080", `loadBalancers[0].backends[1].address: "198.18.0.11:8080" is also backends[0].address`},
		{"same port same family", "    bindAddress: 0.0.0.0:53\n    type: tcp", "    bindAddress: 0.0.0.0:80\n    type: tcp",
			`loadBalancers[2].bindAddress: "0.0.0.0:80" is also loadBalancers[0].bindAddress, both tcp`},
		{"splice on udp", "    type: udp\n", "    type: udp\n    splice: true\n", `loadBalancers[1].splice: true is for tcp and http load balancers, not udp`},
		{"splice not a boolean", "splice: true", "splice: sometimes", `loadbalancers[0].splice`},
		{"drain", "drainTimeout: 20s", "drainTimeout: -1s", `drainTimeout: -1s must be 0 (no draining) to 1h0m0s`},
		{"unknown key", "rise: 3", "rsie: 3", `loadBalancers[0].health.rsie: unknown key`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := lbBase(fullLB)
			if !strings.Contains(raw, tc.old) {
				t.Fatalf("test case does not change the config")
			}
			_, err := Parse([]byte(strings.Replace(raw, tc.old, tc.new, 1)), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}
