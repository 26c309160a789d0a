package balancer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pires/go-proxyproto"
	"github.com/rs/zerolog"

	"github.com/keep-vip/keep-vip/balancer/internal/policy"
	"github.com/keep-vip/keep-vip/balancer/internal/proxy"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

func httpLB(name string, backends ...string) *pb.LoadBalancer {
	return typed(lb(name, "127.0.0.1:0", backends...), TypeHTTP)
}

func TestHTTPProxy(t *testing.T) {
	b := newBalancer(t)
	h1, _ := startHTTPBackend(t, "h1")
	h2, _ := startHTTPBackend(t, "h2")
	configure(t, b, named(httpLB("web", hostOf(h1), hostOf(h2)), "h1", "h2"))
	front := addr(t, b, "web")

	resp, body := get(t, front, "/a?q=1", "Host", "shop.example", "X-Forwarded-For", "203.0.113.7")
	if resp.StatusCode != 200 || body != "h1 /a" {
		t.Fatalf("first request: %s %q", resp.Status, body)
	}
	for h, want := range map[string]string{
		"X-Got-Host":            "shop.example",
		"X-Got-Forwarded-For":   "203.0.113.7, 127.0.0.1",
		"X-Got-Forwarded-Proto": "http",
	} {
		if got := resp.Header.Get(h); got != want {
			t.Errorf("backend saw %s %q, want %q", strings.TrimPrefix(h, "X-Got-"), got, want)
		}
	}
	if _, body := get(t, front, "/b"); body != "h2 /b" {
		t.Errorf("second request (round robin): %q", body)
	}
	if resp, _ := get(t, front, "/status/500"); resp.StatusCode != 500 {
		t.Errorf("a backend's 500 came back as %s", resp.Status)
	}
	if n := testutil.ToFloat64(b.m.Requests.WithLabelValues("web", "h1", "200")); n != 1 {
		t.Errorf("%s{h1,200} = %v, want 1", policy.MetricHTTPRequests, n)
	}
	if n := testutil.ToFloat64(b.m.Requests.WithLabelValues("web", "h1", "500")); n != 1 {
		t.Errorf("%s{h1,500} = %v, want 1", policy.MetricHTTPRequests, n)
	}
	if n := seriesCount(t, b, policy.MetricHTTPRequestSeconds); n != 2 {
		t.Errorf("%s has %d series, want 2 (h1, h2)", policy.MetricHTTPRequestSeconds, n)
	}
	if n := testutil.ToFloat64(b.m.Bytes.WithLabelValues("web", "h1", policy.DirToClient)); n < float64(len("h1 /a")) {
		t.Errorf("bytes from h1 = %v", n)
	}
}

// Requests from many client connections share the backend's keep-alive
// pool. Each event loop has its own pool (as each nginx worker has): one
// loop here.
func TestHTTPKeepAlivePool(t *testing.T) {
	b := newBalancer(t)
	b.nLoops = 1
	h1, conns := startHTTPBackend(t, "h1")
	configure(t, b, named(httpLB("web", hostOf(h1)), "h1"))
	front := addr(t, b, "web")
	for range 20 {
		if resp, _ := get(t, front, "/"); resp.StatusCode != 200 {
			t.Fatal(resp.Status)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("backend got %d connections for 20 sequential requests, want 1", n)
	}
	if n := testutil.ToFloat64(b.m.Connections.WithLabelValues("web", "h1")); n != 1 {
		t.Errorf("%s = %v, want 1", policy.MetricConnections, n)
	}
}

func TestHTTPFailures(t *testing.T) {
	h1, _ := startHTTPBackend(t, "h1")
	for _, tc := range []struct {
		name     string
		backends func(t *testing.T) []string
		idle     int64
		path     string
		want     int
		body     string
	}{
		{"dead backend skipped", func(t *testing.T) []string { return []string{deadAddr(t), hostOf(h1)} }, 0, "/", 200, "h1 /"},
		{"none answers", func(t *testing.T) []string { return []string{deadAddr(t), deadAddr(t)} }, 0, "/", 502, "Bad Gateway: no backend answered\n"},
		{"connect times out", func(t *testing.T) []string { return []string{blackhole(t)} }, 0, "/", 504, "Gateway Timeout: no backend answered in time\n"},
		{"slow answer", func(t *testing.T) []string { return []string{hostOf(h1)} }, 200, "/?sleep=1s", 504, "Gateway Timeout: the backend did not answer in time\n"},
		{"no backends", func(t *testing.T) []string { return nil }, 0, "/", 503, "Service Unavailable: every backend is down\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBalancer(t)
			l := httpLB("web", tc.backends(t)...)
			l.ConnectTimeoutMs, l.IdleTimeoutMs = 100, tc.idle
			configure(t, b, l)
			resp, body := get(t, addr(t, b, "web"), tc.path)
			if resp.StatusCode != tc.want || body != tc.body {
				t.Errorf("got %s %q, want %d %q", resp.Status, body, tc.want, tc.body)
			}
		})
	}
}

// Every backend down (here: failing its http check) answers 503 at once.
func TestHTTPAllDown503(t *testing.T) {
	b := newBalancer(t)
	h1, _ := startHTTPBackend(t, "h1")
	l := named(httpLB("web", hostOf(h1)), "h1")
	l.Health = &pb.BackendHealth{Type: HealthHTTP, Path: "/status/500", IntervalMs: 20, TimeoutMs: 20, Fall: 1}
	configure(t, b, l)
	eventually(t, "h1 down", func() bool { return testutil.ToFloat64(b.m.Up.WithLabelValues("web", "h1")) == 0 })
	resp, body := get(t, addr(t, b, "web"), "/")
	if resp.StatusCode != 503 || body != "Service Unavailable: every backend is down\n" {
		t.Errorf("got %s %q", resp.Status, body)
	}
	if n := testutil.ToFloat64(b.m.Requests.WithLabelValues("web", policy.BackendNone, "503")); n != 1 {
		t.Errorf("%s{none,503} = %v, want 1", policy.MetricHTTPRequests, n)
	}
}

// An Upgrade request (WebSocket) is passed through and the connection then
// carries raw bytes both ways.
func TestHTTPUpgrade(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "want an upgrade", 400)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			io.WriteString(c, "echo "+line)
		}
	}))
	// A message of 4 MiB streams both ways: with splice on, the tunnel
	// splices it.
	big := strings.Repeat("0123456789abcdef", 1<<18)
	for _, splice := range []bool{false, true} {
		t.Run(fmt.Sprintf("splice=%v", splice), func(t *testing.T) {
			b := newBalancer(t)
			l := named(httpLB("web", ln.Addr().String()), "ws")
			l.Splice = splice
			configure(t, b, l)
			c := dial(t, addr(t, b, "web"))
			io.WriteString(c.c, "GET /chat HTTP/1.1\r\nHost: chat.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
			resp, err := http.ReadResponse(c.r, nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 101 {
				t.Fatalf("upgrade answered %s", resp.Status)
			}
			for _, msg := range []string{"one", big, "two"} {
				if got := c.ask(msg); got != "echo "+msg {
					t.Errorf("over the upgraded connection: %d bytes %.20q..., want %d", len(got), got, len(msg)+5)
				}
			}
			if opened, _ := pipeCounts(b); (opened > 0) != splice {
				t.Errorf("%d splice pipes opened with splice %v", opened, splice)
			}
			// Counted when the upgraded connection ends.
			c.c.Close()
			eventually(t, "upgrade counted", func() bool { return testutil.ToFloat64(b.m.Requests.WithLabelValues("web", "ws", "101")) == 1 })
			eventually(t, "no client left", func() bool { return testutil.ToFloat64(b.m.Active.WithLabelValues("web")) == 0 })
			eventually(t, "pipes closed", func() bool { _, open := pipeCounts(b); return open == 0 })
		})
	}
}

// With the PROXY protocol, each client connection gets its own backend
// connections, whose header carries that client's address.
func TestHTTPProxyProtocol(t *testing.T) {
	// The backend reads the header, then serves http on the connection,
	// answering with the header's source address.
	backend := serveTCP(t, func(c net.Conn) {
		r := bufio.NewReader(c)
		h, err := proxyproto.Read(r)
		if err != nil {
			return
		}
		for {
			req, err := http.ReadRequest(r)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			body := fmt.Sprintf("v%d %s", h.Version, h.SourceAddr)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
	})
	b := newBalancer(t)
	l := httpLB("web", backend)
	l.ProxyProtocol = 2
	configure(t, b, l)
	front := addr(t, b, "web")

	for range 2 {
		c := dial(t, front)
		for range 2 {
			io.WriteString(c.c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, err := http.ReadResponse(c.r, nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			if want := "v2 " + c.c.LocalAddr().String(); string(body) != want {
				t.Errorf("backend saw %q, want %q", body, want)
			}
		}
	}
	// Two client connections, two requests each: two backend connections.
	if n := testutil.ToFloat64(b.m.Connections.WithLabelValues("web", backend)); n != 2 {
		t.Errorf("%s = %v, want 2", policy.MetricConnections, n)
	}
}

// A reload that keeps a backend keeps its keep-alive pool.
func TestHTTPReloadKeepsPool(t *testing.T) {
	b := newBalancer(t)
	b.nLoops = 1
	h1, conns := startHTTPBackend(t, "h1")
	h2, _ := startHTTPBackend(t, "h2")
	configure(t, b, named(httpLB("web", hostOf(h1)), "h1"))
	front := addr(t, b, "web")
	get(t, front, "/")
	l := named(httpLB("web", hostOf(h1), hostOf(h2)), "h1", "h2")
	configure(t, b, l)
	for range 4 {
		get(t, front, "/")
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("h1 got %d connections across the reload, want 1", n)
	}
}

// seriesCount is how many series of the family name the balancer exports.
func seriesCount(t *testing.T, b *Balancer, name string) int {
	t.Helper()
	fams, err := b.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			return len(f.GetMetric())
		}
	}
	return 0
}

// A backend that closes idle keep-alive connections early: the pool notices
// before reusing one, and a POST that cannot be retried still gets through.
func TestHTTPBackendClosesIdleConnection(t *testing.T) {
	h1, conns := startHTTPBackend(t, "h1", func(s *http.Server) { s.IdleTimeout = 50 * time.Millisecond })
	was := proxy.IdleCheckAfter
	proxy.IdleCheckAfter = 100 * time.Millisecond
	t.Cleanup(func() { proxy.IdleCheckAfter = was })
	b := newBalancer(t)
	configure(t, b, named(httpLB("web", hostOf(h1)), "h1"))
	front := addr(t, b, "web")
	for i, method := range []string{"GET", "POST", "POST", "GET"} {
		// Over the pool's check threshold and the backend's timeout.
		time.Sleep(proxy.IdleCheckAfter + 100*time.Millisecond)
		req, _ := http.NewRequest(method, "http://"+front+"/", strings.NewReader("body"))
		client := &http.Client{Timeout: waitFor, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("request %d (%s): %s", i, method, resp.Status)
		}
	}
	if n := conns.Load(); n != 4 {
		t.Errorf("backend saw %d connections, want 4 (each idle one closed)", n)
	}
}

// Bodies both ways through the keep-alive pool: sized and chunked request
// bodies, a large response, HEAD, and a response delimited by the
// connection's end (not reusable).
func TestHTTPBodies(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/echo":
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%s %d %v %s", r.Method, len(b), r.TransferEncoding, b[:min(len(b), 8)])
		case "/big":
			w.Header().Set("Content-Length", fmt.Sprint(len(big)))
			io.WriteString(w, big)
		case "/close":
			// HTTP/1.0 style: no length, the end of the connection ends it.
			w.Header().Set("Connection", "close")
			w.(http.Flusher).Flush()
			io.WriteString(w, "until close")
		}
	}))
	t.Cleanup(srv.Close)
	b := newBalancer(t)
	configure(t, b, named(httpLB("web", hostOf(srv)), "be"))
	base := "http://" + addr(t, b, "web")
	client := &http.Client{Timeout: waitFor}
	do := func(method, path string, body io.Reader) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, body)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s %s: body: %v", method, path, err)
		}
		return resp, string(b)
	}
	for range 2 { // twice: the second time over pooled connections
		if _, got := do("POST", "/echo", strings.NewReader("hello body")); got != "POST 10 [] hello bo" {
			t.Errorf("sized body: %q", got)
		}
		// io.MultiReader hides the length: the client sends it chunked.
		if _, got := do("PUT", "/echo", io.MultiReader(strings.NewReader("chunked "), strings.NewReader("body"))); got != "PUT 12 [chunked] chunked " {
			t.Errorf("chunked body: %q", got)
		}
		if _, got := do("GET", "/big", nil); got != big {
			t.Errorf("big body: %d bytes, want %d", len(got), len(big))
		}
		if resp, got := do("HEAD", "/big", nil); got != "" || resp.ContentLength != int64(len(big)) {
			t.Errorf("HEAD: body %q, length %d", got, resp.ContentLength)
		}
		if _, got := do("GET", "/close", nil); got != "until close" {
			t.Errorf("close-delimited body: %q", got)
		}
	}
}

// BenchmarkHTTPLargeResponse is one 4 MiB response through the proxy per
// op, over a keep-alive connection: the body path's throughput.
func BenchmarkHTTPLargeResponse(b *testing.B) {
	big := strings.Repeat("0123456789abcdef", 1<<18)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, big) }))
	defer srv.Close()
	bal := New(zerolog.Nop())
	defer bal.Close()
	if err := bal.Configure(context.Background(), &pb.BalancerConfig{LoadBalancers: []*pb.LoadBalancer{httpLB("web", srv.Listener.Addr().String())}}); err != nil {
		b.Fatal(err)
	}
	url := "http://" + bal.Addrs()["web"].String() + "/"
	client := &http.Client{}
	b.SetBytes(int64(len(big)))
	for b.Loop() {
		resp, err := client.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if n != int64(len(big)) {
			b.Fatalf("got %d bytes", n)
		}
	}
}

// Large request bodies, sized and chunked, reach the backend whole, and
// the connection carries the next request after them.
func TestHTTPLargeRequestBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
	}))
	t.Cleanup(srv.Close)
	b := newBalancer(t)
	configure(t, b, named(httpLB("web", hostOf(srv)), "be"))
	body := []byte(strings.Repeat("keep-vip upload ", 1<<18)) // 4 MiB
	want := fmt.Sprintf("%d %x", len(body), sha256.Sum256(body))
	client := &http.Client{Timeout: waitFor}
	for _, chunked := range []bool{false, true, false} {
		var r io.Reader = bytes.NewReader(body)
		if chunked {
			r = io.MultiReader(r) // hides the length
		}
		resp, err := client.Post("http://"+addr(t, b, "web")+"/", "application/octet-stream", r)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(got) != want {
			t.Errorf("chunked=%v: backend saw %q, want %q", chunked, got, want)
		}
	}
}

// Pipelined requests on one connection are answered in order, and an
// HTTP/1.0 request without keep-alive gets its answer, then the end.
func TestHTTPPipelinedAndHTTP10(t *testing.T) {
	_, _, c := rawHTTPFront(t, 0)
	io.WriteString(c, "GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\nGET /three HTTP/1.0\r\n\r\n")
	r := bufio.NewReader(c)
	for _, want := range []string{"h1 /one", "h1 /two", "h1 /three"} {
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("%s: %v", want, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if string(body) != want {
			t.Errorf("got %q, want %q", body, want)
		}
	}
	if _, err := r.ReadByte(); err != io.EOF {
		t.Errorf("after the HTTP/1.0 answer: %v, want EOF", err)
	}
}

// A request the proxy refuses gets a short answer and the connection ends;
// nothing reaches the backend.
func TestHTTPRefusesSmuggling(t *testing.T) {
	_, conns, c := rawHTTPFront(t, 0)
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 400 || !strings.Contains(string(body), "Content-Length and Transfer-Encoding") {
		t.Errorf("got %s %q", resp.Status, body)
	}
	if n := conns.Load(); n != 0 {
		t.Errorf("backend got %d connections", n)
	}
}

// A client that stops in the middle of its body is cut after the idle
// timeout, and the request counted as 408.
func TestHTTPStalledBodyCut(t *testing.T) {
	b, _, c := rawHTTPFront(t, 200)
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
	c.SetReadDeadline(time.Now().Add(waitFor))
	start := time.Now()
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("got an answer to half a request")
	}
	if took := time.Since(start); took < 200*time.Millisecond || took > waitFor/2 {
		t.Errorf("cut after %s, want just over the 200ms idle timeout", took)
	}
	eventually(t, "408 counted", func() bool { return testutil.ToFloat64(b.m.Requests.WithLabelValues("web", "h1", "408")) == 1 })
}

// A request head that trickles in byte by byte is cut after the idle
// timeout in all, however often its bytes come.
func TestHTTPSlowHeadCut(t *testing.T) {
	_, _, c := rawHTTPFront(t, 300)
	start := time.Now()
	head := "GET / HTTP/1.1\r\nHost: a\r\nX-Slow: " + strings.Repeat("x", 100)
	var werr error
	for i := 0; i < len(head) && werr == nil && time.Since(start) < waitFor; i++ {
		_, werr = c.Write([]byte{head[i]})
		time.Sleep(20 * time.Millisecond)
	}
	if werr == nil {
		t.Fatal("the trickling head was never cut")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("cut after %s, want about the 300ms idle timeout", took)
	}
}

// After a refusal the proxy closes its write side and drains what the
// client still sends, rather than close at once: a close with unread bytes
// sends a reset, which can destroy an answer not yet read.
func TestHTTPRefusalLingers(t *testing.T) {
	_, _, c := rawHTTPFront(t, 0)
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(waitFor))
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 400 {
		t.Errorf("got %s, want 400", resp.Status)
	}
	if _, err := r.ReadByte(); err != io.EOF {
		t.Errorf("after the answer: %v, want EOF", err)
	}
	// The client's late body is taken, not reset: every write succeeds.
	chunk := []byte(strings.Repeat("x", 4<<10))
	for i := range 20 {
		time.Sleep(5 * time.Millisecond)
		if _, err := c.Write(chunk); err != nil {
			t.Fatalf("write %d after the answer: %v", i, err)
		}
	}
}

// rawHTTPFront is an http load balancer named web in front of one backend
// (h1; idleMs its idle timeout, 0 for the default), the backend's count of
// connections, and a raw client connection to the balancer.
func rawHTTPFront(t *testing.T, idleMs int64) (*Balancer, *atomic.Int64, net.Conn) {
	t.Helper()
	b := newBalancer(t)
	h1, conns := startHTTPBackend(t, "h1")
	l := named(httpLB("web", hostOf(h1)), "h1")
	l.IdleTimeoutMs = idleMs
	configure(t, b, l)
	c, err := net.Dial("tcp", addr(t, b, "web"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return b, conns, c
}
