package config

import (
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// CheckProtocols are the built-in check types, in the order error messages
// list them.
var CheckProtocols = []string{"tcp", "http", "https", "udp", "exec"}

// Defaults and bounds of a check's own settings. One failed run gives up
// the VIP and one passed run takes a member back, as the original keep-vip
// did; raise fall to ride out single blips, rise to keep a flapping service
// from pulling a member back in too soon.
const (
	DefaultCheckRise = 1
	DefaultCheckFall = 1
	maxRiseFall      = 100
	// minCheckInterval keeps intervals and timeouts whole milliseconds
	// apart, which is what the checker gets (interval_ms, timeout_ms).
	minCheckInterval = 10 * time.Millisecond
	// hexPrefix starts a udp payload or expect given as hex.
	hexPrefix = "hex:"
)

// Check is one local health check. Besides the settings every check has,
// each type has its own keys; a key of another type is an error.
type Check struct {
	Name     string        `koanf:"name"`
	Protocol string        `koanf:"protocol"`
	Address  string        `koanf:"address"`
	Timeout  time.Duration `koanf:"timeout"`
	// Interval defaults to ChecksInterval.
	Interval time.Duration `koanf:"interval"`
	Rise     int           `koanf:"rise"`
	Fall     int           `koanf:"fall"`
	// Required is nil until fill makes it true; false: reported and
	// exported, but the check does not move the VIP.
	Required *bool `koanf:"required"`
	// Options are passed to the checker as they are, for check types of a
	// third-party checker.
	Options map[string]string `koanf:"options"`
	// Watch (tcp, http, https): keep an idle connection to the service and
	// check at once when it ends. nil: on for an address of this host.
	Watch *bool `koanf:"watch"`

	// http and https.
	Method             string            `koanf:"method"`
	Path               string            `koanf:"path"`
	ExpectStatus       []int             `koanf:"expectstatus"`
	BodyContains       string            `koanf:"bodycontains"`
	InsecureSkipVerify bool              `koanf:"insecureskipverify"`
	Headers            map[string]string `koanf:"headers"`
	Host               string            `koanf:"host"`

	// udp: text, or hex after "hex:" ("hex:0a 0b ff").
	Payload string `koanf:"payload"`
	Expect  string `koanf:"expect"`

	// exec.
	Command string   `koanf:"command"`
	Args    []string `koanf:"args"`
	Shell   bool     `koanf:"shell"`
}

// IsRequired tells whether the check's failure makes the member unhealthy.
func (ch Check) IsRequired() bool { return ch.Required == nil || *ch.Required }

// typeKey is one type-specific key: its name as documented, the types it
// belongs to, and whether a check sets it.
type typeKey struct {
	name  string
	types []string
	set   bool
}

func (ch Check) typeKeys() []typeKey {
	web := []string{"http", "https"}
	return []typeKey{
		{"method", web, ch.Method != ""},
		{"path", web, ch.Path != ""},
		{"expectStatus", web, len(ch.ExpectStatus) > 0},
		{"bodyContains", web, ch.BodyContains != ""},
		{"insecureSkipVerify", []string{"https"}, ch.InsecureSkipVerify},
		{"headers", web, len(ch.Headers) > 0},
		{"host", web, ch.Host != ""},
		{"payload", []string{"udp"}, ch.Payload != ""},
		{"expect", []string{"udp"}, ch.Expect != ""},
		{"command", []string{"exec"}, ch.Command != ""},
		{"args", []string{"exec"}, len(ch.Args) > 0},
		{"shell", []string{"exec"}, ch.Shell},
		{"watch", []string{"tcp", "http", "https"}, ch.Watch != nil && *ch.Watch},
	}
}

func (ch Check) hasHTTP() bool {
	return ch.Protocol == "http" || ch.Protocol == "https" || ch.Method != "" || ch.Path != "" ||
		len(ch.ExpectStatus) > 0 || ch.BodyContains != "" || ch.InsecureSkipVerify || len(ch.Headers) > 0 || ch.Host != ""
}

func (ch Check) hasUDP() bool {
	return ch.Protocol == "udp" || ch.Payload != "" || ch.Expect != ""
}

func (ch Check) hasExec() bool {
	return ch.Protocol == "exec" || ch.Command != "" || len(ch.Args) > 0 || ch.Shell
}

// fillChecks sets the defaults of every check: the interval is
// ChecksInterval, the timeout half the interval, rise and fall 1, and the
// check is required.
func (c *Config) fillChecks() {
	for i := range c.Checks {
		ch := &c.Checks[i]
		if ch.Interval == 0 {
			ch.Interval = c.ChecksInterval
		}
		if ch.Timeout == 0 {
			ch.Timeout = ch.Interval / 2
		}
		if ch.Rise == 0 {
			ch.Rise = DefaultCheckRise
		}
		if ch.Fall == 0 {
			ch.Fall = DefaultCheckFall
		}
		if ch.Required == nil {
			required := true
			ch.Required = &required
		}
	}
}

func (c *Config) validateChecks(bad func(string, ...any)) {
	names := map[string]int{}
	// A third-party checker defines its own check types and address forms.
	// Whichever checker is configured has the last word: the supervisor
	// asks its binary to validate the section (supervisor/validate.go).
	custom := c.Plugins.Checker != ""
	for i, ch := range c.Checks {
		key := fmt.Sprintf("checks[%d]", i)
		if ch.Name == "" {
			bad("%s.name: missing", key)
		} else if j, dup := names[ch.Name]; dup {
			bad("%s.name: %q is also checks[%d].name", key, ch.Name, j)
		} else {
			names[ch.Name] = i
		}
		if !custom {
			validateBuiltinType(key, ch, bad)
		}
		validateCheckTiming(key, ch, c.ChecksInterval, bad)
		validateCheckValues(key, ch, bad)
	}
}

// validateBuiltinType checks what depends on the type of a built-in check:
// the protocol itself, the address, and that every key set is one of the
// type's.
func validateBuiltinType(key string, ch Check, bad func(string, ...any)) {
	if !contains(CheckProtocols, ch.Protocol) {
		bad("%s.protocol: %q is not supported (supported: %s)", key, ch.Protocol, strings.Join(CheckProtocols, ", "))
		return
	}
	if ch.Protocol == "exec" {
		if ch.Address != "" {
			bad("%s.address: %q is not used by exec checks; the command says what it checks", key, ch.Address)
		}
		if strings.TrimSpace(ch.Command) == "" {
			bad("%s.command: missing; an exec check runs a command", key)
		}
	} else if err := hostPort(ch.Address, false); err != nil {
		bad("%s.address: %q %v", key, ch.Address, err)
	}
	for _, k := range ch.typeKeys() {
		if k.set && !contains(k.types, ch.Protocol) {
			bad("%s.%s: only for %s checks, not %s", key, k.name, strings.Join(k.types, " and "), ch.Protocol)
		}
	}
	if len(ch.Options) > 0 {
		bad("%s.options: only for check types of a third-party checker (plugins.checker)", key)
	}
}

// validateCheckTiming checks interval, timeout, rise and fall, after fill.
// Both durations go to the checker as whole milliseconds, so that is how
// they are compared.
func validateCheckTiming(key string, ch Check, checksInterval time.Duration, bad func(string, ...any)) {
	intervalOK := ch.Interval >= minCheckInterval && ch.Interval <= maxChecksInterval
	if !intervalOK && ch.Interval != checksInterval {
		bad("%s.interval: %s must be at least %s and at most %s", key, ch.Interval, minCheckInterval, maxChecksInterval)
	}
	if intervalOK && (ch.Timeout.Milliseconds() < 1 || ch.Timeout.Milliseconds() >= ch.Interval.Milliseconds()) {
		if ch.Interval == checksInterval {
			bad("%s.timeout: %s must be above 0 and below ChecksInterval (%s)", key, ch.Timeout, ch.Interval)
		} else {
			bad("%s.timeout: %s must be above 0 and below %s.interval (%s)", key, ch.Timeout, key, ch.Interval)
		}
	}
	if ch.Rise < 1 || ch.Rise > maxRiseFall {
		bad("%s.rise: %d must be between 1 and %d", key, ch.Rise, maxRiseFall)
	}
	if ch.Fall < 1 || ch.Fall > maxRiseFall {
		bad("%s.fall: %d must be between 1 and %d", key, ch.Fall, maxRiseFall)
	}
}

// validateCheckValues checks the values of the type-specific keys that are
// set, whatever the checker: each key means the same to every checker.
func validateCheckValues(key string, ch Check, bad func(string, ...any)) {
	if ch.Method != "" && !isToken(ch.Method) {
		bad("%s.method: %q is not an HTTP method", key, ch.Method)
	}
	if ch.Path != "" {
		if _, err := url.ParseRequestURI(ch.Path); err != nil || !strings.HasPrefix(ch.Path, "/") {
			bad("%s.path: %q must be a path starting with /", key, ch.Path)
		}
	}
	for j, s := range ch.ExpectStatus {
		if s < 100 || s > 599 {
			bad("%s.expectStatus[%d]: %d is not an HTTP status (100-599)", key, j, s)
		}
	}
	for _, name := range sortedKeys(anyMap(ch.Headers)) {
		if !isToken(name) {
			bad("%s.headers: %q is not a valid header name", key, name)
		} else if strings.ContainsFunc(ch.Headers[name], isCtl) {
			bad("%s.headers.%s: the value must not contain control characters", key, name)
		}
	}
	if ch.Host != "" {
		if u, err := url.Parse("http://" + ch.Host); err != nil || u.Host != ch.Host || strings.ContainsFunc(ch.Host, isCtl) {
			bad("%s.host: %q is not a host or host:port", key, ch.Host)
		}
	}
	if _, err := decodeBytes(ch.Payload); err != nil {
		bad("%s.payload: %v", key, err)
	}
	if _, err := decodeBytes(ch.Expect); err != nil {
		bad("%s.expect: %v", key, err)
	}
	if strings.ContainsRune(ch.Command, 0) {
		bad("%s.command: must not contain NUL bytes", key)
	} else if !ch.Shell && strings.ContainsFunc(ch.Command, unicode.IsSpace) && !strings.HasPrefix(ch.Command, "/") {
		bad("%s.command: %q has spaces; put the arguments in args, or set shell: true", key, ch.Command)
	}
	for j, a := range ch.Args {
		if strings.ContainsRune(a, 0) {
			bad("%s.args[%d]: must not contain NUL bytes", key, j)
		}
	}
}

// decodeBytes reads a udp payload or expect: hex after "hex:" (spaces
// between the digits allowed), else the text's own bytes.
func decodeBytes(s string) ([]byte, error) {
	rest, ok := strings.CutPrefix(s, hexPrefix)
	if !ok {
		return []byte(s), nil
	}
	b, err := hex.DecodeString(strings.Join(strings.Fields(rest), ""))
	if err != nil {
		return nil, fmt.Errorf("%q is not hex after %q: %v", s, hexPrefix, err)
	}
	return b, nil
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", r)) {
			return false
		}
	}
	return true
}

func isCtl(r rune) bool { return (r < ' ' && r != '\t') || r == 0x7f }

func anyMap(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// CheckerConfig is the checker plugin's part of the config. Every default
// is filled in, so a checker gets each check's own interval, rise and fall.
func (c *Config) CheckerConfig() *pb.CheckerConfig {
	out := &pb.CheckerConfig{IntervalMs: c.ChecksInterval.Milliseconds()}
	for _, ch := range c.Checks {
		pc := &pb.Check{
			Name:        ch.Name,
			Protocol:    ch.Protocol,
			Address:     ch.Address,
			TimeoutMs:   ch.Timeout.Milliseconds(),
			Options:     ch.Options,
			IntervalMs:  ch.Interval.Milliseconds(),
			Rise:        int32(ch.Rise),
			Fall:        int32(ch.Fall),
			NotRequired: !ch.IsRequired(),
		}
		if ch.Watch != nil {
			pc.Watch = pb.WatchMode_WATCH_OFF
			if *ch.Watch {
				pc.Watch = pb.WatchMode_WATCH_ON
			}
		}
		if ch.hasHTTP() {
			pc.Http = &pb.HTTPCheck{
				Method:             ch.Method,
				Path:               ch.Path,
				BodyContains:       ch.BodyContains,
				InsecureSkipVerify: ch.InsecureSkipVerify,
				Headers:            ch.Headers,
				Host:               ch.Host,
			}
			for _, s := range ch.ExpectStatus {
				pc.Http.ExpectStatus = append(pc.Http.ExpectStatus, int32(s))
			}
		}
		if ch.hasUDP() {
			payload, _ := decodeBytes(ch.Payload) // validated
			expect, _ := decodeBytes(ch.Expect)
			pc.Udp = &pb.UDPCheck{Payload: payload, Expect: expect}
		}
		if ch.hasExec() {
			pc.Exec = &pb.ExecCheck{Command: ch.Command, Args: ch.Args, Shell: ch.Shell}
		}
		out.Checks = append(out.Checks, pc)
	}
	return out
}
