package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keep-vip/keep-vip/etc"
)

func TestCommands(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", string(etc.DefaultConfig))
	bad := write("bad.yaml", strings.NewReplacer("vip: 172.16.0.100", "vip: 172.16.0.300", "type: tcp ", "type: quic ").Replace(string(etc.DefaultConfig)))
	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		out, err string
		errLines int // exact number of stderr lines, when > 0
	}{
		{"version", []string{"version"}, 0, "keep-vip-supervisor dev", "", 0},
		{"no command", nil, 2, "", "usage:", 0},
		{"unknown command", []string{"frobnicate"}, 2, "", `unknown command "frobnicate"`, 0},
		{"validate good", []string{"validate", "-c", good}, 0, "configuration is valid", "", 0},
		{"validate bad names every problem on its own line", []string{"validate", "-c", bad}, 1, "",
			`vip: "172.16.0.300" is not an IP address`, 2},
		{"validate missing file", []string{"validate", "-c", filepath.Join(dir, "nope.yaml")}, 1, "", "no such file", 1},
		{"start with a bad config starts nothing", []string{"start", "-c", bad}, 1, "", `loadBalancers[0].type: "quic" is unknown`, 2},
		{"stray argument", []string{"validate", "-c", good, "extra"}, 2, "", `unexpected argument "extra"`, 0},
		{"example config", []string{"example-config"}, 0, "ChecksInterval: 2", "", 0},
		{"reload without a supervisor fails on one line", []string{"reload", "-c", good, "--socket", filepath.Join(dir, "none.sock")}, 1, "",
			"keep-vip-supervisor reload: no supervisor answers on", 1},
		{"reload takes no argument", []string{"reload", "now"}, 2, "", `unexpected argument "now"`, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tc.args, &out, &errb)
			if code != tc.code || !strings.Contains(out.String(), tc.out) || !strings.Contains(errb.String(), tc.err) {
				t.Fatalf("code %d (want %d)\nstdout %q (want %q)\nstderr %q (want %q)", code, tc.code, out.String(), tc.out, errb.String(), tc.err)
			}
			if tc.errLines > 0 {
				if n := strings.Count(errb.String(), "\n"); n != tc.errLines {
					t.Fatalf("stderr has %d lines, want %d: %q", n, tc.errLines, errb.String())
				}
			}
		})
	}
}
