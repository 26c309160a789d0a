package config

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/keep-vip/keep-vip/checker"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// noChecks is a valid config without its checks section; tests append one.
const noChecks = `
cluster: c1
interface: eth0
vip: 198.18.0.100
ChecksInterval: 2
members:
  - id: a
    address: 198.18.0.11:20000
  - id: b
    address: 198.18.0.12:20000
  - id: c
    address: 198.18.0.13:20000
`

func parseChecks(t *testing.T, checks string) (*Config, error) {
	t.Helper()
	return Parse([]byte(noChecks+checks), nil)
}

func TestCheckTypesToCheckerConfig(t *testing.T) {
	c, err := parseChecks(t, `
checks:
  - name: port
    protocol: tcp
    address: 127.0.0.1:22
  - name: web
    protocol: http
    address: 127.0.0.1:80
    interval: 500ms
    timeout: 0.2
    rise: 2
    fall: 3
    method: HEAD
    path: /healthz?full=1
    expectStatus: [200, 204]
    bodyContains: ok
    headers:
      X-Token: abc
    host: www.example.com
  - name: api
    protocol: https
    address: 127.0.0.1:8443
    insecureSkipVerify: true
    expectStatus: 200
    required: false
  - name: dns
    protocol: udp
    address: 127.0.0.1:53
    payload: "hex:12 34 0100 0001"
    expect: "hex:1234"
  - name: echo
    protocol: udp
    address: 127.0.0.1:7
    payload: "ping\n"
    expect: pong
  - name: script
    protocol: exec
    command: /usr/local/bin/check-db
    args: [--quick, "--name=main db"]
  - name: shell
    protocol: exec
    command: test -e /run/ok && pgrep nginx
    shell: true
    Required: true
`)
	if err != nil {
		t.Fatal(err)
	}
	want := &pb.CheckerConfig{IntervalMs: 2000, Checks: []*pb.Check{
		{Name: "port", Protocol: "tcp", Address: "127.0.0.1:22", TimeoutMs: 1000, IntervalMs: 2000, Rise: 1, Fall: 1},
		{Name: "web", Protocol: "http", Address: "127.0.0.1:80", TimeoutMs: 200, IntervalMs: 500, Rise: 2, Fall: 3,
			Http: &pb.HTTPCheck{Method: "HEAD", Path: "/healthz?full=1", ExpectStatus: []int32{200, 204}, BodyContains: "ok",
				Headers: map[string]string{"x-token": "abc"}, Host: "www.example.com"}},
		{Name: "api", Protocol: "https", Address: "127.0.0.1:8443", TimeoutMs: 1000, IntervalMs: 2000, Rise: 1, Fall: 1, NotRequired: true,
			Http: &pb.HTTPCheck{ExpectStatus: []int32{200}, InsecureSkipVerify: true}},
		{Name: "dns", Protocol: "udp", Address: "127.0.0.1:53", TimeoutMs: 1000, IntervalMs: 2000, Rise: 1, Fall: 1,
			Udp: &pb.UDPCheck{Payload: []byte{0x12, 0x34, 0x01, 0x00, 0x00, 0x01}, Expect: []byte{0x12, 0x34}}},
		{Name: "echo", Protocol: "udp", Address: "127.0.0.1:7", TimeoutMs: 1000, IntervalMs: 2000, Rise: 1, Fall: 1,
			Udp: &pb.UDPCheck{Payload: []byte("ping\n"), Expect: []byte("pong")}},
		{Name: "script", Protocol: "exec", TimeoutMs: 1000, IntervalMs: 2000, Rise: 1, Fall: 1,
			Exec: &pb.ExecCheck{Command: "/usr/local/bin/check-db", Args: []string{"--quick", "--name=main db"}}},
		{Name: "shell", Protocol: "exec", TimeoutMs: 1000, IntervalMs: 2000, Rise: 1, Fall: 1,
			Exec: &pb.ExecCheck{Command: "test -e /run/ok && pgrep nginx", Shell: true}},
	}}
	got := c.CheckerConfig()
	for _, ch := range got.Checks {
		if len(ch.Options) == 0 {
			ch.Options = nil // the decoder leaves an empty map; same on the wire
		}
	}
	if !proto.Equal(got, want) {
		t.Errorf("CheckerConfig:\n got %v\nwant %v", got, want)
	}
	if err := checker.Validate(got); err != nil {
		t.Errorf("the built-in checker refuses it: %v", err)
	}
}

func TestCheckDefaults(t *testing.T) {
	c, err := Parse([]byte(strings.Replace(noChecks, "ChecksInterval: 2", "ChecksInterval: 3", 1)+"checks:\n  - {name: a, protocol: tcp, address: 127.0.0.1:1}\n  - {name: b, protocol: tcp, address: 127.0.0.1:1, interval: 1}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b := c.Checks[0], c.Checks[1]
	if a.Interval != 3*time.Second || a.Timeout != 1500*time.Millisecond || a.Rise != 1 || a.Fall != 1 || !a.IsRequired() {
		t.Errorf("defaults of a: %+v", a)
	}
	// The timeout follows the check's own interval.
	if b.Interval != time.Second || b.Timeout != 500*time.Millisecond {
		t.Errorf("defaults of b: interval %s timeout %s, want 1s and 500ms", b.Interval, b.Timeout)
	}
}

func TestCheckErrors(t *testing.T) {
	for _, tc := range []struct {
		name, checks string
		want         []string // each a line of the error
	}{
		{"unknown protocol", "- {name: a, protocol: icmp, address: 127.0.0.1:1}",
			[]string{`checks[0].protocol: "icmp" is not supported (supported: tcp, http, https, udp, exec)`}},
		{"http needs an address", "- {name: a, protocol: http}", []string{`checks[0].address: "" is missing`}},
		{"udp host name", "- {name: a, protocol: udp, address: 'dns:53'}", []string{`checks[0].address: "dns:53" must be an IP address`}},
		{"exec needs a command", "- {name: a, protocol: exec}", []string{"checks[0].command: missing"}},
		{"exec has no address", "- {name: a, protocol: exec, command: /bin/true, address: 127.0.0.1:1}",
			[]string{`checks[0].address: "127.0.0.1:1" is not used by exec checks`}},
		{"exec command with spaces", "- {name: a, protocol: exec, command: 'pgrep nginx'}",
			[]string{`checks[0].command: "pgrep nginx" has spaces; put the arguments in args, or set shell: true`}},
		{"keys of another type", "- {name: a, protocol: tcp, address: 127.0.0.1:1, path: /x, payload: p, shell: true}", []string{
			"checks[0].path: only for http and https checks, not tcp",
			"checks[0].payload: only for udp checks, not tcp",
			"checks[0].shell: only for exec checks, not tcp"}},
		{"insecureSkipVerify on http", "- {name: a, protocol: http, address: 127.0.0.1:1, insecureSkipVerify: true}",
			[]string{"checks[0].insecureSkipVerify: only for https checks, not http"}},
		{"options on a built-in type", "- {name: a, protocol: tcp, address: 127.0.0.1:1, options: {x: y}}",
			[]string{"checks[0].options: only for check types of a third-party checker"}},
		{"timeout not below ChecksInterval", "- {name: a, protocol: tcp, address: 127.0.0.1:1, timeout: 2}",
			[]string{"checks[0].timeout: 2s must be above 0 and below ChecksInterval (2s)"}},
		{"timeout not below own interval", "- {name: a, protocol: tcp, address: 127.0.0.1:1, interval: 1, timeout: 1.5}",
			[]string{"checks[0].timeout: 1.5s must be above 0 and below checks[0].interval (1s)"}},
		{"timeout below a millisecond", "- {name: a, protocol: tcp, address: 127.0.0.1:1, timeout: 100us}",
			[]string{"checks[0].timeout: 100µs must be above 0"}},
		{"negative timeout", "- {name: a, protocol: tcp, address: 127.0.0.1:1, timeout: -1}",
			[]string{"checks[0].timeout: -1s must be above 0"}},
		{"interval too short", "- {name: a, protocol: tcp, address: 127.0.0.1:1, interval: 1ms}",
			[]string{"checks[0].interval: 1ms must be at least 10ms and at most 1h0m0s"}},
		{"rise and fall", "- {name: a, protocol: tcp, address: 127.0.0.1:1, rise: -1, fall: 101}",
			[]string{"checks[0].rise: -1 must be between 1 and 100", "checks[0].fall: 101 must be between 1 and 100"}},
		{"method", "- {name: a, protocol: http, address: 127.0.0.1:1, method: 'GET /'}", []string{`checks[0].method: "GET /" is not an HTTP method`}},
		{"path", "- {name: a, protocol: http, address: 127.0.0.1:1, path: health}", []string{`checks[0].path: "health" must be a path starting with /`}},
		{"status", "- {name: a, protocol: http, address: 127.0.0.1:1, expectStatus: [200, 1000]}",
			[]string{"checks[0].expectStatus[1]: 1000 is not an HTTP status (100-599)"}},
		{"header name", "- {name: a, protocol: http, address: 127.0.0.1:1, headers: {'a b': c}}", []string{`checks[0].headers: "a b" is not a valid header name`}},
		{"header value", "- {name: a, protocol: http, address: 127.0.0.1:1, headers: {x: \"a\\r\\nb\"}}",
			[]string{"checks[0].headers.x: the value must not contain control characters"}},
		{"host", "- {name: a, protocol: https, address: 127.0.0.1:1, host: 'a/b'}", []string{`checks[0].host: "a/b" is not a host or host:port`}},
		{"hex", "- {name: a, protocol: udp, address: 127.0.0.1:1, payload: 'hex:zz'}", []string{`checks[0].payload: "hex:zz" is not hex after "hex:"`}},
		{"odd hex", "- {name: a, protocol: udp, address: 127.0.0.1:1, expect: 'hex:123'}", []string{`checks[0].expect: "hex:123" is not hex`}},
		{"unknown key", "- {name: a, protocol: tcp, address: 127.0.0.1:1, expectstatuses: [200]}", []string{"checks[0].expectstatuses: unknown key"}},
		{"required not a bool", "- {name: a, protocol: tcp, address: 127.0.0.1:1, required: maybe}", []string{"required"}},
		{"watch on udp", "- {name: a, protocol: udp, address: 127.0.0.1:1, watch: true}", []string{"checks[0].watch: only for tcp and http and https checks, not udp"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseChecks(t, "checks:\n  "+tc.checks+"\n")
			if err == nil {
				t.Fatalf("accepted, want errors %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

// With plugins.checker, the checker owns its types: protocol, address and
// options are its own, every type key is passed on, and only what means the
// same to every checker is checked here.
func TestChecksOfThirdPartyChecker(t *testing.T) {
	c, err := parseChecks(t, `
plugins:
  checker: /usr/local/libexec/my-checker
checks:
  - name: flag
    protocol: file
    address: /run/keep-vip/in-service
    options: {mode: "0644"}
    payload: "hex:00ff"
    fall: 2
`)
	if err != nil {
		t.Fatal(err)
	}
	want := &pb.Check{Name: "flag", Protocol: "file", Address: "/run/keep-vip/in-service", TimeoutMs: 1000, IntervalMs: 2000,
		Rise: 1, Fall: 2, Options: map[string]string{"mode": "0644"}, Udp: &pb.UDPCheck{Payload: []byte{0, 0xff}}}
	if got := c.CheckerConfig().Checks[0]; !proto.Equal(got, want) {
		t.Errorf("check:\n got %v\nwant %v", got, want)
	}
	_, err = parseChecks(t, "plugins: {checker: /x}\nchecks:\n  - {name: a, protocol: file, timeout: 3, rise: 0.5}\n")
	if err == nil || !strings.Contains(err.Error(), "checks[0].timeout: 3s must be above 0 and below ChecksInterval") {
		t.Errorf("error = %v, want the timeout refused", err)
	}
}

// FuzzChecksConfig feeds the checks section (and whatever else the fuzzer
// makes of it) to the loader: it must never panic, and whatever it accepts
// must be a config the checker can run: every timeout below its interval,
// and, for the built-in checker, accepted by checker.Validate. `go test`
// runs the seeds; `go test -fuzz FuzzChecksConfig ./supervisor/config/`
// explores.
func FuzzChecksConfig(f *testing.F) {
	for _, seed := range []string{
		"checks:\n  - {name: a, protocol: tcp, address: 127.0.0.1:80}\n",
		"checks:\n  - {name: a, protocol: tcp, address: 127.0.0.1:80, timeout: 1.999}\n",
		"checks:\n  - {name: a, protocol: tcp, address: 127.0.0.1:80, interval: 10ms, timeout: 9.9ms}\n",
		"checks:\n  - {name: a, protocol: tcp, address: 127.0.0.1:80, interval: 10.5ms, timeout: 10.2ms}\n",
		"checks:\n  - {name: w, protocol: https, address: '[::1]:443', path: /h, expectStatus: [200, 301], headers: {X-A: b}, host: 'h:1', insecureSkipVerify: true, rise: 3, fall: 2}\n",
		"checks:\n  - {name: u, protocol: udp, address: 127.0.0.1:53, payload: 'hex:0001 ff', expect: abc, required: false}\n",
		"checks:\n  - {name: e, protocol: exec, command: /bin/true, args: [a, b], shell: false}\n  - {name: s, protocol: exec, command: 'exit 0', shell: true}\n",
		"checks:\n  - name: x\n    protocol: http\n    address: 127.0.0.1:8080\n    timeout: 500ms\n    interval: 1e300\n",
		"checks:\n  - {name: n, protocol: tcp, address: 127.0.0.1:1, timeout: -9223372036854775808ns, rise: 99999999999999999999}\n",
		"plugins: {checker: /opt/c}\nchecks:\n  - {name: f, protocol: file, address: /tmp/x, options: {a: b}, expectStatus: 7}\n",
		"checks: []\n",
		"checks: {}\n",
		"checks:\n  - [1, 2]\n",
		"checks:\n  - {name: a, protocol: tcp, address: 127.0.0.1:80, headers: [x], args: {a: b}}\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, section string) {
		c, err := Parse([]byte(noChecks+section), nil)
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				if strings.TrimSpace(line) == "" {
					t.Fatalf("error with an empty line: %q", err)
				}
			}
			return
		}
		cfg := c.CheckerConfig()
		if cfg.IntervalMs <= 0 {
			t.Fatalf("accepted interval_ms %d", cfg.IntervalMs)
		}
		for _, ch := range cfg.Checks {
			if ch.TimeoutMs <= 0 || ch.IntervalMs <= 0 || ch.TimeoutMs >= ch.IntervalMs {
				t.Fatalf("accepted check %q with timeout_ms %d and interval_ms %d", ch.Name, ch.TimeoutMs, ch.IntervalMs)
			}
			if ch.Rise < 1 || ch.Fall < 1 {
				t.Fatalf("accepted check %q with rise %d and fall %d", ch.Name, ch.Rise, ch.Fall)
			}
		}
		if c.Plugins.Checker == "" {
			if err := checker.Validate(cfg); err != nil {
				t.Fatalf("accepted a config the built-in checker refuses: %v", err)
			}
		}
	})
}

// watch: absent is the checker's choice (on for local addresses), true and
// false are passed on.
func TestCheckWatch(t *testing.T) {
	c, err := parseChecks(t, `checks:
  - {name: auto, protocol: tcp, address: 127.0.0.1:1}
  - {name: on, protocol: http, address: 198.18.0.20:80, watch: true}
  - {name: off, protocol: tcp, address: 127.0.0.1:1, watch: false}
`)
	if err != nil {
		t.Fatal(err)
	}
	want := []pb.WatchMode{pb.WatchMode_WATCH_AUTO, pb.WatchMode_WATCH_ON, pb.WatchMode_WATCH_OFF}
	for i, ch := range c.CheckerConfig().GetChecks() {
		if ch.GetWatch() != want[i] {
			t.Errorf("%s: watch %v, want %v", ch.GetName(), ch.GetWatch(), want[i])
		}
	}
}
