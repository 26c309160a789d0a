package config

import (
	"path/filepath"
	"strings"
	"time"
)

// Defaults of the operations keys.
const (
	// DefaultAdminSocket is where `keep-vip-supervisor status` and
	// `maintenance` reach a running supervisor. The unit's RuntimeDirectory
	// makes /run/keep-vip.
	DefaultAdminSocket = "/run/keep-vip/admin.sock"
	// DefaultHookTimeout bounds each hook run; the hook's process group is
	// killed when it runs longer.
	DefaultHookTimeout = 10 * time.Second
	// maxUnixPath is sun_path's size less its terminating NUL.
	maxUnixPath = 107
)

// Hook events, in the order the README lists them.
const (
	HookAcquire   = "acquire"
	HookRelease   = "release"
	HookUnhealthy = "unhealthy"
)

// HookEvents lists every hook event.
var HookEvents = []string{HookAcquire, HookRelease, HookUnhealthy}

// Hooks are commands run when this member takes the VIP, gives it up, or
// turns unhealthy. Each is argv: an absolute program path and its
// arguments; the event name is appended as the last argument.
type Hooks struct {
	Timeout   time.Duration `koanf:"timeout"`
	Acquire   []string      `koanf:"acquire"`
	Release   []string      `koanf:"release"`
	Unhealthy []string      `koanf:"unhealthy"`
}

// Command is the argv configured for event, or nil.
func (h Hooks) Command(event string) []string {
	switch event {
	case HookAcquire:
		return h.Acquire
	case HookRelease:
		return h.Release
	case HookUnhealthy:
		return h.Unhealthy
	}
	return nil
}

// MaintenancePath is the file whose presence keeps this member in
// maintenance, across supervisor restarts and reboots.
func (c *Config) MaintenancePath() string { return filepath.Join(c.DataDir, "maintenance") }

func (c *Config) validateOps(bad func(string, ...any)) {
	switch {
	case c.AdminSocket == "":
		bad("adminSocket: must not be empty")
	case !filepath.IsAbs(c.AdminSocket):
		bad("adminSocket: %q must be an absolute path", c.AdminSocket)
	case len(c.AdminSocket) > maxUnixPath:
		bad("adminSocket: %q is longer than a unix socket path can be (%d bytes)", c.AdminSocket, maxUnixPath)
	}
	if c.Hooks.Timeout <= 0 || c.Hooks.Timeout > time.Hour {
		bad("hooks.timeout: %s must be above 0 and at most 1h", c.Hooks.Timeout)
	}
	for _, ev := range HookEvents {
		argv := c.Hooks.Command(ev)
		if argv == nil {
			continue
		}
		switch {
		case len(argv) == 0 || argv[0] == "":
			bad("hooks.%s: give a command as a list: [/path/to/program, args...]", ev)
		case len(argv) == 1 && strings.ContainsAny(argv[0], " \t"):
			bad("hooks.%s: %q: give the command as a list, [program, arg, ...], not one string", ev, argv[0])
		case !filepath.IsAbs(argv[0]):
			bad("hooks.%s: %q must be an absolute path", ev, argv[0])
		}
	}
}
