package config

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestOpsKeys(t *testing.T) {
	for _, tc := range []struct {
		name    string
		extra   string
		environ []string
		err     string
		check   func(t *testing.T, c *Config)
	}{
		{"defaults", "", nil, "", func(t *testing.T, c *Config) {
			if c.AdminSocket != DefaultAdminSocket || c.Hooks.Timeout != DefaultHookTimeout || c.Hooks.Command(HookAcquire) != nil {
				t.Errorf("defaults: %q %s %v", c.AdminSocket, c.Hooks.Timeout, c.Hooks)
			}
			if c.MaintenancePath() != "/var/lib/keep-vip/maintenance" {
				t.Errorf("maintenance path %s", c.MaintenancePath())
			}
		}},
		{"hooks as lists", "hooks:\n  timeout: 3\n  acquire: [/bin/notify, --to, ops]\n  Unhealthy: [/bin/page]\n", nil, "",
			func(t *testing.T, c *Config) {
				if !slices.Equal(c.Hooks.Command(HookAcquire), []string{"/bin/notify", "--to", "ops"}) ||
					!slices.Equal(c.Hooks.Command(HookUnhealthy), []string{"/bin/page"}) || c.Hooks.Timeout != 3*time.Second {
					t.Errorf("hooks %+v", c.Hooks)
				}
			}},
		{"adminSocket from the environment", "adminSocket: /run/a.sock\n", []string{"KEEPVIP_ADMINSOCKET=/run/node2.sock"}, "",
			func(t *testing.T, c *Config) {
				if c.AdminSocket != "/run/node2.sock" {
					t.Errorf("adminSocket %q", c.AdminSocket)
				}
			}},
		{"relative adminSocket", "adminSocket: admin.sock\n", nil, `adminSocket: "admin.sock" must be an absolute path`, nil},
		{"adminSocket too long", "adminSocket: /" + strings.Repeat("a", 120) + "\n", nil, "longer than a unix socket path", nil},
		{"relative hook", "hooks:\n  release: [notify]\n", nil, `hooks.release: "notify" must be an absolute path`, nil},
		{"hook as one string", "hooks:\n  acquire: /bin/notify --to ops\n", nil, "give the command as a list", nil},
		{"empty hook", "hooks:\n  acquire: []\n", nil, "hooks.acquire: give a command as a list", nil},
		{"zero timeout", "hooks:\n  timeout: 0\n", nil, "hooks.timeout: 0s must be above 0", nil},
		{"unknown hook event", "hooks:\n  promote: [/bin/x]\n", nil, "hooks.promote: unknown key", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(base+tc.extra), tc.environ)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}
