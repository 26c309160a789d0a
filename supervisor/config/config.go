// Package config loads and checks keep-vip's configuration file. Only the
// supervisor reads it; each plugin gets its part as an RPC message.
//
// The schema is the original keep-vip's (cluster, interface, vip, ChecksInterval,
// prometheus, checks, members, loadBalancers) plus optional keys of our own.
// Keys match case-insensitively. Durations are numbers of seconds, as in the
// original config (ChecksInterval: 2, timeout: 1), or Go duration strings ("500ms").
package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/keep-vip/keep-vip/rpc/limits"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/v2"
)

// EnvPrefix starts every environment override: KEEPVIP_CHECKSINTERVAL=1,
// KEEPVIP_PROMETHEUS_ADDRESS=127.0.0.1:9195. Nesting is "_".
const EnvPrefix = "KEEPVIP_"

// DefaultPath is where packages install the config file.
const DefaultPath = "/etc/keep-vip/config.yaml"

// Defaults of the optional keys. The raft timeouts are tuned for a LAN (see
// raft.go and elector/timing.go): the election timeout defaults to the
// heartbeat timeout and the lease to 2/5 of it.
const (
	DefaultCluster           = "keep-vip"
	DefaultChecksInterval    = 2 * time.Second
	DefaultDataDir           = "/var/lib/keep-vip"
	DefaultHeartbeatTimeout  = limits.DefaultHeartbeatTimeout
	DefaultPrometheusAddress = "0.0.0.0:9195"
	DefaultLogLevel          = "info"
	DefaultLogFormat         = "auto"
)

// Supported values, in the order error messages list them.
var (
	LogFormats        = []string{"auto", "console", "json", "journal"}
	maxChecksInterval = time.Hour
)

// Config is the whole file.
type Config struct {
	Cluster        string         `koanf:"cluster"`
	ID             string         `koanf:"id"`
	Interface      string         `koanf:"interface"`
	VIP            string         `koanf:"vip"`
	VIPs           []string       `koanf:"vips"` // more VIPs, moving with vip (announce.go)
	Announce       Announce       `koanf:"announce"`
	BGP            BGP            `koanf:"bgp"` // bgp.go
	ChecksInterval time.Duration  `koanf:"checksinterval"`
	DataDir        string         `koanf:"datadir"`
	Raft           Raft           `koanf:"raft"`
	Prometheus     Prometheus     `koanf:"prometheus"`
	Checks         []Check        `koanf:"checks"`
	Members        []Member       `koanf:"members"`
	LoadBalancers  []LoadBalancer `koanf:"loadbalancers"`
	DrainTimeout   time.Duration  `koanf:"draintimeout"` // balancers.go
	Plugins        Plugins        `koanf:"plugins"`
	Log            Log            `koanf:"log"`
	AdminSocket    string         `koanf:"adminsocket"`
	Hooks          Hooks          `koanf:"hooks"`
}

// Prometheus says where /metrics is served.
type Prometheus struct {
	Enabled bool   `koanf:"enabled"`
	Address string `koanf:"address"`
}

// Member is one Raft voter.
type Member struct {
	ID      string `koanf:"id"`
	Address string `koanf:"address"`
	// Priority prefers a holder: with raft.preempt, leadership moves to the
	// healthy member of highest priority (raft.go).
	Priority int `koanf:"priority"`
}

// Plugins optionally names each plugin binary; an empty value means the
// default binary next to the supervisor, then in /usr/libexec/keep-vip.
type Plugins struct {
	Elector   string `koanf:"elector"`
	Announcer string `koanf:"announcer"`
	Checker   string `koanf:"checker"`
	Balancer  string `koanf:"balancer"`
}

// Log sets the supervisor's logging.
type Log struct {
	Level  string `koanf:"level"`
	Format string `koanf:"format"`
}

// Load reads path, applies KEEPVIP_ environment overrides and defaults, and
// validates the result. The error lists every problem, one per line.
func Load(path string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(raw, os.Environ())
}

// Parse is Load for a file already read and an explicit environment.
func Parse(raw []byte, environ []string) (*Config, error) {
	tree, err := yaml.Parser().Unmarshal(raw)
	if err != nil {
		return nil, fmt.Errorf("parse config: %s", oneLine(err.Error()))
	}
	if tree == nil {
		tree = map[string]any{}
	}
	var problems []error
	problems = append(problems, unknownKeys(tree, reflect.TypeOf(Config{}), "")...)
	lower, err := lowerKeys(tree, "")
	if err != nil {
		problems = append(problems, err)
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}

	k := koanf.New(".")
	if err := k.Load(confmap.Provider(defaults(), "."), nil); err != nil {
		return nil, err
	}
	if err := k.Load(confmap.Provider(lower.(map[string]any), "."), nil); err != nil {
		return nil, err
	}
	if err := k.Load(envProvider(environ), nil); err != nil {
		return nil, fmt.Errorf("environment overrides: %w", err)
	}
	var c Config
	dc := &mapstructure.DecoderConfig{
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			secondsHook,
			mapstructure.StringToTimeDurationHookFunc(),
		),
		WeaklyTypedInput: true,
		Result:           &c,
	}
	if err := k.UnmarshalWithConf("", &c, koanf.UnmarshalConf{DecoderConfig: dc}); err != nil {
		return nil, fmt.Errorf("config: %s", oneLine(err.Error()))
	}
	c.fill()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func defaults() map[string]any {
	return map[string]any{
		"cluster":                DefaultCluster,
		"checksinterval":         DefaultChecksInterval,
		"datadir":                DefaultDataDir,
		"raft.heartbeattimeout":  DefaultHeartbeatTimeout,
		"prometheus.address":     DefaultPrometheusAddress,
		"log.level":              DefaultLogLevel,
		"log.format":             DefaultLogFormat,
		"announce.burstcount":    DefaultBurstCount,
		"announce.burstinterval": DefaultBurstInterval,
		"adminsocket":            DefaultAdminSocket,
		"hooks.timeout":          DefaultHookTimeout,
		"draintimeout":           DefaultDrainTimeout,
	}
}

// fill sets the defaults that depend on other keys.
func (c *Config) fill() {
	c.fillVIP()
	c.fillChecks()
	c.fillRaft()
	c.fillLoadBalancers()
}

// envProvider maps KEEPVIP_PROMETHEUS_ADDRESS to prometheus.address. Only
// keys of the schema's scalar settings are taken: other KEEPVIP_ variables
// (KEEPVIP_LOG_LEVEL is also read by plugins) do not break a start.
func envProvider(environ []string) *confmap.Confmap {
	known := scalarKeys(reflect.TypeOf(Config{}), "")
	m := map[string]any{}
	for _, kv := range environ {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) {
			continue
		}
		key := strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(name, EnvPrefix)), "_", ".")
		if known[key] {
			m[key] = val
		}
	}
	return confmap.Provider(m, ".")
}

// scalarKeys lists the dotted keys of every non-list setting.
func scalarKeys(t reflect.Type, prefix string) map[string]bool {
	out := map[string]bool{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		key := prefix + f.Tag.Get("koanf")
		switch {
		case f.Type.Kind() == reflect.Struct:
			for k := range scalarKeys(f.Type, key+".") {
				out[k] = true
			}
		case f.Type.Kind() == reflect.Slice, f.Type.Kind() == reflect.Map:
		default:
			out[key] = true
		}
	}
	return out
}

// secondsHook reads a bare number, or a string of one, as seconds: the
// original config's ChecksInterval: 2 means two seconds, not two nanoseconds.
func secondsHook(from, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeOf(time.Duration(0)) {
		return data, nil
	}
	switch v := data.(type) {
	case int:
		return time.Duration(v) * time.Second, nil
	case int64:
		return time.Duration(v) * time.Second, nil
	case uint64:
		return time.Duration(v) * time.Second, nil
	case float64:
		return time.Duration(v * float64(time.Second)), nil
	case string:
		if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
			return time.Duration(f * float64(time.Second)), nil
		}
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("%q is neither seconds nor a duration like 500ms", v)
		}
		return d, nil
	}
	return data, nil
}

// lowerKeys lower-cases every map key so ChecksInterval and checksinterval
// are one key; a file that spells one key twice is refused.
func lowerKeys(v any, path string) (any, error) {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		seen := map[string]string{}
		keys := sortedKeys(t)
		for _, k := range keys {
			lk := strings.ToLower(k)
			if prev, dup := seen[lk]; dup {
				return nil, fmt.Errorf("%s: set twice, as %q and %q", join(path, k), prev, k)
			}
			seen[lk] = k
			lv, err := lowerKeys(t[k], join(path, k))
			if err != nil {
				return nil, err
			}
			out[lk] = lv
		}
		return out, nil
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			le, err := lowerKeys(e, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			out[i] = le
		}
		return out, nil
	}
	return v, nil
}

// unknownKeys reports keys the schema does not have, with their path as
// written, so a typo is an error instead of a silently ignored setting.
func unknownKeys(v any, t reflect.Type, path string) []error {
	var errs []error
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return nil // a type mismatch; the decoder names it
		}
		fields := map[string]reflect.Type{}
		for i := 0; i < t.NumField(); i++ {
			fields[t.Field(i).Tag.Get("koanf")] = t.Field(i).Type
		}
		for _, k := range sortedKeys(m) {
			ft, ok := fields[strings.ToLower(k)]
			if !ok {
				errs = append(errs, fmt.Errorf("%s: unknown key", join(path, k)))
				continue
			}
			errs = append(errs, unknownKeys(m[k], ft, join(path, k))...)
		}
	case reflect.Slice:
		l, ok := v.([]any)
		if !ok {
			return nil
		}
		for i, e := range l {
			errs = append(errs, unknownKeys(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i))...)
		}
	}
	return errs
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// VIPAddr is the parsed vip.
func (c *Config) VIPAddr() netip.Addr {
	a, _ := netip.ParseAddr(c.VIP)
	return a
}

// Validate checks the file alone, without looking at this host, so the
// original example config passes anywhere. Every problem is one line naming its key.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if c.Cluster == "" {
		bad("cluster: must not be empty")
	}
	if c.Interface == "" {
		bad("interface: missing; name the interface that carries the vip")
	}
	c.validateVIPs(bad)
	c.validateAnnounce(bad)
	c.validateBGP(bad)
	if c.ChecksInterval < minCheckInterval || c.ChecksInterval > maxChecksInterval {
		bad("ChecksInterval: %s must be at least %s and at most %s", c.ChecksInterval, minCheckInterval, maxChecksInterval)
	}

	c.validateRaft(bad)
	if c.Prometheus.Enabled {
		if err := hostPort(c.Prometheus.Address, true); err != nil {
			bad("prometheus.address: %q %v", c.Prometheus.Address, err)
		}
	}
	c.validateMembers(bad)
	c.validateChecks(bad)
	c.validateLoadBalancers(bad)
	c.validateOps(bad)
	if _, err := parseLevel(c.Log.Level); err != nil {
		bad("log.level: %q is not one of trace, debug, info, warn, error", c.Log.Level)
	}
	if !contains(LogFormats, c.Log.Format) {
		bad("log.format: %q is not one of %s", c.Log.Format, strings.Join(LogFormats, ", "))
	}
	for kind, p := range c.PluginPaths() {
		if p != "" && !filepath.IsAbs(p) {
			bad("plugins.%s: %q must be an absolute path", kind, p)
		}
	}
	return errors.Join(errs...)
}

func (c *Config) validateMembers(bad func(string, ...any)) {
	if len(c.Members) == 0 {
		bad("members: missing; list every member with id and address")
		return
	}
	ids, addrs := map[string]int{}, map[string]int{}
	for i, m := range c.Members {
		key := fmt.Sprintf("members[%d]", i)
		if m.ID == "" {
			bad("%s.id: missing", key)
		} else if j, dup := ids[m.ID]; dup {
			bad("%s.id: %q is also members[%d].id", key, m.ID, j)
		} else {
			ids[m.ID] = i
		}
		if err := hostPort(m.Address, false); err != nil {
			bad("%s.address: %q %v", key, m.Address, err)
		} else if ap, _ := netip.ParseAddrPort(m.Address); ap.Addr().IsUnspecified() {
			bad("%s.address: %q must be the member's own address, not a wildcard", key, m.Address)
		} else if j, dup := addrs[ap.String()]; dup {
			bad("%s.address: %q is also members[%d].address", key, m.Address, j)
		} else {
			addrs[ap.String()] = i
		}
	}
	if c.ID != "" {
		if _, ok := ids[c.ID]; !ok {
			bad("id: %q is not the id of any member", c.ID)
		}
	}
}

// hostPort accepts IP:port (a host name would make the config depend on DNS
// at failover time). wildcard allows 0.0.0.0 and [::].
func hostPort(s string, wildcard bool) error {
	if s == "" {
		return errors.New("is missing")
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("is not IP:port")
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return errors.New("must be an IP address and port, not a host name")
	}
	if a.IsUnspecified() && !wildcard {
		return errors.New("must not be a wildcard address")
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return errors.New("has no valid port (1-65535)")
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}
