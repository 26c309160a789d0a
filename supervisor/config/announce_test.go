package config

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestVIPsAndAnnounce(t *testing.T) {
	for _, tc := range []struct {
		name, old, new string
		wantVIP        string   // cfg.VIP after loading
		wantVIPs       []string // AnnouncerConfig().Vips
		wantBurst      int32
		wantSpacingMs  int64
		wantErr        string // a fragment; empty for success
	}{
		{name: "vip alone, defaults", old: "", new: "",
			wantVIP: "198.18.0.100", wantVIPs: []string{"198.18.0.100"}, wantBurst: 3, wantSpacingMs: 100},
		{name: "vip and vips, deduplicated", old: "vip: 198.18.0.100", new: "vip: 198.18.0.100\nvips: [198.18.0.101, 198.18.0.100, '2001:db8::100', '2001:db8:0::100', '::ffff:198.18.0.101']",
			wantVIP: "198.18.0.100", wantVIPs: []string{"198.18.0.100", "198.18.0.101", "2001:db8::100"}, wantBurst: 3, wantSpacingMs: 100},
		{name: "vips alone: vip is the first", old: "vip: 198.18.0.100", new: "vips:\n  - 2001:db8::100\n  - 198.18.0.100",
			wantVIP: "2001:db8::100", wantVIPs: []string{"2001:db8::100", "198.18.0.100"}, wantBurst: 3, wantSpacingMs: 100},
		{name: "burst set", old: "ChecksInterval: 2", new: "ChecksInterval: 2\nannounce:\n  burstCount: 5\n  burstInterval: 0.05",
			wantVIP: "198.18.0.100", wantVIPs: []string{"198.18.0.100"}, wantBurst: 5, wantSpacingMs: 50},
		{name: "burst as duration, keys in any case", old: "ChecksInterval: 2", new: "ChecksInterval: 2\nANNOUNCE:\n  burstcount: 1\n  BurstInterval: 250ms",
			wantVIP: "198.18.0.100", wantVIPs: []string{"198.18.0.100"}, wantBurst: 1, wantSpacingMs: 250},

		{name: "neither vip nor vips", old: "vip: 198.18.0.100", new: "", wantErr: "vip: missing"},
		{name: "empty vips", old: "vip: 198.18.0.100", new: "vips: []", wantErr: "vip: missing"},
		{name: "bad vips entry", old: "vip: 198.18.0.100", new: "vip: 198.18.0.100\nvips: [198.18.0.101, nonsense]", wantErr: `vips[1]: "nonsense" is not an IP address`},
		{name: "bad first vips entry alone", old: "vip: 198.18.0.100", new: "vips: [198.18.0.300]", wantErr: `vips[0]: "198.18.0.300" is not an IP address`},
		{name: "link-local vips entry", old: "vip: 198.18.0.100", new: "vip: 198.18.0.100\nvips: ['fe80::1']", wantErr: "vips[0]: fe80::1 cannot be a virtual IP"},
		{name: "multicast vip", old: "vip: 198.18.0.100", new: "vip: 224.0.0.18", wantErr: "vip: 224.0.0.18 cannot be a virtual IP"},
		{name: "zone", old: "vip: 198.18.0.100", new: "vips: ['2001:db8::1%eth0']", wantErr: `vips[0]: "2001:db8::1%eth0" is not an IP address`},
		{name: "burst count zero", old: "ChecksInterval: 2", new: "ChecksInterval: 2\nannounce: {burstCount: 0}", wantErr: "announce.burstCount: 0 must be between 1 and 100"},
		{name: "burst count huge", old: "ChecksInterval: 2", new: "ChecksInterval: 2\nannounce: {burstCount: 1000}", wantErr: "announce.burstCount: 1000 must be between 1 and 100"},
		{name: "burst interval tiny", old: "ChecksInterval: 2", new: "ChecksInterval: 2\nannounce: {burstInterval: 1ms}", wantErr: "announce.burstInterval: 1ms must be between 10ms and 10s"},
		{name: "unknown announce key", old: "ChecksInterval: 2", new: "ChecksInterval: 2\nannounce: {burst: 3}", wantErr: "announce.burst: unknown key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := base
			if tc.old != "" {
				raw = strings.Replace(base, tc.old, tc.new, 1)
				if raw == base {
					t.Fatal("test case did not change the config")
				}
			}
			c, err := Parse([]byte(raw), nil)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ac := c.AnnouncerConfig()
			if c.VIP != tc.wantVIP || !slices.Equal(ac.Vips, tc.wantVIPs) {
				t.Errorf("vip %q, announcer vips %v; want %q, %v", c.VIP, ac.Vips, tc.wantVIP, tc.wantVIPs)
			}
			if ac.BurstCount != tc.wantBurst || ac.BurstIntervalMs != tc.wantSpacingMs {
				t.Errorf("burst %d every %dms, want %d every %dms", ac.BurstCount, ac.BurstIntervalMs, tc.wantBurst, tc.wantSpacingMs)
			}
			if ac.RefreshIntervalMs != c.ChecksInterval.Milliseconds() || ac.Interface != "eth0" {
				t.Errorf("refresh %dms interface %q", ac.RefreshIntervalMs, ac.Interface)
			}
		})
	}
}

func TestAnnounceEnvOverride(t *testing.T) {
	c, err := Parse([]byte(base), []string{"KEEPVIP_ANNOUNCE_BURSTCOUNT=7", "KEEPVIP_ANNOUNCE_BURSTINTERVAL=20ms"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Announce.BurstCount != 7 || c.Announce.BurstInterval != 20*time.Millisecond {
		t.Fatalf("announce = %+v", c.Announce)
	}
}
