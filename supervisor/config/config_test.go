package config

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/keep-vip/keep-vip/etc"
)

const base = `
cluster: c1
interface: eth0
vip: 198.18.0.100
ChecksInterval: 2
checks:
  - name: web
    protocol: tcp
    address: 127.0.0.1:80
    timeout: 1
members:
  - id: a
    address: 198.18.0.11:20000
  - id: b
    address: 198.18.0.12:20000
  - id: c
    address: 198.18.0.13:20000
loadBalancers:
  - name: lb
    bindAddress: 0.0.0.0:8080
    type: tcp
    backends:
      - name: b1
        address: 198.18.0.11:80
`

func TestDefaultConfigLoads(t *testing.T) {
	if _, err := Parse(etc.DefaultConfig, nil); err != nil {
		t.Fatalf("etc/config.yaml: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, old, new string
		want           string // a fragment of the error, naming key and value
	}{
		{"missing vip", "vip: 198.18.0.100", "", "vip: missing"},
		{"bad vip", "vip: 198.18.0.100", "vip: 198.18.0.300", `vip: "198.18.0.300" is not an IP address`},
		{"bad member address", "198.18.0.12:20000", "198.18.0.12", `members[1].address: "198.18.0.12" is not IP:port`},
		{"host name member", "198.18.0.12:20000", "node2:20000", `members[1].address: "node2:20000" must be an IP address`},
		{"duplicate id", "id: b", "id: a", `members[1].id: "a" is also members[0].id`},
		{"duplicate address", "198.18.0.13:20000", "198.18.0.11:20000", `members[2].address: "198.18.0.11:20000" is also members[0].address`},
		{"timeout not below interval", "timeout: 1", "timeout: 2", "checks[0].timeout: 2s must be above 0 and below ChecksInterval (2s)"},
		{"unknown protocol", "protocol: tcp", "protocol: icmp", `checks[0].protocol: "icmp" is not supported`},
		{"lb udp with proxy protocol", "type: tcp", "type: udp\n    proxyProtocol: 2", `loadBalancers[0].proxyProtocol: 2 is for tcp and http load balancers, not udp`},
		{"lb type unknown", "type: tcp", "type: sctp", `loadBalancers[0].type: "sctp" is unknown`},
		{"no backends", "    backends:\n      - name: b1\n        address: 198.18.0.11:80\n", "", "loadBalancers[0].backends: missing"},
		{"unknown key", "ChecksInterval: 2", "ChecksInterval: 2\nchekcs: []", "chekcs: unknown key"},
		{"unknown nested key", "    timeout: 1", "    timeout: 1\n    tmeout: 1", "checks[0].tmeout: unknown key"},
		{"key twice", "ChecksInterval: 2", "ChecksInterval: 2\nchecksinterval: 3", "set twice"},
		{"id not a member", "cluster: c1", "cluster: c1\nid: zz", `id: "zz" is not the id of any member`},
		{"bad interval", "ChecksInterval: 2", "ChecksInterval: soon", `"soon" is neither seconds nor a duration`},
		{"unsafe lease", "cluster: c1", "cluster: c1\nraft:\n  heartbeatTimeout: 1s\n  leaderLeaseTimeout: 800ms", "raft.leaderLeaseTimeout: 800ms must be at most half"},
		{"not yaml", "cluster: c1", "cluster: [c1", "parse config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := strings.Replace(base, tc.old, tc.new, 1)
			if raw == base {
				t.Fatalf("test case did not change the config")
			}
			_, err := Parse([]byte(raw), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.want)
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if line == "" {
					t.Fatalf("empty line in error %q", err)
				}
			}
		})
	}
}

func TestCaseInsensitiveKeysAndDurations(t *testing.T) {
	raw := strings.NewReplacer("ChecksInterval: 2", "checksinterval: 1.5", "bindAddress", "BINDADDRESS", "timeout: 1", "timeout: 500ms").Replace(base)
	c, err := Parse([]byte(raw), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.ChecksInterval != 1500*time.Millisecond || c.Checks[0].Timeout != 500*time.Millisecond || c.LoadBalancers[0].BindAddress != "0.0.0.0:8080" {
		t.Fatalf("got interval %s timeout %s bind %q", c.ChecksInterval, c.Checks[0].Timeout, c.LoadBalancers[0].BindAddress)
	}
}

func TestEnvOverrides(t *testing.T) {
	c, err := Parse([]byte(base), []string{
		"KEEPVIP_CHECKSINTERVAL=3",
		"KEEPVIP_PROMETHEUS_ADDRESS=127.0.0.1:9999",
		"KEEPVIP_PROMETHEUS_ENABLED=true",
		"KEEPVIP_RAFT_HEARTBEATTIMEOUT=2s",
		"KEEPVIP_BIN_DIR=/ignored", // not a key of ours: ignored
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.ChecksInterval != 3*time.Second || c.Prometheus.Address != "127.0.0.1:9999" || !c.Prometheus.Enabled || c.Raft.HeartbeatTimeout != 2*time.Second {
		t.Fatalf("overrides not applied: %+v", c)
	}
	if _, err := Parse([]byte(base), []string{"KEEPVIP_VIP=nonsense"}); err == nil || !strings.Contains(err.Error(), `vip: "nonsense"`) {
		t.Fatalf("bad override: err = %v", err)
	}
}

func TestDefaults(t *testing.T) {
	raw := strings.Replace(base, "    timeout: 1\n", "", 1)
	c, err := Parse([]byte(raw), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != DefaultDataDir || c.Raft.HeartbeatTimeout != DefaultHeartbeatTimeout || c.Checks[0].Timeout != time.Second || c.Prometheus.Enabled {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestLocalMember(t *testing.T) {
	c, err := Parse([]byte(base), nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := func(s ...string) []netip.Addr {
		var out []netip.Addr
		for _, a := range s {
			out = append(out, netip.MustParseAddr(a))
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		id     string
		local  []netip.Addr
		want   string
		errSub string
	}{
		{"by address", "", addr("127.0.0.1", "198.18.0.12"), "b", ""},
		{"by id", "c", addr("127.0.0.1"), "c", ""},
		{"none", "", addr("127.0.0.1"), "", "no member's address is on this host"},
		{"several", "", addr("198.18.0.11", "198.18.0.12"), "", "a, b all have addresses"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.ID = tc.id
			m, err := c.LocalMember(tc.local)
			if tc.errSub != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errSub) {
					t.Fatalf("err = %v, want %q", err, tc.errSub)
				}
				return
			}
			if err != nil || m.ID != tc.want {
				t.Fatalf("got %v %v, want %s", m, err, tc.want)
			}
		})
	}
}
