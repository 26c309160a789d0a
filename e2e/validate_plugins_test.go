package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestValidateAsksEachPlugin: `keep-vip-supervisor validate` has each
// configured plugin binary validate its part over the Validate RPC, so a
// swapped checker is the authority on its own check types: the Go example
// checker refuses a tcp check (one line naming checks, the value and the
// binary, exit 1) and accepts its file check; the Python example, built
// before the RPC was answered there, gets one note line and the file is
// still valid.
func TestValidateAsksEachPlugin(t *testing.T) {
	bins := binariesForTest(t)
	goChecker := buildExampleChecker(t)
	dir := t.TempDir()
	config := func(checker, protocol string) string {
		p := filepath.Join(dir, fmt.Sprintf("%s-%s.yaml", filepath.Base(checker), protocol))
		body := fmt.Sprintf(`interface: eth0
vip: 198.18.0.100
members:
  - {id: a, address: "198.18.0.11:20000"}
  - {id: b, address: "198.18.0.12:20000"}
checks:
  - {name: in_service, protocol: %s, address: %s}
plugins:
  checker: %s
`, protocol, map[string]string{"file": "/run/in-service", "tcp": "127.0.0.1:80"}[protocol], checker)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	validate := func(path string) (string, int) {
		cmd := exec.Command(bins.Supervisor(), "validate", "-c", path)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out.String()), code
	}

	t.Run("go checker refuses a type it does not have", func(t *testing.T) {
		out, code := validate(config(goChecker, "tcp"))
		t.Logf("exit %d: %s", code, out)
		if code != 1 || strings.Count(out, "\n") != 0 ||
			!strings.Contains(out, `checks: check "in_service": protocol "tcp" is not supported (supported: file)`) ||
			!strings.Contains(out, goChecker) {
			t.Errorf("want exit 1 and one line with the Go checker's refusal and its path")
		}
	})
	t.Run("go checker accepts its own type", func(t *testing.T) {
		out, code := validate(config(goChecker, "file"))
		t.Logf("exit %d: %s", code, out)
		if code != 0 || !strings.HasSuffix(out, "configuration is valid") {
			t.Errorf("want exit 0, valid")
		}
	})
	t.Run("python checker predates the RPC", func(t *testing.T) {
		script := buildPythonChecker(t)
		out, code := validate(config(script, "file"))
		t.Logf("exit %d: %s", code, out)
		if code != 0 || !strings.Contains(out, "predates the Validate RPC") || strings.Count(out, "note:") != 1 {
			t.Errorf("want exit 0 and one note that the Python checker predates the Validate RPC")
		}
	})
}

// The bgp section is the announcer's to validate: `validate` names the
// key and value in one line, with the announcer binary that refused it.
func TestValidateBGPByAnnouncer(t *testing.T) {
	bins := binariesForTest(t)
	dir := t.TempDir()
	for _, tc := range []struct{ name, bgp, want string }{
		{"valid", "{asn: 65001, peers: [{address: 198.18.0.1, asn: 65000}]}", ""},
		{"reserved asn", "{asn: 23456, peers: [{address: 198.18.0.1, asn: 65000}]}", "bgp.asn 23456: is AS_TRANS, reserved"},
		{"short hold time", "{asn: 65001, peers: [{address: 198.18.0.1, asn: 65000, holdTime: 1}]}", "bgp.peers[0].holdTime 1s: must be whole seconds between 3s and"},
		{"no peer for the IPv6 vip", "{asn: 65001, peers: [{address: 198.18.0.1, asn: 65000}]}\nvips: ['2001:db8::100']", "bgp.peers: no IPv6 peer to advertise vip 2001:db8::100 to"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml")
			body := "interface: eth0\nvip: 198.18.0.100\nmembers:\n  - {id: a, address: \"198.18.0.11:20000\"}\nbgp: " + tc.bgp + "\n"
			if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(bins.Supervisor(), "validate", "-c", p).CombinedOutput()
			t.Logf("%v: %s", err, out)
			got := strings.TrimSpace(string(out))
			if tc.want == "" {
				if err != nil || !strings.HasSuffix(got, "configuration is valid") {
					t.Errorf("want a valid config")
				}
				return
			}
			if err == nil || strings.Count(got, "\n") != 0 || !strings.Contains(got, tc.want) ||
				!strings.Contains(got, "interface/vip/vips/announce/bgp:") || !strings.Contains(got, "keep-vip-announcer") {
				t.Errorf("want one line with the announcer's refusal %q", tc.want)
			}
		})
	}
}
