package checker

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// probeTimeout is the timeout of the probes that must not time out; the
// ones that must are given hungTimeout.
const (
	probeTimeout = 2 * time.Second
	hungTimeout  = 200 * time.Millisecond
	// slack is how much later than its timeout a timed-out probe may return.
	slack = 800 * time.Millisecond
)

// mustProber builds the prober of check, failing the test if it is refused.
func mustProber(t *testing.T, check *pb.Check) prober {
	t.Helper()
	newP, ok := defaultProbers[check.Protocol]
	if !ok {
		t.Fatalf("no prober for %q", check.Protocol)
	}
	p, err := newP(check)
	if err != nil {
		t.Fatalf("prober for %v: %v", check, err)
	}
	return p
}

// probe runs p once with timeout and returns its output, error and time.
func probe(p prober, timeout time.Duration) (string, error, time.Duration) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := p.Probe(ctx)
	return out, err, time.Since(start)
}

// wantErr checks err against want: "" means no error, else a substring.
func wantErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("probe failed: %v", err)
	case want != "" && err == nil:
		t.Errorf("probe passed, want an error containing %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Errorf("error %q lacks %q", err, want)
	}
}

// hungTCP accepts connections on 127.0.0.1 and never writes a byte: a peer
// that is up but stuck.
func hungTCP(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := make(chan net.Conn, 16)
	t.Cleanup(func() {
		ln.Close()
		close(conns)
		for c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case conns <- c:
			default:
				c.Close()
			}
		}
	}()
	return ln.Addr().String()
}

func TestTCPProbe(t *testing.T) {
	for _, tt := range []struct {
		name, addr, want string
	}{
		{"listening", listen(t).Addr().String(), ""},
		{"closed port", closedAddr(t), "refused"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err, _ := probe(mustProber(t, &pb.Check{Name: "t", Protocol: "tcp", Address: tt.addr}), probeTimeout)
			wantErr(t, err, tt.want)
		})
	}
}

// newTLSServer is httptest.NewTLSServer without the server's log of the
// handshakes the tests fail on purpose.
func newTLSServer(t *testing.T) *httptest.Server {
	srv := httptest.NewUnstartedServer(testHandler())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// testHandler is the HTTP service the http and https checks ask.
func testHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello world") })
	mux.HandleFunc("/fail", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "down for maintenance", 503) })
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/fail", http.StatusFound) })
	mux.HandleFunc("/post-only", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "no", http.StatusMethodNotAllowed)
		}
	})
	mux.HandleFunc("/header", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Health-Token") != "s3cret" {
			http.Error(w, "no token", http.StatusForbidden)
		}
	})
	mux.HandleFunc("/vhost", func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "svc.example" {
			http.Error(w, "wrong host "+r.Host, http.StatusNotFound)
		}
	})
	return mux
}

func httpCheck(scheme, addr string, h *pb.HTTPCheck) *pb.Check {
	return &pb.Check{Name: "web", Protocol: scheme, Address: addr, Http: h}
}

func TestHTTPProbe(t *testing.T) {
	srv := httptest.NewServer(testHandler())
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	for _, tt := range []struct {
		name string
		h    *pb.HTTPCheck
		want string
	}{
		{"200", &pb.HTTPCheck{Path: "/ok"}, ""},
		{"no settings at all: GET / is 404", nil, "status 404 Not Found, want 2xx or 3xx"},
		{"503", &pb.HTTPCheck{Path: "/fail"}, "GET http://" + addr + "/fail: status 503"},
		{"503 expected", &pb.HTTPCheck{Path: "/fail", ExpectStatus: []int32{503}}, ""},
		{"not among expected", &pb.HTTPCheck{Path: "/ok", ExpectStatus: []int32{204, 301}}, "status 200 OK, want 204 or 301"},
		{"redirect not followed", &pb.HTTPCheck{Path: "/redirect"}, ""},
		{"redirect when 200 expected", &pb.HTTPCheck{Path: "/redirect", ExpectStatus: []int32{200}}, "status 302"},
		{"body contains", &pb.HTTPCheck{Path: "/ok", BodyContains: "world"}, ""},
		{"body lacks", &pb.HTTPCheck{Path: "/ok", BodyContains: "planet"}, `lacks "planet"`},
		{"method", &pb.HTTPCheck{Path: "/post-only", Method: "POST"}, ""},
		{"wrong method", &pb.HTTPCheck{Path: "/post-only"}, "status 405"},
		{"header", &pb.HTTPCheck{Path: "/header", Headers: map[string]string{"x-health-token": "s3cret"}}, ""},
		{"no header", &pb.HTTPCheck{Path: "/header"}, "status 403"},
		{"host", &pb.HTTPCheck{Path: "/vhost", Host: "svc.example"}, ""},
		{"no host", &pb.HTTPCheck{Path: "/vhost"}, "status 404"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err, _ := probe(mustProber(t, httpCheck("http", addr, tt.h)), probeTimeout)
			wantErr(t, err, tt.want)
		})
	}

	t.Run("closed port", func(t *testing.T) {
		_, err, _ := probe(mustProber(t, httpCheck("http", closedAddr(t), nil)), probeTimeout)
		wantErr(t, err, "refused")
	})
	t.Run("plain http to an https server", func(t *testing.T) {
		tls := newTLSServer(t)
		_, err, _ := probe(mustProber(t, httpCheck("http", tls.Listener.Addr().String(), &pb.HTTPCheck{Path: "/ok"})), probeTimeout)
		wantErr(t, err, "status 400")
	})
	t.Run("hung server", func(t *testing.T) {
		_, err, took := probe(mustProber(t, httpCheck("http", hungTCP(t), &pb.HTTPCheck{Path: "/ok"})), hungTimeout)
		wantErr(t, err, "deadline exceeded")
		if took < hungTimeout || took > hungTimeout+slack {
			t.Errorf("hung server probe took %s, want about the %s timeout", took, hungTimeout)
		}
	})
}

func TestHTTPSProbe(t *testing.T) {
	srv := newTLSServer(t) // self-signed for 127.0.0.1, ::1 and example.com
	addr := srv.Listener.Addr().String()
	// trusting makes p verify against the test server's certificate, as it
	// would against a CA in the system's store.
	trusting := func(t *testing.T, p prober) prober {
		pool := x509.NewCertPool()
		pool.AddCert(srv.Certificate())
		p.(*httpProber).client.Transport.(*http.Transport).TLSClientConfig.RootCAs = pool
		return p
	}
	for _, tt := range []struct {
		name  string
		h     *pb.HTTPCheck
		trust bool
		want  string
	}{
		{"self-signed refused", &pb.HTTPCheck{Path: "/ok"}, false, "certificate"},
		{"insecureSkipVerify", &pb.HTTPCheck{Path: "/ok", InsecureSkipVerify: true}, false, ""},
		{"insecureSkipVerify still checks the status", &pb.HTTPCheck{Path: "/fail", InsecureSkipVerify: true}, false, "GET https://" + addr + "/fail: status 503"},
		{"verified by IP", &pb.HTTPCheck{Path: "/ok", BodyContains: "hello"}, true, ""},
		{"verified by host", &pb.HTTPCheck{Path: "/ok", Host: "example.com"}, true, ""},
		{"host not in the certificate", &pb.HTTPCheck{Path: "/ok", Host: "svc.example"}, true, "svc.example"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := mustProber(t, httpCheck("https", addr, tt.h))
			if tt.trust {
				p = trusting(t, p)
			}
			_, err, _ := probe(p, probeTimeout)
			wantErr(t, err, tt.want)
		})
	}
	t.Run("hung TLS handshake", func(t *testing.T) {
		_, err, took := probe(mustProber(t, httpCheck("https", hungTCP(t), &pb.HTTPCheck{InsecureSkipVerify: true})), hungTimeout)
		wantErr(t, err, "deadline exceeded")
		if took > hungTimeout+slack {
			t.Errorf("probe took %s, want about the %s timeout", took, hungTimeout)
		}
	})
}

// udpServer answers every datagram by reply(datagram); a nil reply never
// answers: a peer that is up but stuck.
func udpServer(t *testing.T, reply func([]byte) []byte) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, maxDatagram)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if reply != nil {
				_, _ = pc.WriteTo(reply(buf[:n]), from)
			}
		}
	}()
	return pc.LocalAddr().String()
}

// closedUDP returns a UDP address on 127.0.0.1 where nothing listens.
func closedUDP(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

func TestUDPProbe(t *testing.T) {
	echo := udpServer(t, func(b []byte) []byte { return append([]byte("pong "), b...) })
	silent := udpServer(t, nil)
	for _, tt := range []struct {
		name, addr string
		udp        *pb.UDPCheck
		timeout    time.Duration
		want       string
	}{
		{"any reply", echo, &pb.UDPCheck{Payload: []byte("ping")}, probeTimeout, ""},
		{"empty datagram", echo, nil, probeTimeout, ""},
		{"expected reply", echo, &pb.UDPCheck{Payload: []byte("ping\x00\xff"), Expect: []byte("pong ping\x00\xff")}, probeTimeout, ""},
		{"reply contains", echo, &pb.UDPCheck{Payload: []byte("ping"), Expect: []byte("ng pi")}, probeTimeout, ""},
		{"wrong reply", echo, &pb.UDPCheck{Payload: []byte("ping"), Expect: []byte("PONG")}, probeTimeout, `reply "pong ping" lacks "PONG"`},
		{"no reply", silent, &pb.UDPCheck{Payload: []byte("ping")}, hungTimeout, "no reply within"},
		{"port unreachable", closedUDP(t), &pb.UDPCheck{Payload: []byte("ping")}, probeTimeout, "port unreachable"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err, took := probe(mustProber(t, &pb.Check{Name: "u", Protocol: "udp", Address: tt.addr, Udp: tt.udp}), tt.timeout)
			wantErr(t, err, tt.want)
			if took > tt.timeout+slack {
				t.Errorf("probe took %s with a timeout of %s", took, tt.timeout)
			}
			if tt.name == "port unreachable" && took > hungTimeout {
				t.Errorf("an unreachable port took %s, want the ICMP error at once", took)
			}
		})
	}
}

func execCheck(command string, shell bool, args ...string) *pb.Check {
	return &pb.Check{Name: "script", Protocol: "exec", Exec: &pb.ExecCheck{Command: command, Args: args, Shell: shell}}
}

func TestExecProbe(t *testing.T) {
	// As go-plugin starts the checker plugin; the check's command gets
	// everything but these.
	t.Setenv("KEEP_VIP_PLUGIN", "cookie")
	t.Setenv("PLUGIN_MIN_PORT", "10000")
	t.Setenv("KEEPVIP_EXEC_TEST", "kept")
	for _, tt := range []struct {
		name       string
		check      *pb.Check
		want       string
		wantOutput string // exact, after trimming
	}{
		{"true", execCheck("/bin/true", false), "", ""},
		{"false", execCheck("/bin/false", false), "/bin/false: exit status 1", ""},
		{"found in PATH", execCheck("true", false), "", ""},
		{"not found", execCheck("/nonexistent/check", false), "no such file", ""},
		{"args verbatim, no shell", execCheck("/bin/echo", false, "a  b", "$HOME", ";", "exit 1"), "", "a  b $HOME ; exit 1"},
		{"shell", execCheck("echo out; echo err >&2; exit 3", true), "exit status 3", "out\nerr"},
		{"shell args", execCheck(`test "$1" = x && echo "$0"`, true, "x"), "", "script"},
		{"shell args fail", execCheck(`test "$1" = x`, true, "y"), "exit status 1", ""},
		{"no go-plugin variables", execCheck(`echo "${KEEP_VIP_PLUGIN:-none} ${PLUGIN_MIN_PORT:-none} $KEEPVIP_EXEC_TEST"`, true), "", "none none kept"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, err, _ := probe(mustProber(t, tt.check), probeTimeout)
			wantErr(t, err, tt.want)
			if out != tt.wantOutput {
				t.Errorf("output %q, want %q", out, tt.wantOutput)
			}
		})
	}

	t.Run("output kept short and valid UTF-8", func(t *testing.T) {
		// 5000 bytes, an invalid byte among them, and a multi-byte
		// character across the cut.
		out, err, _ := probe(mustProber(t, execCheck(`printf '\377'; i=0; while [ $i -lt 2500 ]; do printf 'é'; i=$((i+1)); done`, true)), probeTimeout)
		wantErr(t, err, "")
		if len(out) > MaxOutput+len("…")+len("\uFFFD") || len(out) < MaxOutput/2 || !utf8.ValidString(out) {
			t.Errorf("output of %d bytes (valid UTF-8: %v), want at most about %d valid bytes", len(out), utf8.ValidString(out), MaxOutput)
		}
	})
}

// liveGroupMembers lists the processes of process group pgid that are not
// zombies (a zombie is dead; it only waits to be reaped by its parent).
func liveGroupMembers(t *testing.T, pgid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces and parens.
		rest := string(stat[strings.LastIndexByte(string(stat), ')')+1:])
		f := strings.Fields(rest)
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if g, _ := strconv.Atoi(f[2]); g == pgid {
			out = append(out, pid)
		}
	}
	return out
}

// waitGroupGone waits (bounded) until process group pgid has no live member.
func waitGroupGone(t *testing.T, pgid int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		left := liveGroupMembers(t, pgid)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("process group %d still has live members %v", pgid, left)
			for _, pid := range left {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestExecTimeoutKillsProcessGroup(t *testing.T) {
	t.Run("sleep", func(t *testing.T) {
		_, err, took := probe(mustProber(t, execCheck("sleep", false, "10")), hungTimeout)
		wantErr(t, err, "sleep: killed after the timeout")
		if took < hungTimeout || took > hungTimeout+slack {
			t.Errorf("probe took %s, want about the %s timeout", took, hungTimeout)
		}
	})
	t.Run("script with children", func(t *testing.T) {
		// The shell leads the group ($$ is its id); a background sleep and
		// a foreground one are its children in the same group.
		out, err, took := probe(mustProber(t, execCheck("echo $$; sleep 10 & sleep 10", true)), hungTimeout)
		wantErr(t, err, "killed after the timeout")
		if took > hungTimeout+slack {
			t.Errorf("probe took %s, want about the %s timeout", took, hungTimeout)
		}
		pgid, perr := strconv.Atoi(out)
		if perr != nil {
			t.Fatalf("output %q is not the shell's pid", out)
		}
		waitGroupGone(t, pgid)
	})
	t.Run("leftover child of a command that passed", func(t *testing.T) {
		// The script exits 0 at once and leaves a sleep behind that holds
		// the output pipe: the check must not wait for it, and the sleep
		// goes with the group.
		out, err, took := probe(mustProber(t, execCheck("echo $$; sleep 10 & exit 0", true)), probeTimeout)
		wantErr(t, err, "")
		if took > slack {
			t.Errorf("probe took %s, want it to end with the script", took)
		}
		pgid, perr := strconv.Atoi(out)
		if perr != nil {
			t.Fatalf("output %q is not the shell's pid", out)
		}
		waitGroupGone(t, pgid)
	})
	t.Run("escapee holding the pipe", func(t *testing.T) {
		// setsid leaves the group, so it outlives the check; the check
		// stops reading its output shortly after the script ended.
		if _, err := os.Stat("/usr/bin/setsid"); err != nil {
			t.Skip("no setsid")
		}
		out, err, took := probe(mustProber(t, execCheck("setsid sleep 3 & sleep 0.1; echo $!", true)), probeTimeout)
		pid, perr := strconv.Atoi(out)
		if perr != nil {
			t.Fatalf("output %q is not the escapee's pid", out)
		}
		t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
		wantErr(t, err, "")
		if took < outputGrace || took > slack {
			t.Errorf("probe took %s, want the script's 100ms and at most the output grace more", took)
		}
		if len(liveGroupMembers(t, pid)) == 0 {
			t.Errorf("escapee %d not found", pid)
		}
	})
}

func TestProberSettingsRefused(t *testing.T) {
	for _, tt := range []struct {
		name  string
		check *pb.Check
		want  string
	}{
		{"tcp without port", &pb.Check{Protocol: "tcp", Address: "127.0.0.1"}, "missing port"},
		{"tcp with http settings", &pb.Check{Protocol: "tcp", Address: "127.0.0.1:1", Http: &pb.HTTPCheck{}}, "has http settings"},
		{"http with exec settings", &pb.Check{Protocol: "http", Address: "127.0.0.1:1", Exec: &pb.ExecCheck{}}, "has exec settings"},
		{"http without address", &pb.Check{Protocol: "http"}, "address"},
		{"http bad method", httpCheck("http", "127.0.0.1:1", &pb.HTTPCheck{Method: "GE T"}), "not an HTTP method"},
		{"http relative path", httpCheck("http", "127.0.0.1:1", &pb.HTTPCheck{Path: "health"}), "must start with /"},
		{"http status", httpCheck("http", "127.0.0.1:1", &pb.HTTPCheck{ExpectStatus: []int32{200, 700}}), "700"},
		{"http header name", httpCheck("http", "127.0.0.1:1", &pb.HTTPCheck{Headers: map[string]string{"X Y": "1"}}), "header name"},
		{"http header value", httpCheck("http", "127.0.0.1:1", &pb.HTTPCheck{Headers: map[string]string{"X": "a\r\nb: c"}}), "value"},
		{"http host", httpCheck("http", "127.0.0.1:1", &pb.HTTPCheck{Host: "a b"}), "host"},
		{"udp payload too big", &pb.Check{Protocol: "udp", Address: "127.0.0.1:1", Udp: &pb.UDPCheck{Payload: make([]byte, maxDatagram+1)}}, "datagram"},
		{"exec without command", &pb.Check{Protocol: "exec"}, "command is missing"},
		{"exec with address", &pb.Check{Protocol: "exec", Address: "127.0.0.1:1", Exec: &pb.ExecCheck{Command: "/bin/true"}}, "has none"},
		{"exec NUL", execCheck("/bin/true", false, "a\x00b"), "NUL"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := defaultProbers[tt.check.Protocol](tt.check)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("prober error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// ExampleValidate shows the error a check that cannot work gets.
func ExampleValidate() {
	err := Validate(&pb.CheckerConfig{IntervalMs: 1000, Checks: []*pb.Check{
		{Name: "api", Protocol: "https", Address: "127.0.0.1:8443", TimeoutMs: 500, Http: &pb.HTTPCheck{Path: "health"}},
	}})
	fmt.Println(err)
	// Output: check "api" (https): path "health" must start with /
}
