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
