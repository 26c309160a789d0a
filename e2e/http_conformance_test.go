package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// TestHTTPConformance sends classes of malformed HTTP/1.1 input through our
// http load balancer (the real plugin binary), HAProxy (mode http) and nginx
// (proxy_pass, as the bench configures it), each in front of a backend of
// its own that reads with net/http and records what reaches it, and prints
// a table: what the client got, and how many requests the backend saw.
// docs/http-conformance.md holds its output. It asserts the property that
// matters for ours: no input makes our backend see more requests than the
// client meant to send. Run with KEEPVIP_CONFORMANCE=1 (after make build);
// KEEPVIP_CONFORMANCE_OUT=file also writes the table there.
func TestHTTPConformance(t *testing.T) {
	if os.Getenv("KEEPVIP_CONFORMANCE") != "1" {
		t.Skip("compares with HAProxy and nginx: run with KEEPVIP_CONFORMANCE=1")
	}
	tools := lbBenchNeedTools(t)
	bins := binariesForTest(t)
	dir := t.TempDir()
	var pin lbBenchPin

	type proxy struct {
		name string
		addr string
		be   *confBackend
	}
	var proxies []*proxy
	for _, name := range []string{"keep-vip", "HAProxy", "nginx"} {
		proxies = append(proxies, &proxy{name: name, be: startConfBackend(t)})
	}
	ours := lbBenchFreePort(t, "tcp")
	lbBenchOurBalancer(t, bins, pin, 1, &pb.BalancerConfig{LoadBalancers: []*pb.LoadBalancer{
		{Name: "conf", Type: "http", BindAddress: fmt.Sprintf("127.0.0.1:%d", ours), Backends: []*pb.Backend{{Name: "rec", Address: proxies[0].be.addr}}},
	}})
	proxies[0].addr = fmt.Sprintf("127.0.0.1:%d", ours)
	hp := lbBenchFreePort(t, "tcp")
	confHAProxy(t, tools, dir, hp, proxies[1].be.addr)
	proxies[1].addr = fmt.Sprintf("127.0.0.1:%d", hp)
	np := lbBenchFreePort(t, "tcp")
	lbBenchNginx(t, tools, pin, dir, "proxy", 1, lbBenchProxyConf(dir, 1, np, proxies[2].be.addr))
	proxies[2].addr = fmt.Sprintf("127.0.0.1:%d", np)
	for _, p := range proxies {
		lbBenchWait(t, p.name, func() error { return lbBenchGet("http://" + p.addr + "/") })
	}

	var table strings.Builder
	row := func(cells ...string) { table.WriteString("| " + strings.Join(cells, " | ") + " |\n") }
	table.WriteString("Requests: what the client got (status codes in order; `-` none, `cut` the connection closed mid-answer), and how many requests the backend saw.\n\n")
	row("class", "input", "keep-vip", "HAProxy", "nginx")
	row("---", "---", "---", "---", "---")
	for _, tc := range confRequests {
		cells := []string{tc.class, "`" + confShow(tc.in) + "`"}
		for _, p := range proxies {
			p.be.reset("")
			got := confExchange(t, p.addr, tc.in)
			time.Sleep(50 * time.Millisecond)
			n := p.be.count()
			cells = append(cells, fmt.Sprintf("%s, backend %d", got, n))
			if p.name == "keep-vip" && n > tc.sent {
				t.Errorf("%s: our backend saw %d requests, the client sent %d", tc.class, n, tc.sent)
			}
		}
		row(cells...)
	}
	table.WriteString("\nResponses: the backend answers `GET /` (and, where it says so, an HTTP/1.0 client's request) with these bytes and closes; what the client got.\n\n")
	row("class", "backend's answer", "keep-vip", "HAProxy", "nginx")
	row("---", "---", "---", "---", "---")
	for _, tc := range confResponses {
		cells := []string{tc.class, "`" + confShow(tc.answer) + "`"}
		req := "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
		if tc.http10 {
			req = "GET / HTTP/1.0\r\n\r\n"
		}
		for _, p := range proxies {
			p.be.reset(tc.answer)
			cells = append(cells, confResponse(t, p.addr, req))
		}
		row(cells...)
	}
	t.Logf("\n%s", table.String())
	if out := os.Getenv("KEEPVIP_CONFORMANCE_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(table.String()), 0o644); err != nil {
			t.Error(err)
		}
	}
}

type confRequest struct {
	class string
	in    string
	// sent is how many requests the client meant: a backend that sees
	// more was smuggled one.
	sent int
}

var confRequests = []confRequest{
	{"baseline: two pipelined requests", "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 2},
	{"Connection names Content-Length (issue 16)", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 61\r\nConnection: Content-Length\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n", 1},
	{"Connection names Host", "GET / HTTP/1.1\r\nHost: a\r\nConnection: Host, close\r\n\r\n", 1},
	{"CL.TE: Content-Length and chunked", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG", 1},
	{"TE.CL: chunked then Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n", 1},
	{"two different Content-Lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 1},
	{"two equal Content-Lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\nConnection: close\r\n\r\nab", 1},
	{"Content-Length list `2, 2`", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2, 2\r\nConnection: close\r\n\r\nab", 1},
	{"Content-Length with a sign", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +2\r\nConnection: close\r\n\r\nab", 1},
	{"Content-Length not digits", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2x\r\nConnection: close\r\n\r\nab", 1},
	{"Content-Length with inner space", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\nConnection: close\r\n\r\nab", 1},
	{"Transfer-Encoding not ending in chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\nConnection: close\r\n\r\n0\r\n\r\n", 1},
	{"Transfer-Encoding gzip only", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\n0\r\n\r\n", 1},
	{"Transfer-Encoding `xchunked`", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\nConnection: close\r\n\r\n0\r\n\r\n", 1},
	{"chunked twice", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n", 1},
	{"Transfer-Encoding in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 1},
	{"space before the colon", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\nConnection: close\r\n\r\n0\r\n\r\n", 1},
	{"obs-fold (folded line)", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\nConnection: close\r\n\r\n", 1},
	{"space in a header name", "GET / HTTP/1.1\r\nHost: a\r\nX A: 1\r\nConnection: close\r\n\r\n", 1},
	{"bare CR in a value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\rX-B: 2\r\nConnection: close\r\n\r\n", 1},
	{"NUL in a value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x002\r\nConnection: close\r\n\r\n", 1},
	{"bare LF line ends in the head", "GET / HTTP/1.1\nHost: a\nConnection: close\n\n", 1},
	{"chunk size then a space", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2 \r\nab\r\n0\r\n\r\n", 1},
	{"chunk extension with a bare LF", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2;x\nab\r\n0\r\n\r\n", 1},
	{"chunk size overflowing 64 bits", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n10000000000000002\r\nab\r\n0\r\n\r\n", 1},
	{"chunk data not followed by CRLF", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\nabXX0\r\n\r\n", 1},
	{"bare LF in chunked framing", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\nab\n0\n\n", 1},
	{"control character in the target", "GET /a\x01b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 1},
	{"space in the target", "GET /a b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 1},
	{"fragment in the target", "GET /a#b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 1},
	{"absolute-form, another Host", "GET http://b.example/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 1},
	{"absolute-form with userinfo", "GET http://u@b.example/ HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 1},
	{"asterisk-form outside OPTIONS", "GET * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 1},
	{"CONNECT", "CONNECT b.example:443 HTTP/1.1\r\nHost: b.example:443\r\n\r\n", 1},
	{"no Host in HTTP/1.1", "GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 1},
	{"two Host headers", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n", 1},
	{"Host with a slash", "GET / HTTP/1.1\r\nHost: a/b\r\nConnection: close\r\n\r\n", 1},
	{"version HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\nConnection: close\r\n\r\n", 1},
	{"version in lower case", "GET / http/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 1},
	{"head of 40 KiB", "GET / HTTP/1.1\r\nHost: a\r\nX-Pad: " + strings.Repeat("p", 40<<10) + "\r\nConnection: close\r\n\r\n", 1},
}

type confResp struct {
	class, answer string
	http10        bool
}

var confResponses = []confResp{
	{"Content-Length and chunked", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", false},
	{"Connection names Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: Content-Length\r\n\r\nhello", false},
	{"two different Content-Lengths", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 4\r\n\r\nhello", false},
	{"bare LF in chunked framing", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n", false},
	{"CR in the reason phrase", "HTTP/1.1 200 O\rK\r\nContent-Length: 5\r\n\r\nhello", false},
	{"chunked in HTTP/1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", false},
	{"100 Continue to an HTTP/1.0 client", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", true},
	{"chunked answer to an HTTP/1.0 client", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", true},
}

// confShow is input as the table shows it: control characters escaped,
// long runs cut.
func confShow(s string) string {
	if len(s) > 120 {
		s = s[:60] + "…" + s[len(s)-40:]
	}
	q := fmt.Sprintf("%q", s)
	return strings.ReplaceAll(q[1:len(q)-1], "|", `\|`)
}

// confExchange sends in and returns the statuses of the answers that
// came before the connection ended or a second of silence.
func confExchange(t *testing.T, addr, in string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go io.WriteString(c, in)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	br := bufio.NewReader(c)
	var codes []string
	for range 4 {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			break
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			codes = append(codes, fmt.Sprint(resp.StatusCode)+" cut")
			break
		}
		codes = append(codes, fmt.Sprint(resp.StatusCode))
	}
	if len(codes) == 0 {
		return "-"
	}
	return strings.Join(codes, " ")
}

// confResponse sends req and describes the answer: status, framing and
// body, or what went wrong reading it.
func confResponse(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, req)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	raw, _ := io.ReadAll(c)
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), nil)
	if err != nil {
		return "unreadable: " + confShow(string(raw[:min(len(raw), 40)]))
	}
	var parts []string
	if resp.StatusCode < 200 {
		parts = append(parts, fmt.Sprint(resp.StatusCode))
		if resp, err = http.ReadResponse(bufio.NewReader(bytes.NewReader(raw[bytes.Index(raw, []byte("\r\n\r\n"))+4:])), nil); err != nil {
			return strings.Join(parts, " ") + " then unreadable"
		}
	}
	body, err := io.ReadAll(resp.Body)
	framing := "close-delimited"
	switch {
	case len(resp.TransferEncoding) > 0:
		framing = "chunked"
	case resp.ContentLength >= 0:
		framing = fmt.Sprintf("length %d", resp.ContentLength)
	}
	s := fmt.Sprintf("%d, %s", resp.StatusCode, framing)
	if resp.StatusCode == 200 {
		s += fmt.Sprintf(", body %q", body)
	}
	if err != nil {
		s += ", cut"
	}
	return strings.Join(append(parts, s), " then ")
}

// confBackend reads requests with net/http and counts them; it answers with
// its answer bytes and closes, or with a small 200.
type confBackend struct {
	addr   string
	mu     sync.Mutex
	n      int
	answer string
}

func startConfBackend(t *testing.T) *confBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	cb := &confBackend{addr: ln.Addr().String()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go cb.serve(c)
		}
	}()
	return cb
}

func (cb *confBackend) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return
		}
		cb.mu.Lock()
		cb.n++
		answer := cb.answer
		cb.mu.Unlock()
		if answer != "" {
			io.WriteString(c, answer)
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	}
}

func (cb *confBackend) reset(answer string) {
	cb.mu.Lock()
	cb.n, cb.answer = 0, answer
	cb.mu.Unlock()
}

func (cb *confBackend) count() int {
	cb.mu.Lock()
	defer cb.mu.Unlock()
	return cb.n
}

// confHAProxy is HAProxy in mode http with its defaults (keep-alive both
// ways, its own header checks), X-Forwarded-For added as ours does.
func confHAProxy(t *testing.T, tools lbBenchTools, dir string, port int, backend string) {
	t.Helper()
	conf := fmt.Sprintf(`global
  nbthread 1
defaults
  mode http
  option forwardfor
  timeout connect 2s
  timeout client 10s
  timeout server 10s
frontend conf
  bind 127.0.0.1:%d
  default_backend rec
backend rec
  server rec %s
`, port, backend)
	path := filepath.Join(dir, "haproxy-http.cfg")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	lbBenchStart(t, lbBenchPin{}, dir, "haproxy-http", nil, tools.haproxy, "-db", "-f", path)
}
