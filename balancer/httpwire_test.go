package balancer

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestParseRequestRefusesAmbiguousFraming(t *testing.T) {
	for _, tc := range []struct {
		name, head string
		code       int // 0: accepted
	}{
		{"plain get", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0},
		{"bare LF", "GET / HTTP/1.1\nHost: a\n\n", 0},
		{"sized", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", 0},
		{"same length twice", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 0},
		{"chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 0},
		{"two lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400},
		{"length and chunked", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"signed length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400},
		{"hex length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", 400},
		{"gzip coding", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400},
		{"gzip then chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
		{"chunked twice", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400},
		{"chunked then identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n", 400},
		{"chunked with a parameter", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", 400},
		{"chunked misspelt", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 400},
		{"empty coding list", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,\r\n\r\n", 400},
		{"chunked upper case", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n", 0},
		{"chunked with a tab before", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n\r\n", 0},
		{"chunked with a vertical tab", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \vchunked\r\n\r\n", 400},
		{"length in a list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", 400},
		{"length with inner space", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n", 400},
		{"negative length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400},
		{"empty length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 400},
		{"huge length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400},
		{"length with leading zeros", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 005\r\n\r\n", 0},
		{"length then a bad one", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5x\r\n\r\n", 400},
		{"length hidden by Connection", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: Content-Length\r\n\r\n", 0},
		{"tab before colon", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding\t: chunked\r\n\r\n", 400},
		{"CR in a value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\rX-B: 2\r\n\r\n", 400},
		{"folded with a tab", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\t2\r\n\r\n", 400},
		{"empty name", "GET / HTTP/1.1\r\nHost: a\r\n: 1\r\n\r\n", 400},
		{"control in target", "GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"DEL in target", "GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"fragment in target", "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"relative target", "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"absolute target", "GET http://shop.example/a?b HTTP/1.1\r\nHost: other\r\n\r\n", 0},
		{"absolute target with userinfo", "GET http://u@shop.example/ HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"absolute target, no authority", "GET http:///a HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"absolute target, other scheme", "GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"asterisk outside OPTIONS", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"asterisk in OPTIONS", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 0},
		{"CONNECT", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501},
		{"Host with a slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400},
		{"Host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400},
		{"empty Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", 0},
		{"Host with a port", "GET / HTTP/1.1\r\nHost: a.example:8080\r\n\r\n", 0},
		{"Host an IPv6 literal", "GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n", 0},
		{"Host with an empty port", "GET / HTTP/1.1\r\nHost: a:\r\n\r\n", 0},
		{"Host with two colons", "GET / HTTP/1.1\r\nHost: a:1:2\r\n\r\n", 400},
		{"Host with a named port", "GET / HTTP/1.1\r\nHost: a:http\r\n\r\n", 400},
		{"Host an unclosed IPv6 literal", "GET / HTTP/1.1\r\nHost: [2001:db8::1\r\n\r\n", 400},
		{"Host junk after an IPv6 literal", "GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n", 400},
		{"absolute target with a bad port", "GET http://a:b/ HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"lower-case version", "GET / http/1.1\r\nHost: a\r\n\r\n", 400},
		{"tab in request line", "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"two spaces in request line", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"chunked in 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"space before colon", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n", 400},
		{"folded line", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n", 400},
		{"no colon", "GET / HTTP/1.1\r\nHost: a\r\nX-A\r\n\r\n", 400},
		{"NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n", 400},
		{"HTTP/2 line", "GET / HTTP/2.0\r\n\r\n", 505},
		{"no version", "GET /\r\n\r\n", 400},
		{"space in target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"no host in 1.1", "GET / HTTP/1.1\r\n\r\n", 400},
		{"no host in 1.0", "GET / HTTP/1.0\r\n\r\n", 0},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			end := headEnd([]byte(tc.head))
			if end != len(tc.head) {
				t.Fatalf("headEnd = %d, want %d", end, len(tc.head))
			}
			var h reqHead
			err := parseRequest([]byte(tc.head), &h)
			var he *httpError
			switch {
			case tc.code == 0 && err != nil:
				t.Errorf("refused: %v", err)
			case tc.code != 0 && (!errors.As(err, &he) || he.code != tc.code):
				t.Errorf("got %v, want a %d", err, tc.code)
			}
		})
	}
}

// The head the backend gets: hop-by-hop headers and those the client named
// in Connection gone, X-Forwarded-For appended to, X-Forwarded-Proto ours.
func TestAppendRequest(t *testing.T) {
	head := "GET /x HTTP/1.0\r\nHost: shop\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\n" +
		"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nAccept: */*\r\n\r\n"
	var h reqHead
	if err := parseRequest([]byte(head), &h); err != nil {
		t.Fatal(err)
	}
	got := string(appendRequest(nil, []byte(head), &h, []byte("198.18.0.9"), func() string { return "198.18.0.1:80" }))
	want := "GET /x HTTP/1.0\r\nHost: shop\r\nAccept: */*\r\nX-Forwarded-For: 203.0.113.7, 198.18.0.9\r\nX-Forwarded-Proto: http\r\nConnection: keep-alive\r\n\r\n"
	if got != want {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
	if !h.keepAlive {
		t.Error("HTTP/1.0 with Connection: keep-alive not seen as keep-alive")
	}
}

func TestChunkScanner(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		rest       string // after the body
		bad        bool
	}{
		{"two chunks", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "GET", false},
		{"extension and trailer", "5;x=y\r\nhello\r\n0\r\nX-T: 1\r\n\r\n", "", false},
		{"bare LF", "5\nhello\n0\n\n", "next", true},
		{"bare LF after data", "5\r\nhello\n0\r\n\r\n", "", true},
		{"space before extension", "5 ;a=b\r\nhello\r\n0\r\n\r\n", "", true},
		{"space after size", "5 \r\nhello\r\n0\r\n\r\n", "", true},
		{"junk after size", "5 x\r\nhello\r\n0\r\n\r\n", "", true},
		{"LF in extension", "5;a\nb\r\nhello\r\n0\r\n\r\n", "", true},
		{"control in extension", "5;a\x00\r\nhello\r\n0\r\n\r\n", "", true},
		{"negative size", "-5\r\nhello\r\n", "", true},
		{"0x prefix", "0x5\r\nhello\r\n", "", true},
		{"leading zeros", "0005\r\nhello\r\n0\r\n\r\n", "", false},
		{"trailer without colon", "0\r\nX-T\r\n\r\n", "", true},
		{"trailer folded", "0\r\nX-T: 1\r\n 2\r\n\r\n", "", true},
		{"upper hex", "A\r\n0123456789\r\n0\r\n\r\n", "", false},
		{"no size", "\r\nhello\r\n", "", true},
		{"bad size", "5x\r\nhello\r\n", "", true},
		{"data overruns", "5\r\nhello!\r\n0\r\n\r\n", "", true},
		{"huge size", "1000000000000000\r\n", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.body + tc.rest
			// Byte by byte and all at once must agree.
			for _, step := range []int{1, len(in)} {
				var cs chunkScanner
				took, done, failed := 0, false, false
				for took < len(in) && !done {
					end := min(took+step, len(in))
					n, d, err := cs.scan([]byte(in[took:end]))
					took += n
					done = d
					if err != nil {
						failed = true
						break
					}
				}
				if tc.bad {
					if !failed {
						t.Errorf("step %d: accepted", step)
					}
					continue
				}
				if failed || !done || took != len(tc.body) {
					t.Errorf("step %d: took %d done %v failed %v, want %d", step, took, done, failed, len(tc.body))
				}
			}
		})
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

// What the proxy accepts and passes on, net/http reads the same way: the
// same method, target and body framing, and no header the proxy dropped.
// Go's reader stands in for the backend.
func FuzzRequestHead(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /x?y=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: keep-alive, X-A\r\nX-A: 1\r\n\r\n",
		"PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
		"GET / HTTP/1.0\nConnection: keep-alive\n\n",
		"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		end := headEnd(in)
		if end < 0 || end > httpMaxHead {
			return
		}
		var h reqHead
		if parseRequest(in[:end], &h) != nil {
			return
		}
		out := appendRequest(nil, in[:end], &h, []byte("198.18.0.9"), func() string { return "198.18.0.1:80" })
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(string(out))))
		if err != nil {
			// net/http is stricter about some bytes in targets and values; those
			// are the backend's to refuse.
			return
		}
		if req.Method != string(h.method) || req.RequestURI != string(h.target) {
			t.Fatalf("backend reads %s %s, proxy parsed %s %s", req.Method, req.RequestURI, h.method, h.target)
		}
		chunked := len(req.TransferEncoding) > 0
		if chunked != h.body.chunked {
			t.Fatalf("backend chunked %v, proxy %v\n%q", chunked, h.body.chunked, out)
		}
		if !chunked && h.body.length >= 0 && req.ContentLength != h.body.length {
			t.Fatalf("backend length %d, proxy %d", req.ContentLength, h.body.length)
		}
		if !chunked && h.body.length < 0 && req.ContentLength > 0 {
			t.Fatalf("backend expects a body of %d the proxy does not send", req.ContentLength)
		}
		for _, hop := range []string{"Keep-Alive", "Proxy-Connection", "Te", "Trailer"} {
			if _, ok := req.Header[hop]; ok {
				t.Fatalf("hop-by-hop %s passed on", hop)
			}
		}
	})
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
	eventually(t, "408 counted", func() bool { return testutil.ToFloat64(b.m.requests.WithLabelValues("web", "h1", "408")) == 1 })
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

// The head the backend gets carries the framing the proxy decided, in one
// canonical form, whatever Connection lists; an absolute-form target
// becomes origin-form with its authority as Host.
func TestAppendRequestReframes(t *testing.T) {
	ip, host := []byte("198.18.0.9"), func() string { return "198.18.0.1:80" }
	for _, tc := range []struct{ name, head, want string }{
		{"Connection cannot remove Content-Length or Host",
			"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 61\r\nConnection: Content-Length, Host, Transfer-Encoding, X-A\r\nX-A: 1\r\n\r\n",
			"POST / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.18.0.9\r\nX-Forwarded-Proto: http\r\nContent-Length: 61\r\n\r\n"},
		{"duplicate lengths become one",
			"POST / HTTP/1.1\r\nContent-Length: 007\r\nHost: x\r\nContent-Length: 7\r\n\r\n",
			"POST / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.18.0.9\r\nX-Forwarded-Proto: http\r\nContent-Length: 7\r\n\r\n"},
		{"chunked re-emitted",
			"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ,Chunked\r\n\r\n",
			"POST / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.18.0.9\r\nX-Forwarded-Proto: http\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"absolute-form",
			"GET http://shop.example:8080?q=1 HTTP/1.1\r\nHost: other\r\n\r\n",
			"GET /?q=1 HTTP/1.1\r\nX-Forwarded-For: 198.18.0.9\r\nX-Forwarded-Proto: http\r\nHost: shop.example:8080\r\n\r\n"},
		{"no upgrade to h2c",
			"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: H2C\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
			"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.18.0.9\r\nX-Forwarded-Proto: http\r\n\r\n"},
		{"HTTP/1.0 with Expect",
			"POST /p HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
			"POST /p HTTP/1.0\r\nX-Forwarded-For: 198.18.0.9\r\nX-Forwarded-Proto: http\r\nHost: 198.18.0.1:80\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h reqHead
			if err := parseRequest([]byte(tc.head), &h); err != nil {
				t.Fatal(err)
			}
			if got := string(appendRequest(nil, []byte(tc.head), &h, ip, host)); got != tc.want {
				t.Errorf("got\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

// A response's framing is decided once and re-emitted: Transfer-Encoding
// wins over Content-Length (and the backend connection is not reused),
// Connection cannot remove either, faulty framing is the backend's fault.
func TestResponseReframes(t *testing.T) {
	for _, tc := range []struct {
		name, head string
		isHead     bool
		want       string // "" : refused
		reusable   bool
	}{
		{"length and chunked", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", false,
			"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"Connection lists the length", "HTTP/1.1 200 OK\r\nConnection: Content-Length, Transfer-Encoding\r\nContent-Length: 5\r\n\r\n", false,
			"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true},
		{"HTTP/1.0 close-delimited", "HTTP/1.0 200 OK\r\nX-A: 1\r\n\r\n", false,
			"HTTP/1.1 200 OK\r\nX-A: 1\r\nConnection: close\r\n\r\n", false},
		{"HEAD keeps its length", "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", true,
			"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", true},
		{"204 loses its length", "HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n", false,
			"HTTP/1.1 204 No Content\r\n\r\n", true},
		{"no reason", "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", false,
			"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", true},
		{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", false, "", false},
		{"signed length", "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n", false, "", false},
		{"gzip only", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false, "", false},
		{"chunked in HTTP/1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false, "", false},
		{"CR in the reason", "HTTP/1.1 200 O\rK\r\nContent-Length: 0\r\n\r\n", false, "", false},
		{"space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n", false, "", false},
		{"status 600", "HTTP/1.1 600 X\r\nContent-Length: 0\r\n\r\n", false, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h respHead
			err := parseResponse([]byte(tc.head), tc.isHead, &h)
			if tc.want == "" {
				if err == nil {
					t.Fatal("accepted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := string(appendResponse(nil, []byte(tc.head), &h, !h.closeDelimited, false)); got != tc.want {
				t.Errorf("got\n%q\nwant\n%q", got, tc.want)
			}
			if h.reusable != tc.reusable {
				t.Errorf("reusable %v, want %v", h.reusable, tc.reusable)
			}
		})
	}
}
