package balancer

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"

	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/keep-vip/keep-vip/balancer/internal/httpwire"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// Differential fuzzing of the http proxy: mutated requests and responses
// go through the real proxy, in-process, to a backend that reads with
// net/http, the reference parser. The backend must see exactly requests
// net/http reads from the client's bytes, in order, with the same method,
// target and body: a prefix of them (the proxy may refuse, and then
// closes), never more or other. Every answer the client gets must be one
// net/http reads, body and end. `go test` runs the seeds; see
// docs/http-conformance.md for a longer run.

// fuzzEnd follows every fuzzed request stream: a last request that closes
// the connection, so the stream's end needs no timeout.
const fuzzEnd = "GET /__end HTTP/1.1\r\nHost: end\r\nConnection: close\r\n\r\n"

// The published smuggling families (CL.TE, TE.CL, TE.TE, header name and
// whitespace tricks, chunk-size and extension tricks, pipelining).
var requestSeeds = []string{
	"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\nHEAD /c HTTP/1.1\r\nHost: a\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /x HTTP/1.1\r\nHost: a\r\n\r\n",
	// CL.TE and TE.CL.
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 13\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nSMUGGLED",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
	// TE.TE: obfuscated codings.
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nX: x\r\n\tTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
	// Content-Length forms.
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 \r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0005\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: Content-Length\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
	// Chunk sizes and extensions.
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=\"x\"\r\nhello\r\n0\r\nTrailer: t\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 ;x\r\nhello\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0000000000000005\r\nhello\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;\nx\r\nhello\r\n0\r\n\r\n",
	// Request lines and targets.
	"GET http://b.example/x?y HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.0\r\n\r\nGET /after10 HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.1\nHost: a\n\n",
	"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nab\r\nGET /after-crlf HTTP/1.1\r\nHost: a\r\n\r\n\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n",
}

func FuzzHTTPProxy(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	b := fuzzBalancer(f)
	// A request whose body never ends (its length reaches past the
	// input) is cut by the proxy's idle timeout: short, for speed.
	rb, front := recordingFront(f, b, nil, func(l *pb.LoadBalancer) { l.IdleTimeoutMs = 200 })
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 8<<10 {
			return
		}
		// A hang is a finding too: the stacks say where.
		watchdog := time.AfterFunc(10*time.Second, func() {
			buf := make([]byte, 1<<20)
			panic(fmt.Sprintf("FuzzHTTPProxy hung on %q\n%s", in, buf[:runtime.Stack(buf, true)]))
		})
		defer watchdog.Stop()
		stream := append(append([]byte(nil), in...), fuzzEnd...)
		want := referenceRequests(stream)
		rb.take()
		c, err := net.Dial("tcp", front)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Second))
		go c.Write(stream)
		var got []*http.Response
		br := bufio.NewReader(c)
		for {
			// A HEAD request's answer has no body, but a refusal (the
			// proxy could not parse the request) always has one.
			var req *http.Request
			if line, _ := br.Peek(12); len(got) < len(want) && !refusal(line) {
				req = &http.Request{Method: want[len(got)].method}
			}
			resp, err := http.ReadResponse(br, req)
			if err != nil {
				if !errors.Is(err, io.EOF) && !isTimeout(err) && !errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.ErrUnexpectedEOF) && br.Buffered() > 0 {
					t.Fatalf("answer %d unreadable: %v", len(got), err)
				}
				break
			}
			if _, err := io.ReadAll(resp.Body); err != nil {
				t.Fatalf("answer %d (%s): body unframed: %v", len(got), resp.Status, err)
			}
			got = append(got, resp)
		}
		reqs, errs := rb.take()
		// A body whose chunks broke after the request went on is cut:
		// the backend gets a request it cannot complete, never another.
		errs = slices.DeleteFunc(errs, func(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) })
		if len(errs) > 0 {
			t.Fatalf("the backend could not read what the proxy sent: %v", errs)
		}
		if len(reqs) > len(want) {
			t.Fatalf("the backend saw %d requests, net/http reads %d from the client's bytes:\n%+v\n%+v", len(reqs), len(want), reqs, want)
		}
		for i, r := range reqs {
			w := want[i]
			if r.method != w.method || r.uri != w.target || r.body != w.body {
				t.Fatalf("request %d: the backend saw %s %s %q, net/http reads %s %s %q", i, r.method, r.uri, r.body, w.method, w.target, w.body)
			}
		}
		passed := 0
		for i, resp := range got {
			if resp.Header.Get("X-Rec") == "" {
				// The proxy's own answer; nothing follows a refusal.
				if i != len(got)-1 && refusal([]byte(fmt.Sprintf("HTTP/1.1 %d", resp.StatusCode))) {
					t.Fatalf("answer %d (%s) refused the request, yet answers follow", i, resp.Status)
				}
				continue
			}
			passed++
		}
		if passed > len(reqs) {
			t.Fatalf("the client got %d backend answers for %d requests the backend saw", passed, len(reqs))
		}
	})
}

// refusal: a status line of the proxy's refusals (httpwire.Error codes).
func refusal(statusLine []byte) bool {
	switch string(statusLine) {
	case "HTTP/1.1 400", "HTTP/1.1 431", "HTTP/1.1 501", "HTTP/1.1 505":
		return true
	}
	return false
}

// refRequest is a request as net/http reads it, target in origin-form.
type refRequest struct{ method, target, body string }

// referenceRequests reads stream as net/http does, up to the first request
// it refuses, or one that ends the connection.
func referenceRequests(stream []byte) []refRequest {
	var out []refRequest
	br := bufio.NewReader(bytes.NewReader(stream))
	for {
		// One empty line before a request is ignored (RFC 9112 2.2),
		// as the proxy does; net/http does not.
		if p, _ := br.Peek(2); httpwire.EmptyLine(p) > 0 {
			br.Discard(httpwire.EmptyLine(p))
		}
		req, err := http.ReadRequest(br)
		if err != nil {
			return out
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return out
		}
		out = append(out, refRequest{req.Method, originForm(req.RequestURI), string(body)})
		if req.Close || req.ProtoMinor == 0 || req.Header.Get("Upgrade") != "" {
			return out
		}
	}
}

// originForm is the origin-form of a request-target as the proxy passes
// it on.
func originForm(t string) string {
	if strings.HasPrefix(t, "/") || t == "*" {
		return t
	}
	_, rest, ok := strings.Cut(t, "://")
	if !ok {
		return t
	}
	i := strings.IndexAny(rest, "/?")
	switch {
	case i < 0:
		return "/"
	case rest[i] == '?':
		return "/" + rest[i:]
	}
	return rest[i:]
}

// Responses: the backend answers a request with the fuzzed bytes and
// closes. The client's answer must be one net/http reads, and the next
// pipelined request's answer must follow it intact: no byte of a
// response leaks past its end. Where net/http reads the backend's answer
// and the proxy passes it on, the bodies agree.
var responseSeeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: Transfer-Encoding\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: Content-Length\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 4\r\n\r\nhello",
	"HTTP/1.0 200 OK\r\n\r\nclose-delimited",
	"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\nabc",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n",
	"HTTP/1.1 200 O\rK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
}

func FuzzHTTPResponse(f *testing.F) {
	for _, s := range responseSeeds {
		f.Add([]byte(s))
	}
	var answer atomic.Pointer[[]byte]
	backend := serveTCP(f, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(time.Second))
		if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
			c.Write(*answer.Load())
		}
	})
	b := fuzzBalancer(f)
	l := named(httpLB("web", backend), "raw")
	if err := b.Configure(f.Context(), configOf(l)); err != nil {
		f.Fatal(err)
	}
	front := b.Addrs()["web"].String()
	f.Fuzz(func(t *testing.T, resp []byte) {
		if len(resp) > 8<<10 {
			return
		}
		answer.Store(&resp)
		ref, refBody, refOK := referenceResponse(resp)
		c, err := net.Dial("tcp", front)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		io.WriteString(c, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
		br := bufio.NewReader(c)
		for i := range 2 {
			got, err := readFinal(br)
			if err != nil {
				if i == 1 && (errors.Is(err, io.EOF) || isTimeout(err)) {
					return // the first answer ended the connection
				}
				t.Fatalf("answer %d unreadable: %v", i+1, err)
			}
			body, err := io.ReadAll(got.Body)
			if err != nil {
				// Only a backend's broken answer may end early (net/http
				// says so in more than one way), and the connection
				// with it.
				if !refOK {
					return
				}
				t.Fatalf("answer %d (%s): body unframed: %v", i+1, got.Status, err)
			}
			if refOK && got.StatusCode == ref.StatusCode && got.StatusCode != 502 && string(body) != refBody {
				t.Fatalf("answer %d: body %q, net/http reads %q", i+1, body, refBody)
			}
			if got.Close {
				if i == 0 {
					if _, err := br.ReadByte(); err == nil {
						t.Fatal("bytes after an answer that ended the connection")
					}
				}
				return
			}
		}
	})
}

// fuzzBalancer is a balancer that logs nowhere: a fuzz target's logs
// cannot go to the test's.
func fuzzBalancer(f *testing.F) *Balancer {
	b := New(zerolog.Nop())
	f.Cleanup(func() { b.Close() })
	return b
}

func configOf(lbs ...*pb.LoadBalancer) *pb.BalancerConfig {
	return &pb.BalancerConfig{LoadBalancers: lbs}
}

// readFinal reads past interim (1xx) answers to the final one.
func readFinal(br *bufio.Reader) (*http.Response, error) {
	for range 8 {
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode >= 200 || resp.StatusCode == 101 {
			return resp, err
		}
	}
	return nil, errors.New("too many interim answers")
}

// referenceResponse is the final answer net/http reads from a backend's
// bytes, with its body; ok only when both read cleanly.
func referenceResponse(p []byte) (*http.Response, string, bool) {
	resp, err := readFinal(bufio.NewReader(bytes.NewReader(p)))
	if err != nil {
		return nil, "", false
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, "", false
	}
	return resp, string(body), true
}
