package e2e

// TestBenchBalancer measures keep-vip's balancer against the proxies it
// replaces, on this machine, over loopback:
//
//	(a) tcp:  ours vs HAProxy `mode tcp`
//	(b) http: ours vs nginx `proxy_pass` with upstream keep-alive
//	(c) udp:  ours vs nginx `stream` udp
//
// Backends are shared: nginx from Debian serving a small file for (a) and
// (b), a udp echo process for (c). Our balancer is the real plugin binary,
// configured over go-plugin as the supervisor does. Peers get equivalent
// settings: the same number of threads (HAProxy nbthread, nginx
// worker_processes, our GOMAXPROCS), the same timeouts, logging off. Runs
// are interleaved round by round, ours first on even rounds and the peer
// first on odd ones; the table shows the median of the rounds, and as
// ratios the median of the rounds' ratios. Load
// comes from wrk for (a) and (b) and from a small closed-loop Go generator
// for (c).
//
// It runs only with KEEPVIP_BENCH=1 (make bench) and prints figures and
// ratios instead of asserting them. haproxy, nginx and wrk are installed
// with apt-get when missing and running as root; otherwise it skips.
//
// The load runs on CPU 0, the proxies and backends on the other CPUs (see
// lbBenchPin); KEEPVIP_BENCH_PIN=0 lets every process run anywhere.
//
// Knobs: KEEPVIP_BENCH_DURATION (per run, default 3s), KEEPVIP_BENCH_ROUNDS
// (7), KEEPVIP_BENCH_PROCS (threads per proxy, 1), KEEPVIP_BENCH_CONNS
// (concurrent connections or udp clients, 64), KEEPVIP_BENCH_ONLY (a comma
// list of tcp, http, udp: those scenarios only), KEEPVIP_BENCH_PIN (1).

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"golang.org/x/sys/unix"

	"github.com/keep-vip/keep-vip/rpc"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

const lbBenchEnv = "KEEPVIP_BENCH"

// lbBenchFile is what the nginx backend serves: small, like a health page or an API answer.
var lbBenchFile = strings.Repeat("keep-vip bench ", 8) + "\n"

type lbBenchSettings struct {
	duration time.Duration
	rounds   int
	procs    int
	conns    int
	pin      lbBenchPin
}

func lbBenchSettingsFromEnv(t *testing.T) lbBenchSettings {
	s := lbBenchSettings{duration: 3 * time.Second, rounds: 7, procs: 1, conns: 64}
	switch v := os.Getenv("KEEPVIP_BENCH_PIN"); v {
	case "", "1":
		s.pin = lbBenchPinFor(lbBenchCPUs())
	case "0":
	default:
		t.Fatalf("KEEPVIP_BENCH_PIN=%q: want 1 (load on CPU 0, the rest on the others) or 0 (no pinning)", v)
	}
	if v := os.Getenv("KEEPVIP_BENCH_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second {
			t.Fatalf("KEEPVIP_BENCH_DURATION=%q: want a duration of 1s or more", v)
		}
		s.duration = d
	}
	for _, k := range []struct {
		env string
		p   *int
	}{{"KEEPVIP_BENCH_ROUNDS", &s.rounds}, {"KEEPVIP_BENCH_PROCS", &s.procs}, {"KEEPVIP_BENCH_CONNS", &s.conns}} {
		if v := os.Getenv(k.env); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 4096 {
				t.Fatalf("%s=%q: want a number from 1 to 4096", k.env, v)
			}
			*k.p = n
		}
	}
	return s
}

// lbBenchResult is one run: requests (or datagrams) per second and the 99th
// percentile latency.
type lbBenchResult struct {
	rps float64
	p99 time.Duration
	// cpu is the proxy's CPU time (all its processes and threads) per
	// request: on a machine the load and the backend share, throughput
	// follows it. backendCPU is the backend's, behind this proxy: a
	// proxy that wakes its backend more often costs it more.
	cpu, backendCPU time.Duration
}

type lbBenchTarget struct {
	name string
	run  func(t *testing.T, d time.Duration) lbBenchResult
	// pid is the proxy's process, backend the backend's; nginx's
	// master, whose workers count too.
	pid, backend int
}

// measure runs tg and adds the CPU the proxy's and the backend's
// processes used per request.
func (tg lbBenchTarget) measure(t *testing.T, d time.Duration) lbBenchResult {
	proxy0, backend0 := lbBenchCPU(tg.pid), lbBenchCPU(tg.backend)
	r := tg.run(t, d)
	if r.rps > 0 {
		perRequest := func(used time.Duration) time.Duration { return time.Duration(float64(used) / (r.rps * d.Seconds())) }
		r.cpu, r.backendCPU = perRequest(lbBenchCPU(tg.pid)-proxy0), perRequest(lbBenchCPU(tg.backend)-backend0)
	}
	return r
}

type lbBenchScenario struct {
	title      string
	ours, peer lbBenchTarget
	results    [2][]lbBenchResult
}

func TestBenchBalancer(t *testing.T) {
	if os.Getenv(lbBenchEnv) != "1" {
		t.Skipf("a benchmark: run with %s=1 (make bench)", lbBenchEnv)
	}
	set := lbBenchSettingsFromEnv(t)
	tools := lbBenchNeedTools(t)
	bins := binariesForTest(t)
	dir := t.TempDir()
	pin := set.pin
	// The load (wrk, started from here, and the udp clients, goroutines
	// of this process) runs on the load's CPUs.
	pin.self(t)

	// Backends.
	backendPort := lbBenchFreePort(t, "tcp")
	backendPID := lbBenchNginx(t, tools, pin, dir, "backend", 1, lbBenchBackendConf(dir, backendPort))
	backend := fmt.Sprintf("127.0.0.1:%d", backendPort)
	lbBenchWait(t, "nginx backend", func() error { return lbBenchGet("http://" + backend + "/index.html") })
	echo, echoPID := lbBenchUDPEcho(t, pin, dir)

	// Peers.
	haproxyPort, nginxHTTPPort, nginxUDPPort := lbBenchFreePort(t, "tcp"), lbBenchFreePort(t, "tcp"), lbBenchFreePort(t, "udp")
	haproxyPID := lbBenchHAProxy(t, tools, pin, dir, set.procs, haproxyPort, backend)
	nginxHTTPPID := lbBenchNginx(t, tools, pin, dir, "proxy", set.procs, lbBenchProxyConf(dir, set.procs, nginxHTTPPort, backend))
	nginxUDPPID := lbBenchNginx(t, tools, pin, dir, "stream", set.procs, lbBenchStreamConf(tools, dir, set.procs, nginxUDPPort, echo))

	// Ours.
	oursTCP, oursHTTP, oursUDP := lbBenchFreePort(t, "tcp"), lbBenchFreePort(t, "tcp"), lbBenchFreePort(t, "udp")
	oursPID := lbBenchOurBalancer(t, bins, pin, set.procs, &pb.BalancerConfig{LoadBalancers: []*pb.LoadBalancer{
		{Name: "bench-tcp", Type: "tcp", BindAddress: fmt.Sprintf("127.0.0.1:%d", oursTCP), Backends: []*pb.Backend{{Name: "nginx", Address: backend}}},
		{Name: "bench-http", Type: "http", BindAddress: fmt.Sprintf("127.0.0.1:%d", oursHTTP), Backends: []*pb.Backend{{Name: "nginx", Address: backend}}},
		{Name: "bench-udp", Type: "udp", BindAddress: fmt.Sprintf("127.0.0.1:%d", oursUDP), Backends: []*pb.Backend{{Name: "echo", Address: echo}}},
	}})

	url := func(port int) string { return fmt.Sprintf("http://127.0.0.1:%d/index.html", port) }
	udp := func(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }
	for _, u := range []string{url(haproxyPort), url(nginxHTTPPort), url(oursTCP), url(oursHTTP)} {
		lbBenchWait(t, u, func() error { return lbBenchGet(u) })
	}
	for _, a := range []string{udp(nginxUDPPort), udp(oursUDP)} {
		lbBenchWait(t, "udp "+a, func() error { return lbBenchUDPOnce(a) })
	}

	wrk := func(u string) func(t *testing.T, d time.Duration) lbBenchResult {
		return func(t *testing.T, d time.Duration) lbBenchResult { return lbBenchWrk(t, tools.wrk, u, set.conns, d) }
	}
	udpLoad := func(a string) func(t *testing.T, d time.Duration) lbBenchResult {
		return func(t *testing.T, d time.Duration) lbBenchResult { return lbBenchUDPLoad(t, a, set.conns, d) }
	}
	scenarios := []*lbBenchScenario{
		{title: "(a) tcp  vs HAProxy mode tcp", ours: lbBenchTarget{"keep-vip tcp", wrk(url(oursTCP)), oursPID, backendPID}, peer: lbBenchTarget{"haproxy", wrk(url(haproxyPort)), haproxyPID, backendPID}},
		{title: "(b) http vs nginx proxy_pass", ours: lbBenchTarget{"keep-vip http", wrk(url(oursHTTP)), oursPID, backendPID}, peer: lbBenchTarget{"nginx http", wrk(url(nginxHTTPPort)), nginxHTTPPID, backendPID}},
		{title: "(c) udp  vs nginx stream udp", ours: lbBenchTarget{"keep-vip udp", udpLoad(udp(oursUDP)), oursPID, echoPID}, peer: lbBenchTarget{"nginx udp", udpLoad(udp(nginxUDPPort)), nginxUDPPID, echoPID}},
	}

	if only := os.Getenv("KEEPVIP_BENCH_ONLY"); only != "" {
		var keep []*lbBenchScenario
		for _, sc := range scenarios {
			for _, w := range strings.Split(only, ",") {
				if strings.Contains(sc.title, " "+strings.TrimSpace(w)+" ") {
					keep = append(keep, sc)
				}
			}
		}
		scenarios = keep
	}
	if len(pin.sut) > 0 && set.procs > len(pin.sut) {
		t.Logf("bench: %d threads per proxy share %d CPU(s) with the backends (KEEPVIP_BENCH_PIN=0 lets them spread over all)", set.procs, len(pin.sut))
	}
	t.Logf("bench: %d rounds of %s per target, %d connections (udp: clients), %d thread(s) per proxy, %d CPUs, %s",
		set.rounds, set.duration, set.conns, set.procs, lbBenchCPUs(), pin)
	// A short warm-up of each target: keep-alive pools filled, sessions
	// and buffers allocated, the Go heap grown.
	for _, sc := range scenarios {
		for _, tg := range []lbBenchTarget{sc.ours, sc.peer} {
			tg.run(t, time.Second)
		}
	}
	for round := range set.rounds {
		for _, sc := range scenarios {
			order := []int{0, 1}
			if round%2 == 1 {
				order = []int{1, 0}
			}
			for _, which := range order {
				tg := []lbBenchTarget{sc.ours, sc.peer}[which]
				r := tg.measure(t, set.duration)
				sc.results[which] = append(sc.results[which], r)
				t.Logf("round %d %-14s %10.0f /s  p99 %-10s CPU %s/request, backend's %s", round+1, tg.name, r.rps, r.p99,
					r.cpu.Round(100*time.Nanosecond), r.backendCPU.Round(100*time.Nanosecond))
			}
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, "\nkeep-vip balancer vs peers: median of %d interleaved runs of %s, %d connections, %d thread(s) each, %d CPUs, %s\n",
		set.rounds, set.duration, set.conns, set.procs, lbBenchCPUs(), pin)
	fmt.Fprintf(&b, "%-30s %12s %12s %7s %10s %10s %7s %9s %9s  %s\n", "scenario", "ours /s", "peer /s", "ratio",
		"ours p99", "peer p99", "ratio", "ours CPU", "peer CPU", "targets (>=1.0x, <=1.1x)")
	for _, sc := range scenarios {
		o, p := lbBenchMedian(sc.results[0]), lbBenchMedian(sc.results[1])
		// The ratios are the medians of each round's ratio: a round's two
		// runs are back to back, so drift in the machine's load between
		// rounds cancels out.
		tputs, lats := lbBenchRatios(sc.results[0], sc.results[1])
		tput, lat := lbBenchMedianOf(tputs), lbBenchMedianOf(lats)
		verdict := "met"
		if tput < 1.0 || lat > 1.1 {
			verdict = "NOT met"
		}
		fmt.Fprintf(&b, "%-30s %12.0f %12.0f %6.2fx %10s %10s %6.2fx %9s %9s  %s\n", sc.title, o.rps, p.rps, tput,
			o.p99.Round(time.Microsecond), p.p99.Round(time.Microsecond), lat,
			o.cpu.Round(100*time.Nanosecond), p.cpu.Round(100*time.Nanosecond), verdict)
		fmt.Fprintf(&b, "%-30s rounds: %s\n", "", lbBenchSpread(tputs, lats))
		fmt.Fprintf(&b, "%-30s backend's CPU per request behind ours %s, behind the peer %s\n", "",
			o.backendCPU.Round(100*time.Nanosecond), p.backendCPU.Round(100*time.Nanosecond))
	}
	t.Log(b.String())
}

// lbBenchTools are the peers' and the load's binaries.
type lbBenchTools struct {
	haproxy, nginx, wrk string
	// streamModule is nginx's dynamic stream module, "" when built in.
	streamModule string
}

func lbBenchNeedTools(t *testing.T) lbBenchTools {
	t.Helper()
	look := func() (lbBenchTools, []string) {
		var tl lbBenchTools
		var missing []string
		for _, x := range []struct {
			name string
			p    *string
		}{{"haproxy", &tl.haproxy}, {"nginx", &tl.nginx}, {"wrk", &tl.wrk}} {
			p, err := exec.LookPath(x.name)
			if err != nil {
				for _, dir := range []string{"/usr/sbin", "/usr/local/sbin"} {
					if _, serr := os.Stat(filepath.Join(dir, x.name)); serr == nil {
						p, err = filepath.Join(dir, x.name), nil
					}
				}
			}
			if err != nil {
				missing = append(missing, x.name)
			}
			*x.p = p
		}
		return tl, missing
	}
	// findStream finds nginx's stream module: built in (""), or the
	// dynamic module's file; ok is false when there is neither.
	findStream := func(nginx string) (module string, ok bool) {
		out, _ := exec.Command(nginx, "-V").CombinedOutput()
		if strings.Contains(string(out), "--with-stream") && !strings.Contains(string(out), "--with-stream=dynamic") {
			return "", true
		}
		for _, p := range []string{"/usr/lib/nginx/modules/ngx_stream_module.so", "/usr/share/nginx/modules/ngx_stream_module.so"} {
			if _, err := os.Stat(p); err == nil {
				return p, true
			}
		}
		return "", false
	}
	tl, missing := look()
	if len(missing) == 0 {
		if _, ok := findStream(tl.nginx); !ok {
			missing = append(missing, "nginx's stream module")
		}
	}
	if len(missing) > 0 {
		t.Logf("bench: installing %s with apt-get", strings.Join(missing, ", "))
		// Debian's nginx only recommends its stream module, and
		// recommends are not installed: it is named.
		if err := benchAptInstall("haproxy", "nginx", "libnginx-mod-stream", "wrk"); err != nil {
			t.Skipf("benchmark needs %s: %v", strings.Join(missing, ", "), err)
		}
		if tl, missing = look(); len(missing) > 0 {
			t.Skipf("benchmark needs %s, still missing after apt-get", strings.Join(missing, ", "))
		}
	}
	module, ok := findStream(tl.nginx)
	if !ok {
		t.Skip("benchmark needs nginx's stream module (Debian: apt-get install libnginx-mod-stream)")
	}
	tl.streamModule = module
	return tl
}

func lbBenchCPUs() int { return runtime.NumCPU() }

// lbBenchPin is where the bench's processes run, as CPU lists of taskset;
// empty ones when nothing is pinned. The load generator gets a CPU of its
// own and the proxies and backends share the others, as HAProxy's and
// nginx's own benchmarks are run: the clients of a real deployment are
// other machines, and a load generator that competes with the proxy for
// a CPU adds its own scheduling to what is measured (measured here:
// unpinned, the same pair of runs swung by a quarter or more).
type lbBenchPin struct {
	load, sut []int
}

// lbBenchPinFor pins on a machine of cpus CPUs: the load on CPU 0, the
// proxies and backends on the rest; nothing on one CPU.
func lbBenchPinFor(cpus int) lbBenchPin {
	if cpus < 2 {
		return lbBenchPin{}
	}
	p := lbBenchPin{load: []int{0}}
	for c := 1; c < cpus; c++ {
		p.sut = append(p.sut, c)
	}
	return p
}

func (p lbBenchPin) String() string {
	if len(p.sut) == 0 {
		return "not pinned"
	}
	return fmt.Sprintf("load on CPU %s, proxies and backends on CPU %s", lbBenchCPUList(p.load), lbBenchCPUList(p.sut))
}

func lbBenchCPUList(cpus []int) string {
	s := make([]string, len(cpus))
	for i, c := range cpus {
		s[i] = strconv.Itoa(c)
	}
	return strings.Join(s, ",")
}

// command runs path on the proxies' CPUs: taskset sets the mask and execs
// it, so the process keeps taskset's pid and every process and thread it
// starts inherits the mask.
func (p lbBenchPin) command(path string, args ...string) *exec.Cmd {
	if len(p.sut) == 0 {
		return exec.Command(path, args...)
	}
	return exec.Command("taskset", append([]string{"-c", lbBenchCPUList(p.sut), path}, args...)...)
}

// self moves every thread of this process to the load's CPUs until the
// test ends; threads started later inherit the mask of the one starting
// them, and so do wrk and the other children started meanwhile.
func (p lbBenchPin) self(t *testing.T) {
	t.Helper()
	if len(p.load) == 0 {
		return
	}
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		t.Fatalf("bench: read CPU affinity: %v", err)
	}
	for _, c := range p.load {
		set.Set(c)
	}
	setAll := func(s *unix.CPUSet) error {
		// Twice: a thread started during the first pass may have
		// inherited the old mask.
		for range 2 {
			tasks, err := os.ReadDir("/proc/self/task")
			if err != nil {
				return err
			}
			for _, task := range tasks {
				if tid, err := strconv.Atoi(task.Name()); err == nil {
					// A thread that ended meanwhile is no error.
					if err := unix.SchedSetaffinity(tid, s); err != nil && err != unix.ESRCH {
						return fmt.Errorf("thread %d: %w", tid, err)
					}
				}
			}
		}
		return nil
	}
	if err := setAll(&set); err != nil {
		t.Fatalf("bench: pin the load to CPU %s: %v", lbBenchCPUList(p.load), err)
	}
	t.Cleanup(func() {
		if err := setAll(&old); err != nil {
			t.Errorf("bench: restore CPU affinity: %v", err)
		}
	})
}

// lbBenchFreePort is a port free on 127.0.0.1 for network, now.
func lbBenchFreePort(t *testing.T, network string) int {
	t.Helper()
	if network == "udp" {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		return pc.LocalAddr().(*net.UDPAddr).Port
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// lbBenchStart runs a peer in the foreground, output to a log file, and
// stops it at the end of the test.
func lbBenchStart(t *testing.T, pin lbBenchPin, dir, name string, env []string, path string, args ...string) int {
	t.Helper()
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := pin.command(path, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logf.Name()); err == nil && len(b) > 0 {
				t.Logf("%s log:\n%s", name, tail(string(b), 2000))
			}
		}
	})
	return cmd.Process.Pid
}

func lbBenchWait(t *testing.T, what string, probe func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := probe()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("bench: %s not ready: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func lbBenchGet(url string) error {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// nginx's runtime files all under dir, and root workers when run as root
// (the default user could not read dir).
func lbBenchNginxCommon(dir, name string, procs int) string {
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;\n"
	}
	tmp := filepath.Join(dir, name+"-tmp")
	os.MkdirAll(tmp, 0o700)
	return fmt.Sprintf(`%sworker_processes %d;
pid %s/%s.pid;
error_log %s/%s-error.log warn;
events { worker_connections 4096; }
`, user, procs, dir, name, dir, name)
}

func lbBenchHTTPTemp(dir, name string) string {
	tmp := filepath.Join(dir, name+"-tmp")
	return fmt.Sprintf(`  client_body_temp_path %[1]s/body; proxy_temp_path %[1]s/proxy; fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi; scgi_temp_path %[1]s/scgi;
  access_log off;
`, tmp)
}

func lbBenchBackendConf(dir string, port int) string {
	www := filepath.Join(dir, "www")
	os.MkdirAll(www, 0o755)
	os.WriteFile(filepath.Join(www, "index.html"), []byte(lbBenchFile), 0o644)
	return lbBenchNginxCommon(dir, "backend", 1) + "http {\n" + lbBenchHTTPTemp(dir, "backend") + fmt.Sprintf(`  sendfile on;
  keepalive_requests 100000000;
  keepalive_timeout 75s;
  open_file_cache max=16;
  server {
    listen 127.0.0.1:%d backlog=4096;
    root %s;
  }
}
`, port, www)
}

// lbBenchProxyConf is nginx as an http reverse proxy with what ours does:
// keep-alive to the backend (the pool size ours has), the Host header kept,
// X-Forwarded-For appended and X-Forwarded-Proto set, the same timeouts.
func lbBenchProxyConf(dir string, procs, port int, backend string) string {
	return lbBenchNginxCommon(dir, "proxy", procs) + "http {\n" + lbBenchHTTPTemp(dir, "proxy") + fmt.Sprintf(`  keepalive_requests 100000000;
  keepalive_timeout 60s;
  upstream backend {
    server %s;
    keepalive 256;
    keepalive_requests 100000000;
    keepalive_timeout 60s;
  }
  server {
    listen 127.0.0.1:%d backlog=4096;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_connect_timeout 2s;
      proxy_read_timeout 60s;
    }
  }
}
`, backend, port)
}

// lbBenchStreamConf is nginx's udp proxy with our udp defaults: a session
// per client, 30s idle timeout.
func lbBenchStreamConf(tools lbBenchTools, dir string, procs, port int, backend string) string {
	load := ""
	if tools.streamModule != "" {
		load = fmt.Sprintf("load_module %s;\n", tools.streamModule)
	}
	return load + lbBenchNginxCommon(dir, "stream", procs) + fmt.Sprintf(`stream {
  upstream echo {
    server %s;
  }
  server {
    listen 127.0.0.1:%d udp;
    proxy_pass echo;
    proxy_timeout 30s;
  }
}
`, backend, port)
}

func lbBenchNginx(t *testing.T, tools lbBenchTools, pin lbBenchPin, dir, name string, procs int, conf string) int {
	t.Helper()
	path := filepath.Join(dir, name+".conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(tools.nginx, "-t", "-q", "-p", dir, "-c", path).CombinedOutput(); err != nil {
		t.Fatalf("nginx %s config: %v\n%s\n%s", name, err, out, conf)
	}
	return lbBenchStart(t, pin, dir, "nginx-"+name, nil, tools.nginx, "-p", dir, "-c", path, "-g", "daemon off;")
}

// lbBenchHAProxy is HAProxy in mode tcp with our tcp defaults: round robin,
// 2s connect timeout, 10 minute idle timeouts, no logging.
func lbBenchHAProxy(t *testing.T, tools lbBenchTools, pin lbBenchPin, dir string, procs, port int, backend string) int {
	t.Helper()
	conf := fmt.Sprintf(`global
  nbthread %d
  maxconn 4096
defaults
  mode tcp
  timeout connect 2s
  timeout client 10m
  timeout server 10m
frontend bench
  bind 127.0.0.1:%d
  default_backend nginx
backend nginx
  balance roundrobin
  server nginx %s
`, procs, port, backend)
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(tools.haproxy, "-c", "-q", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("haproxy config: %v\n%s", err, out)
	}
	return lbBenchStart(t, pin, dir, "haproxy", nil, tools.haproxy, "-db", "-f", path)
}

// lbBenchOurBalancer starts the balancer plugin binary as the supervisor
// does and configures it with cfg.
func lbBenchOurBalancer(t *testing.T, bins Binaries, pin lbBenchPin, procs int, cfg *pb.BalancerConfig) int {
	t.Helper()
	cmd := pin.command(filepath.Join(bins.Dir, "keep-vip-balancer"))
	cmd.Env = append(os.Environ(), fmt.Sprintf("GOMAXPROCS=%d", procs), rpc.LogLevelEnv+"=warn")
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  rpc.Handshake,
		Plugins:          plugin.PluginSet{rpc.KindBalancer: rpc.PluginMap[rpc.KindBalancer]},
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		Logger:           hclog.NewNullLogger(),
	})
	t.Cleanup(client.Kill)
	proto, err := client.Client()
	if err != nil {
		t.Fatalf("start keep-vip-balancer: %v", err)
	}
	impl, err := proto.Dispense(rpc.KindBalancer)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := impl.(rpc.Balancer).Configure(ctx, cfg); err != nil {
		t.Fatalf("configure keep-vip-balancer: %v", err)
	}
	return client.ReattachConfig().Pid
}

var (
	lbBenchRPSRe = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	lbBenchP99Re = regexp.MustCompile(`\n\s+99%\s+([0-9.]+)(us|ms|s)\b`)
)

// lbBenchWrk runs wrk with one thread (the machine's other CPUs are the
// proxies' and the backend's) and returns its rate and p99.
func lbBenchWrk(t *testing.T, wrk, url string, conns int, d time.Duration) lbBenchResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	defer cancel()
	secs := int(d.Round(time.Second) / time.Second)
	out, err := exec.CommandContext(ctx, wrk, "-t1", "-c"+strconv.Itoa(conns), "-d"+strconv.Itoa(secs)+"s", "--latency", url).CombinedOutput()
	if err != nil {
		t.Fatalf("wrk %s: %v\n%s", url, err, out)
	}
	if strings.Contains(string(out), "Non-2xx") || strings.Contains(string(out), "Socket errors") {
		t.Logf("wrk %s reported errors:\n%s", url, out)
	}
	m, l := lbBenchRPSRe.FindSubmatch(out), lbBenchP99Re.FindSubmatch(out)
	if m == nil || l == nil {
		t.Fatalf("wrk output not understood:\n%s", out)
	}
	rps, _ := strconv.ParseFloat(string(m[1]), 64)
	v, _ := strconv.ParseFloat(string(l[1]), 64)
	unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[string(l[2])]
	return lbBenchResult{rps: rps, p99: time.Duration(v * float64(unit))}
}

// lbBenchUDPEcho is the udp backend, a process of its own beside the
// proxies (the test binary as helperUDPEcho): it sends every datagram back.
func lbBenchUDPEcho(t *testing.T, pin lbBenchPin, dir string) (addr string, pid int) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	addr = fmt.Sprintf("127.0.0.1:%d", lbBenchFreePort(t, "udp"))
	pid = lbBenchStart(t, pin, dir, "udp-echo", []string{helperModeEnv + "=" + helperUDPEcho}, self, addr)
	lbBenchWait(t, "udp echo", func() error { return lbBenchUDPOnce(addr) })
	return addr, pid
}

func lbBenchUDPOnce(addr string) error {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 16)
	_, err = c.Read(buf)
	return err
}

// lbBenchUDPLoad runs clients closed-loop clients for d, each its own socket
// (its own session in the proxy): send 64 bytes, wait for the echo, again.
// A datagram unanswered within 200ms counts as lost and as a 200ms sample.
// Latencies go into 10µs buckets up to 200ms.
func lbBenchUDPLoad(t *testing.T, addr string, clients int, d time.Duration) lbBenchResult {
	t.Helper()
	const bucket, maxWait = 10 * time.Microsecond, 200 * time.Millisecond
	nb := int(maxWait/bucket) + 1
	hists := make([][]uint32, clients)
	var lost, total int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	stop := start.Add(d)
	for i := range clients {
		hists[i] = make([]uint32, nb)
		c, err := net.Dial("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func(h []uint32, c net.Conn) {
			defer wg.Done()
			defer c.Close()
			msg, buf := []byte(strings.Repeat("u", 64)), make([]byte, 2048)
			var n, l int64
			for {
				t0 := time.Now()
				if t0.After(stop) {
					break
				}
				c.SetReadDeadline(t0.Add(maxWait))
				c.Write(msg)
				_, err := c.Read(buf)
				el := time.Since(t0)
				if err != nil {
					l++
					el = maxWait
				}
				h[min(int(el/bucket), nb-1)]++
				n++
			}
			mu.Lock()
			total += n
			lost += l
			mu.Unlock()
		}(hists[i], c)
	}
	wg.Wait()
	elapsed := time.Since(start)
	merged := make([]uint64, nb)
	for _, h := range hists {
		for i, v := range h {
			merged[i] += uint64(v)
		}
	}
	var seen uint64
	p99 := maxWait
	for i, v := range merged {
		seen += v
		if float64(seen) >= 0.99*float64(total) {
			p99 = time.Duration(i+1) * bucket
			break
		}
	}
	if lost > 0 {
		t.Logf("udp %s: %d of %d datagrams lost", addr, lost, total)
	}
	return lbBenchResult{rps: float64(total-lost) / elapsed.Seconds(), p99: p99}
}

// lbBenchRatios are the rounds' throughput and p99 ratios, each sorted:
// the table shows their medians, the spread line their range.
func lbBenchRatios(ours, peer []lbBenchResult) (tput, p99 []float64) {
	for i := range min(len(ours), len(peer)) {
		if peer[i].rps > 0 && peer[i].p99 > 0 {
			tput = append(tput, ours[i].rps/peer[i].rps)
			p99 = append(p99, float64(ours[i].p99)/float64(peer[i].p99))
		}
	}
	sort.Float64s(tput)
	sort.Float64s(p99)
	return tput, p99
}

func lbBenchMedianOf(sorted []float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[len(sorted)/2]
}

// lbBenchSpread says how far the rounds' ratios ranged and in how many
// rounds each target held: a median a little under a target with rounds
// on both sides of it is a tie within the machine's noise, not a verdict.
func lbBenchSpread(tput, p99 []float64) string {
	if len(tput) == 0 {
		return "no round measured"
	}
	var tputMet, p99Met int
	for i := range tput {
		if tput[i] >= 1.0 {
			tputMet++
		}
		if p99[i] <= 1.1 {
			p99Met++
		}
	}
	return fmt.Sprintf("throughput %.2f-%.2fx (>=1.0x in %d of %d rounds), p99 %.2f-%.2fx (<=1.1x in %d of %d)",
		tput[0], tput[len(tput)-1], tputMet, len(tput), p99[0], p99[len(p99)-1], p99Met, len(p99))
}

func lbBenchMedian(rs []lbBenchResult) lbBenchResult {
	if len(rs) == 0 {
		return lbBenchResult{}
	}
	rps := make([]float64, len(rs))
	p99, cpu, bcpu := make([]time.Duration, len(rs)), make([]time.Duration, len(rs)), make([]time.Duration, len(rs))
	for i, r := range rs {
		rps[i], p99[i], cpu[i], bcpu[i] = r.rps, r.p99, r.cpu, r.backendCPU
	}
	sort.Float64s(rps)
	for _, l := range [][]time.Duration{p99, cpu, bcpu} {
		sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	}
	m := len(rs) / 2
	return lbBenchResult{rps: rps[m], p99: p99[m], cpu: cpu[m], backendCPU: bcpu[m]}
}

// lbBenchCPU is the CPU time pid and its children (nginx's workers) have
// used, from /proc: user and system time, every thread.
func lbBenchCPU(pid int) time.Duration {
	pids := []int{pid}
	if procs, err := listProcesses(); err == nil {
		for _, p := range procs {
			if p.PPID == pid {
				pids = append(pids, p.PID)
			}
		}
	}
	var ticks int64
	for _, p := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		// Fields after "(comm)": state is the 3rd field, utime the 14th.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 12 {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			s, _ := strconv.ParseInt(f[12], 10, 64)
			ticks += u + s
		}
	}
	// USER_HZ is 100 on Linux.
	return time.Duration(ticks) * 10 * time.Millisecond
}

// TestBenchSpread checks the bench's summary arithmetic: paired rounds,
// medians of the ratios and how many rounds met each target.
func TestBenchSpread(t *testing.T) {
	ms := time.Millisecond
	ours := []lbBenchResult{{rps: 90, p99: 2 * ms}, {rps: 110, p99: 1 * ms}, {rps: 100, p99: 3 * ms}}
	peer := []lbBenchResult{{rps: 100, p99: 2 * ms}, {rps: 100, p99: 2 * ms}, {rps: 100, p99: 2 * ms}}
	tput, p99 := lbBenchRatios(ours, peer)
	if got := lbBenchMedianOf(tput); got != 1.0 {
		t.Errorf("median throughput ratio %v, want 1.0", got)
	}
	if got := lbBenchMedianOf(p99); got != 1.0 {
		t.Errorf("median p99 ratio %v, want 1.0", got)
	}
	want := "throughput 0.90-1.10x (>=1.0x in 2 of 3 rounds), p99 0.50-1.50x (<=1.1x in 2 of 3)"
	if got := lbBenchSpread(tput, p99); got != want {
		t.Errorf("spread\n got %s\nwant %s", got, want)
	}
	if got := lbBenchSpread(nil, nil); got != "no round measured" {
		t.Errorf("spread of nothing: %s", got)
	}
}

// TestBenchPin checks where the bench puts its processes for a number of
// CPUs: the load alone on CPU 0, the proxies and backends on the rest.
func TestBenchPin(t *testing.T) {
	for _, tc := range []struct {
		cpus      int
		sut, text string
	}{
		{1, "", "not pinned"},
		{2, "1", "load on CPU 0, proxies and backends on CPU 1"},
		{4, "1,2,3", "load on CPU 0, proxies and backends on CPU 1,2,3"},
	} {
		p := lbBenchPinFor(tc.cpus)
		if got := lbBenchCPUList(p.sut); got != tc.sut {
			t.Errorf("%d CPUs: proxies on %q, want %q", tc.cpus, got, tc.sut)
		}
		if got := p.String(); got != tc.text {
			t.Errorf("%d CPUs: %q, want %q", tc.cpus, got, tc.text)
		}
		args := p.command("/bin/true", "x").Args
		if wantTaskset := tc.sut != ""; wantTaskset != (args[0] == "taskset") {
			t.Errorf("%d CPUs: command %q", tc.cpus, args)
		}
	}
}
