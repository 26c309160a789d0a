package packaging

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// distEnv names the directory `make package` wrote the packages to; make
// test sets it. Without it the tests are skipped: plain `go test ./...`
// has no packages to look at.
const distEnv = "KEEPVIP_DIST_DIR"

// What both packages install, besides each one's unit and docs.
var common = []string{
	"/etc/keep-vip/config.yaml",
	"/usr/bin/keep-vip-supervisor",
	"/usr/libexec/keep-vip/keep-vip-announcer",
	"/usr/libexec/keep-vip/keep-vip-balancer",
	"/usr/libexec/keep-vip/keep-vip-checker",
	"/usr/libexec/keep-vip/keep-vip-elector",
	"/usr/share/doc/keep-vip/README.md",
}

const (
	debUnit = "/lib/systemd/system/keep-vip-supervisor.service"
	rpmUnit = "/usr/lib/systemd/system/keep-vip-supervisor.service"
	// maxExposure bounds `systemd-analyze security --offline`'s figure for
	// the unit (2.0; a booted system rates it 1.8, which the systemd test
	// measures and the README quotes); a change that loosens it fails here.
	maxExposure = 2.5
)

func pkg(t *testing.T, glob string) string {
	t.Helper()
	dir := os.Getenv(distEnv)
	if dir == "" {
		t.Skipf("%s not set: run `make test` (or `make package` and set it)", distEnv)
	}
	m, _ := filepath.Glob(filepath.Join(dir, glob))
	if len(m) != 1 {
		t.Fatalf("%s: want one %s, found %v; run `make package`", dir, glob, m)
	}
	return m[0]
}

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: run scripts/install-deps.sh", tool)
		}
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := runErr(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(3 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		return out.String(), errors.New("timed out after 3m")
	}
}

func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

func TestDebLintian(t *testing.T) {
	deb := pkg(t, "keep-vip_*.deb")
	need(t, "lintian")
	out, err := runErr("lintian", "--fail-on", "error", "--tag-display-limit", "0", "--display-level", ">=warning", deb)
	t.Logf("lintian %s:\n%s", filepath.Base(deb), out)
	if err != nil {
		t.Fatalf("lintian: %v", err)
	}
	for _, l := range lines(out) {
		if strings.HasPrefix(l, "E: ") {
			t.Errorf("lintian error: %s", l)
		}
	}
}

func TestDebContents(t *testing.T) {
	deb := pkg(t, "keep-vip_*.deb")
	need(t, "dpkg-deb")
	var files []string
	for _, l := range lines(run(t, "dpkg-deb", "--contents", deb)) {
		if f := strings.Fields(l); len(f) >= 6 && !strings.HasSuffix(f[5], "/") {
			files = append(files, strings.TrimPrefix(f[5], "."))
		}
	}
	want := append(slices.Clone(common), debUnit, "/usr/share/doc/keep-vip/copyright", "/usr/share/doc/keep-vip/changelog.Debian.gz")
	slices.Sort(want)
	slices.Sort(files)
	if !slices.Equal(files, want) {
		t.Errorf("deb files:\n%s\nwant:\n%s", strings.Join(files, "\n"), strings.Join(want, "\n"))
	}
	if c := run(t, "dpkg-deb", "--info", deb, "conffiles"); strings.TrimSpace(c) != "/etc/keep-vip/config.yaml" {
		t.Errorf("conffiles %q, want /etc/keep-vip/config.yaml", c)
	}
	postinst := run(t, "dpkg-deb", "--info", deb, "postinst")
	if regexp.MustCompile(`(?m)^[^#]*\b(start|enable)\b`).MatchString(strings.ReplaceAll(postinst, "try-restart", "")) {
		t.Errorf("postinst starts or enables the service on install:\n%s", postinst)
	}
}

func TestRPMListAndScripts(t *testing.T) {
	rpm := pkg(t, "keep-vip-*.rpm")
	need(t, "rpm")
	files := lines(run(t, "rpm", "-qp", "--list", rpm))
	want := append(slices.Clone(common), rpmUnit, "/usr/share/licenses/keep-vip/LICENSE")
	slices.Sort(want)
	slices.Sort(files)
	if !slices.Equal(files, want) {
		t.Errorf("rpm -qp --list:\n%s\nwant:\n%s", strings.Join(files, "\n"), strings.Join(want, "\n"))
	}
	// The config is %config(noreplace): flags c and n.
	flags := map[string]string{}
	for _, l := range lines(run(t, "rpm", "-qp", "--qf", `[%{FILENAMES} %{FILEFLAGS:fflags}\n]`, rpm)) {
		name, fl, _ := strings.Cut(l, " ")
		flags[name] = fl
	}
	if f := flags["/etc/keep-vip/config.yaml"]; !strings.Contains(f, "c") || !strings.Contains(f, "n") {
		t.Errorf("config.yaml flags %q, want config noreplace (cn)", f)
	}
	if f := flags["/usr/share/licenses/keep-vip/LICENSE"]; !strings.Contains(f, "l") {
		t.Errorf("LICENSE flags %q, want license (l)", f)
	}
	scripts := run(t, "rpm", "-qp", "--scripts", rpm)
	t.Logf("rpm -qp --scripts:\n%s", scripts)
	parts := map[string]string{}
	var cur string
	for _, l := range strings.Split(scripts, "\n") {
		if m := regexp.MustCompile(`^(\w+) scriptlet`).FindStringSubmatch(l); m != nil {
			cur = m[1]
			continue
		}
		parts[cur] += l + "\n"
	}
	for _, c := range []struct{ script, want string }{
		{"postinstall", "daemon-reload"},
		{"preuninstall", `if [ "$1" -eq 0 ]`},
		{"preuninstall", "disable --now keep-vip-supervisor.service"},
		{"postuninstall", "try-restart keep-vip-supervisor.service"},
	} {
		if !strings.Contains(parts[c.script], c.want) {
			t.Errorf("rpm %s scriptlet lacks %q", c.script, c.want)
		}
	}
	if regexp.MustCompile(`(?m)^[^#]*\b(start|enable)\b`).MatchString(parts["postinstall"]) {
		t.Errorf("rpm postinstall starts or enables the service:\n%s", parts["postinstall"])
	}
}

// markerPath marks a keep-vip installed by this test, so a run killed
// before its purge is cleaned up by the next rather than mistaken for
// someone's installation.
const markerPath = "/var/lib/keep-vip-package-test.installed"

func debStatus(t *testing.T) string {
	t.Helper()
	out, err := runErr("dpkg-query", "-W", "-f=${Status}", "keep-vip")
	if err != nil {
		return "" // not known to dpkg
	}
	return strings.TrimSpace(out)
}

// TestDebInstallVerifyPurge installs the .deb on this machine, checks what
// it put where, that it started nothing, that its unit passes
// `systemd-analyze verify`, and that a purge leaves nothing behind. It
// refuses to touch a keep-vip it did not install.
func TestDebInstallVerifyPurge(t *testing.T) {
	deb := pkg(t, "keep-vip_*.deb")
	if os.Geteuid() != 0 {
		t.Skip("installs the package: needs root")
	}
	need(t, "dpkg", "dpkg-query", "systemd-analyze")

	if st := debStatus(t); st != "" && !strings.HasPrefix(st, "unknown ok not-installed") && !strings.Contains(st, "config-files") {
		if _, err := os.Stat(markerPath); err != nil {
			t.Skipf("keep-vip is installed here (%s) and not by this test: leaving it alone", st)
		}
		t.Logf("purging the keep-vip a killed run of this test left (%s)", st)
		run(t, "dpkg", "--purge", "keep-vip")
	}
	leftovers := append(slices.Clone(common), debUnit, "/etc/keep-vip", "/usr/libexec/keep-vip",
		"/usr/share/doc/keep-vip", "/var/lib/keep-vip", "/var/lib/private/keep-vip")
	for _, p := range leftovers {
		if _, err := os.Lstat(p); err == nil {
			t.Skipf("%s exists but no keep-vip package is installed: leaving this machine alone", p)
		}
	}

	if err := os.WriteFile(markerPath, []byte(deb+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	purged := false
	t.Cleanup(func() {
		if !purged {
			if out, err := runErr("dpkg", "--purge", "keep-vip"); err != nil {
				t.Errorf("cleanup: dpkg --purge keep-vip: %v\n%s", err, out)
			}
		}
		_ = os.Remove(markerPath)
	})

	t.Logf("dpkg -i:\n%s", run(t, "dpkg", "-i", deb))
	for _, p := range append(slices.Clone(common), debUnit) {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("installed package lacks %s: %v", p, err)
		}
	}
	// The state directory is systemd's to make (StateDirectory=): one the
	// package made would have systemd warn and migrate it at first start.
	if _, err := os.Lstat("/var/lib/keep-vip"); err == nil {
		t.Errorf("the install made /var/lib/keep-vip; it is the unit's StateDirectory, for systemd to make")
	}
	// Installed, not enabled and not started.
	if m, _ := filepath.Glob("/etc/systemd/system/*.wants/keep-vip-supervisor.service"); len(m) > 0 {
		t.Errorf("a fresh install enabled the service: %v", m)
	}
	if out := run(t, "/usr/bin/keep-vip-supervisor", "validate", "-c", "/etc/keep-vip/config.yaml"); !strings.Contains(out, "configuration is valid") {
		t.Errorf("validate the installed example config: %s", out)
	}
	if out, err := runErr("systemd-analyze", "verify", debUnit); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify %s: %v\n%s", debUnit, err, out)
	}
	sec, err := runErr("systemd-analyze", "security", "--offline=true", debUnit)
	if m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindStringSubmatch(sec); err != nil || m == nil {
		t.Errorf("systemd-analyze security --offline=true: %v\n%s", err, sec)
	} else {
		exp, _ := strconv.ParseFloat(m[1], 64)
		t.Logf("systemd-analyze security: overall exposure %.1f", exp)
		if exp > maxExposure {
			t.Errorf("exposure %.1f above %.1f:\n%s", exp, maxExposure, sec)
		}
	}

	// Reinstalling (dpkg's upgrade path) keeps an edited conffile.
	const edit = "\n# edited by the package test\n"
	f, err := os.OpenFile("/etc/keep-vip/config.yaml", os.O_APPEND|os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteString(edit)
		f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	run(t, "dpkg", "-i", "--force-confold", deb)
	if raw, err := os.ReadFile("/etc/keep-vip/config.yaml"); err != nil || !strings.HasSuffix(string(raw), edit) {
		t.Errorf("reinstall replaced the edited /etc/keep-vip/config.yaml (%v)", err)
	}

	installed := lines(run(t, "dpkg-query", "-L", "keep-vip"))
	t.Logf("dpkg --purge:\n%s", run(t, "dpkg", "--purge", "keep-vip"))
	purged = true
	if st := debStatus(t); st != "" && !strings.HasPrefix(st, "unknown ok not-installed") {
		t.Errorf("after purge dpkg says %q", st)
	}
	var left []string
	for _, p := range append(installed, leftovers...) {
		if _, err := os.Lstat(p); err == nil && !sharedDir(p) {
			left = append(left, p)
		}
	}
	if len(left) > 0 {
		t.Errorf("purge left %v", left)
	}
	if m, _ := filepath.Glob("/etc/systemd/system/*/keep-vip-supervisor.service"); len(m) > 0 {
		t.Errorf("purge left %v", m)
	}
}

// sharedDir is a directory other packages own too (/usr/bin, /lib/systemd
// ...), which dpkg -L lists and a purge rightly keeps.
func sharedDir(p string) bool {
	st, err := os.Stat(p)
	if err != nil || !st.IsDir() {
		return false
	}
	return !strings.Contains(p, "keep-vip")
}
