package balancer

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keep-vip/keep-vip/balancer/internal/httpwire"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// recorded is one request a recordingBackend read.
type recorded struct {
	method, uri, host, xff string
	body                   string
}

// recordingBackend is an HTTP/1.1 backend that reads each request with
// net/http's reader (the reference parser), records it, and answers with
// answer's bytes as they are; a request net/http cannot read is recorded
// as an error and ends the connection.
type recordingBackend struct {
	addr   string
	answer func(n int, r *http.Request) string
	mu     sync.Mutex
	reqs   []recorded
	errs   []error
}

func startRecordingBackend(tb testing.TB, answer func(n int, r *http.Request) string) *recordingBackend {
	tb.Helper()
	rb := &recordingBackend{answer: answer}
	if rb.answer == nil {
		rb.answer = func(n int, r *http.Request) string {
			body := fmt.Sprintf("r%d %s", n, r.RequestURI)
			head := fmt.Sprintf("HTTP/1.1 200 OK\r\nX-Rec: %d\r\nContent-Length: %d\r\n\r\n", n, len(body))
			if r.Method == http.MethodHead {
				return head
			}
			return head + body
		}
	}
	rb.addr = serveTCP(tb, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			c.SetDeadline(time.Now().Add(waitFor))
			req, err := http.ReadRequest(br)
			if err != nil {
				if err != io.EOF && !strings.Contains(err.Error(), "use of closed") && !isTimeout(err) {
					rb.fail(err)
				}
				return
			}
			body, err := io.ReadAll(req.Body)
			if err != nil {
				rb.fail(fmt.Errorf("body of %s %s: %w", req.Method, req.RequestURI, err))
				return
			}
			rb.mu.Lock()
			n := len(rb.reqs)
			rb.reqs = append(rb.reqs, recorded{req.Method, req.RequestURI, req.Host, req.Header.Get("X-Forwarded-For"), string(body)})
			rb.mu.Unlock()
			if _, err := io.WriteString(c, rb.answer(n, req)); err != nil || req.Close {
				return
			}
		}
	})
	return rb
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func (rb *recordingBackend) fail(err error) {
	rb.mu.Lock()
	rb.errs = append(rb.errs, err)
	rb.mu.Unlock()
}

// take returns what was recorded since the last call, and forgets it.
func (rb *recordingBackend) take() ([]recorded, []error) {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	reqs, errs := rb.reqs, rb.errs
	rb.reqs, rb.errs = nil, nil
	return reqs, errs
}

// recordingFront is an http load balancer in front of a recording backend
// and its address; opts change its config.
func recordingFront(tb testing.TB, b *Balancer, answer func(n int, r *http.Request) string, opts ...func(*pb.LoadBalancer)) (*recordingBackend, string) {
	rb := startRecordingBackend(tb, answer)
	l := named(httpLB("web", rb.addr), "rec")
	for _, o := range opts {
		o(l)
	}
	if err := b.Configure(tb.Context(), &pb.BalancerConfig{LoadBalancers: []*pb.LoadBalancer{l}}); err != nil {
		tb.Fatal(err)
	}
	a, ok := b.Addrs()["web"]
	if !ok {
		tb.Fatal("web is not running")
	}
	return rb, a.String()
}

// dialFront is a client connection to front, closed with the test, with
// waitFor to do its work.
func dialFront(t *testing.T, front string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", front)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(waitFor))
	return c
}

// wantStatuses reads answers from br and wants their statuses in order.
func wantStatuses(t *testing.T, br *bufio.Reader, codes ...int) {
	t.Helper()
	for _, want := range codes {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("want a %d: %v", want, err)
		}
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != want {
			t.Errorf("got %s, want %d", resp.Status, want)
		}
	}
}

// The smuggling reproducer of issue 16: a Content-Length that Connection
// names frames the body all the same, so the backend sees one request,
// with the would-be second one as its body.
func TestHTTPConnectionCannotUnframe(t *testing.T) {
	rb, front := recordingFront(t, newBalancer(t), nil)
	c := dialFront(t, front)
	smuggled := "GET /smuggled HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"
	fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: Content-Length\r\n\r\n%s", len(smuggled), smuggled)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	time.Sleep(100 * time.Millisecond) // a second request would have come by now
	reqs, errs := rb.take()
	if len(reqs) != 1 || len(errs) != 0 || reqs[0].uri != "/" || reqs[0].body != smuggled {
		t.Fatalf("backend saw %+v, errors %v; want one POST / carrying the rest as its body", reqs, errs)
	}
}

// An HTTP/1.0 client never gets an interim answer (RFC 9110 15.2), and its
// request reaches the backend as HTTP/1.0.
func TestHTTP10GetsNoInterimAnswer(t *testing.T) {
	rb, front := recordingFront(t, newBalancer(t), func(n int, r *http.Request) string {
		return fmt.Sprintf("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n1.%d!", r.ProtoMinor)
	})
	c := dialFront(t, front)
	io.WriteString(c, "POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi")
	all, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(all), "HTTP/1.1 200 OK\r\n") || !strings.HasSuffix(string(all), "\r\n\r\n1.0!") {
		t.Errorf("the HTTP/1.0 client got %q", all)
	}
	if reqs, _ := rb.take(); len(reqs) != 1 || reqs[0].body != "hi" {
		t.Errorf("backend saw %+v", reqs)
	}
}

// A head longer than the documented 32 KiB is refused even when it
// arrives, end and all, in one read.
func TestHTTPHeadLimit(t *testing.T) {
	rb, front := recordingFront(t, newBalancer(t), nil)
	for _, tc := range []struct {
		size int
		code int
	}{{httpwire.MaxHead, 200}, {httpwire.MaxHead + 1, 431}} {
		c := dialFront(t, front)
		head := "GET / HTTP/1.1\r\nHost: a\r\nX-Pad: "
		head += strings.Repeat("p", tc.size-len(head)-4) + "\r\n\r\n"
		io.WriteString(c, head)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != tc.code {
			t.Errorf("a head of %d bytes: %s, want %d", tc.size, resp.Status, tc.code)
		}
	}
	if reqs, _ := rb.take(); len(reqs) != 1 {
		t.Errorf("backend saw %d requests, want 1", len(reqs))
	}
}

// A backend that breaks off its answer before any of its body came gets
// the client a 502, not a head and then the end of the connection; the
// client's connection goes on.
func TestHTTPAnswerBrokenBeforeItsBody(t *testing.T) {
	backend := serveTCP(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			c.SetDeadline(time.Now().Add(waitFor))
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if req.URL.Path == "/broken" {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	b := newBalancer(t)
	configure(t, b, named(httpLB("web", backend), "raw"))
	c := dialFront(t, addr(t, b, "web"))
	io.WriteString(c, "GET /broken HTTP/1.1\r\nHost: a\r\n\r\nGET /ok HTTP/1.1\r\nHost: a\r\n\r\n")
	wantStatuses(t, bufio.NewReader(c), 502, 200)
}

// One empty line before a request line is ignored (RFC 9112 2.2), as an
// old client may end a body with one; a second is refused.
func TestHTTPEmptyLineBeforeRequest(t *testing.T) {
	rb, front := recordingFront(t, newBalancer(t), nil)
	c := dialFront(t, front)
	io.WriteString(c, "POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nab\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\n\r\n")
	wantStatuses(t, bufio.NewReader(c), 200, 200, 400)
	if reqs, _ := rb.take(); len(reqs) != 2 || reqs[1].uri != "/2" {
		t.Errorf("backend saw %+v", reqs)
	}
}
