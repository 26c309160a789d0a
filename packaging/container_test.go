package packaging

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A minimal Debian booted with systemd as its PID 1, in a network
// namespace of its own, for the systemd test: the rootfs is built once
// with debootstrap from the Debian mirror this machine's apt uses, and kept
// outside the clone; each run boots an overlay of it, so the cached tree is
// never changed.

const (
	// rootfsCacheEnv overrides where the rootfs is kept.
	rootfsCacheEnv     = "KEEPVIP_ROOTFS_CACHE"
	defaultRootfsCache = "/var/cache/keep-vip-test"
	// mirrorEnv overrides the mirror found in the apt sources.
	mirrorEnv = "KEEPVIP_DEBIAN_MIRROR"
	// rootfsMarker holds the recipe a complete rootfs was built with; a
	// tree without it (a build cut short) or with another is rebuilt.
	rootfsMarker = ".keep-vip-rootfs"
	// What the booted system needs besides minbase: systemd as init,
	// dbus for systemctl's peers, ip, and ps/pgrep.
	rootfsPackages = "systemd,systemd-sysv,dbus,iproute2,procps"
)

// runFor runs a command bounded by d, returning its combined output.
func runFor(d time.Duration, stdin []byte, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive")
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %s", d)
	}
	return out.String(), err
}

// debianMirror is the suite of this machine's Debian release and the first
// apt source that serves it.
func debianMirror(t *testing.T) (suite, mirror string) {
	t.Helper()
	osr, err := os.ReadFile("/etc/os-release")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(osr), "\n") {
		if v, ok := strings.CutPrefix(l, "VERSION_CODENAME="); ok {
			suite = strings.Trim(v, `"`)
		}
	}
	if suite == "" {
		t.Fatal("/etc/os-release has no VERSION_CODENAME: not a Debian-like system")
	}
	if m := os.Getenv(mirrorEnv); m != "" {
		return suite, m
	}
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*")
	for _, f := range append([]string{"/etc/apt/sources.list"}, files...) {
		raw, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if m := mirrorIn(string(raw), strings.HasSuffix(f, ".sources"), suite); m != "" {
			return suite, m
		}
	}
	t.Fatalf("no apt source serves %s: set %s", suite, mirrorEnv)
	return "", ""
}

// mirrorIn finds a deb source of suite in a sources.list (one-line) or
// .sources (deb822) file.
func mirrorIn(text string, deb822 bool, suite string) string {
	if !deb822 {
		for _, l := range strings.Split(text, "\n") {
			f := strings.Fields(l)
			if len(f) < 3 || f[0] != "deb" {
				continue
			}
			f = f[1:]
			if strings.HasPrefix(f[0], "[") { // options
				for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
					f = f[1:]
				}
				f = f[1:]
			}
			if len(f) >= 2 && f[1] == suite {
				return f[0]
			}
		}
		return ""
	}
	for _, stanza := range strings.Split(text, "\n\n") {
		fields := map[string]string{}
		for _, l := range strings.Split(stanza, "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && !strings.HasPrefix(l, "#") && !strings.HasPrefix(l, " ") {
				fields[strings.ToLower(k)] = strings.TrimSpace(v)
			}
		}
		if !strings.Contains(" "+fields["types"]+" ", " deb ") || fields["enabled"] == "no" {
			continue
		}
		for _, s := range strings.Fields(fields["suites"]) {
			if s == suite {
				if uris := strings.Fields(fields["uris"]); len(uris) > 0 {
					return uris[0]
				}
			}
		}
	}
	return ""
}

// debianRootfs is the cached rootfs, built first when missing or made by
// another recipe. A lock keeps concurrent runs from building it twice.
func debianRootfs(t *testing.T) string {
	t.Helper()
	dir := os.Getenv(rootfsCacheEnv)
	if dir == "" {
		dir = defaultRootfsCache
	}
	suite, mirror := debianMirror(t)
	recipe := fmt.Sprintf("debootstrap --variant=minbase --include=%s %s %s\n", rootfsPackages, suite, mirror)
	root := filepath.Join(dir, "rootfs-"+suite)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) }()
	if have, err := os.ReadFile(filepath.Join(root, rootfsMarker)); err == nil && string(have) == recipe {
		t.Logf("rootfs: cached %s (%s)", root, strings.TrimSpace(recipe))
		return root
	}
	tmp := root + ".tmp"
	for _, d := range []string{tmp, root} {
		if err := os.RemoveAll(d); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	out, err := runFor(20*time.Minute, nil, "debootstrap", "--variant=minbase", "--include="+rootfsPackages, suite, tmp, mirror)
	if err != nil {
		_ = os.RemoveAll(tmp)
		t.Fatalf("debootstrap %s from %s: %v\n%s", suite, mirror, err, tail(out, 30))
	}
	if err := os.WriteFile(filepath.Join(tmp, rootfsMarker), []byte(recipe), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, root); err != nil {
		t.Fatal(err)
	}
	t.Logf("rootfs: built %s in %s (%s)", root, time.Since(start).Round(time.Second), strings.TrimSpace(recipe))
	return root
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// container is one boot of the rootfs under systemd-nspawn.
type container struct {
	t    *testing.T
	Root string // the overlay the container runs on, writable from here
	NS   string // its network namespace
	pid1 int    // its systemd, as this machine numbers it
	log  string // nspawn's console
}

// bootContainer boots rootfs with systemd as PID 1 in a network
// namespace of its own holding eth0 (addr/24) and a peer for it (peerAddr),
// and waits until systemd says the system is up. Everything it made goes
// with t's cleanups, the container first, also when the test fails.
func bootContainer(t *testing.T, rootfs, addr, peerAddr string) *container {
	t.Helper()
	tmp := t.TempDir()
	c := &container{t: t, Root: filepath.Join(tmp, "root"), NS: fmt.Sprintf("kvsd%d", os.Getpid()), log: filepath.Join(tmp, "console.log")}
	for _, d := range []string{"upper", "work", "root"} {
		if err := os.Mkdir(filepath.Join(tmp, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", rootfs, filepath.Join(tmp, "upper"), filepath.Join(tmp, "work"))
	if err := syscall.Mount("overlay", c.Root, "overlay", 0, opts); err != nil {
		t.Fatalf("mount overlay of %s: %v", rootfs, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(c.Root, 0); err != nil {
			_ = syscall.Unmount(c.Root, syscall.MNT_DETACH)
		}
	})

	_, _ = runFor(10*time.Second, nil, "ip", "netns", "del", c.NS) // a killed run's
	for _, args := range [][]string{
		{"netns", "add", c.NS},
		{"-n", c.NS, "link", "set", "lo", "up"},
		{"-n", c.NS, "link", "add", "eth0", "type", "veth", "peer", "name", "kvpeer0"},
		{"-n", c.NS, "addr", "add", addr + "/24", "dev", "eth0"},
		{"-n", c.NS, "addr", "add", peerAddr + "/24", "dev", "kvpeer0"},
		{"-n", c.NS, "link", "set", "eth0", "up"},
		{"-n", c.NS, "link", "set", "kvpeer0", "up"},
	} {
		if out, err := runFor(10*time.Second, nil, "ip", args...); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
		if args[0] == "netns" {
			t.Cleanup(func() { _, _ = runFor(10*time.Second, nil, "ip", "netns", "del", c.NS) })
		}
	}

	console, err := os.Create(c.log)
	if err != nil {
		t.Fatal(err)
	}
	// No machined and no systemd as this machine's init: no registration,
	// no scope unit of its own. With a network namespace given, nspawn
	// grants CAP_NET_ADMIN only when asked.
	cmd := exec.Command("systemd-nspawn", "--quiet", "-D", c.Root, "-b", "--register=no", "--keep-unit",
		"--network-namespace-path=/run/netns/"+c.NS, "--capability=CAP_NET_ADMIN", "--console=read-only", "-M", c.NS)
	cmd.Stdout, cmd.Stderr = console, console
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("systemd-nspawn: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); _ = console.Close(); close(exited) }()
	t.Cleanup(func() {
		// nspawn turns SIGTERM into a clean shutdown of the container.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			t.Errorf("systemd-nspawn still running 30s after SIGTERM; killing it")
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			raw, _ := os.ReadFile(c.log)
			t.Logf("container console:\n%s", tail(string(raw), 40))
		}
	})

	deadline := time.Now().Add(30 * time.Second)
	for c.pid1 == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no systemd under systemd-nspawn %d after 30s", cmd.Process.Pid)
		}
		select {
		case <-exited:
			raw, _ := os.ReadFile(c.log)
			t.Fatalf("systemd-nspawn exited:\n%s", tail(string(raw), 40))
		case <-time.After(50 * time.Millisecond):
		}
		c.pid1 = containerInit(cmd.Process.Pid)
	}
	// systemctl reaches systemd only once it has made /run/systemd/system
	// ("offline" before) and its private socket ("Failed to connect").
	var out string
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		out, err = c.run(60*time.Second, "systemctl", "is-system-running", "--wait")
		if s := strings.TrimSpace(out); s != "offline" && !strings.Contains(s, "Failed to connect") {
			break
		}
	}
	if state := strings.TrimSpace(out); state != "running" {
		failed, _ := c.run(10*time.Second, "systemctl", "--failed", "--no-legend")
		if state != "degraded" {
			t.Fatalf("systemctl is-system-running: %q %v; failed units:\n%s", state, err, failed)
		}
		t.Logf("container system degraded; failed units:\n%s", failed)
	}
	return c
}

// containerInit is the child of nspawn that is PID 1 of its own PID
// namespace, or 0.
func containerInit(nspawn int) int {
	procs, _ := filepath.Glob("/proc/[0-9]*/status")
	for _, p := range procs {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		var ppid, nspid string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "PPid:"); ok {
				ppid = strings.TrimSpace(v)
			}
			if v, ok := strings.CutPrefix(sc.Text(), "NSpid:"); ok {
				fs := strings.Fields(v)
				nspid = fs[len(fs)-1]
			}
		}
		f.Close()
		if ppid == strconv.Itoa(nspawn) && nspid == "1" {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			return pid
		}
	}
	return 0
}

// run runs argv in the container (every namespace of its PID 1), bounded.
func (c *container) run(d time.Duration, argv ...string) (string, error) {
	return c.runIn(d, nil, argv...)
}

func (c *container) runIn(d time.Duration, stdin []byte, argv ...string) (string, error) {
	args := append([]string{"-t", strconv.Itoa(c.pid1), "-a", "--", "env", "-i",
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", "TERM=dumb"}, argv...)
	out, err := runFor(d, stdin, "nsenter", args...)
	if err != nil {
		return out, fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
	}
	return out, nil
}

// must runs argv in the container and fails the test if it fails.
func (c *container) must(argv ...string) string {
	c.t.Helper()
	out, err := c.run(90*time.Second, argv...)
	if err != nil {
		c.t.Fatalf("%v\n%s", err, out)
	}
	return out
}

// sh runs a shell script in the container.
func (c *container) sh(script string) (string, error) {
	return c.run(90*time.Second, "sh", "-c", script)
}

// exitCode is err's exit status (0 for nil, -1 if it did not exit).
func exitCode(err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	return -1
}

// waitFor polls cond every 200ms up to d, failing the test with cond's last
// word if it never holds; it returns how long it took.
func (c *container) waitFor(d time.Duration, what string, cond func() (bool, string)) time.Duration {
	c.t.Helper()
	start := time.Now()
	last := ""
	for time.Since(start) < d {
		ok, detail := cond()
		if ok {
			return time.Since(start)
		}
		last = detail
		time.Sleep(200 * time.Millisecond)
	}
	c.t.Fatalf("after %s, still waiting for %s: %s", d, what, last)
	return 0
}

// write puts a file into the container's tree.
func (c *container) write(path, content string, mode os.FileMode) {
	c.t.Helper()
	p := filepath.Join(c.Root, path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		c.t.Fatal(err)
	}
}

// exists tells whether path is in the container's tree.
func (c *container) exists(path string) bool {
	_, err := os.Lstat(filepath.Join(c.Root, path))
	return err == nil
}
