package balancer

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"github.com/keep-vip/keep-vip/balancer/internal/policy"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// fdLimit holds the process at its open-files limit: the soft limit is
// lowered to just above the descriptors open now and the rest filled.
// leave fills again and leaves n descriptors free (others in the process
// may have closed some meanwhile); release frees them all and restores
// the limit (also at the test's end).
type fdLimit struct {
	t       *testing.T
	orig    unix.Rlimit
	fillers []int
}

func holdFDLimit(t *testing.T) *fdLimit {
	t.Helper()
	l := &fdLimit{t: t}
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &l.orig); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	top := 0
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil && n > top {
			top = n
		}
	}
	lim := l.orig
	lim.Cur = uint64(top + 64)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.release)
	l.leave(0)
	return l
}

// leave fills up to the limit, then frees n descriptors.
func (l *fdLimit) leave(n int) {
	for {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == unix.EMFILE {
			break
		}
		if err != nil {
			l.t.Fatal(err)
		}
		if l.fillers = append(l.fillers, fd); len(l.fillers) > 1<<16 {
			l.t.Fatal("the open-files limit was never reached")
		}
	}
	l.free(n)
}

// free closes n fillers.
func (l *fdLimit) free(n int) {
	for range n {
		unix.Close(l.fillers[len(l.fillers)-1])
		l.fillers = l.fillers[:len(l.fillers)-1]
	}
}

func (l *fdLimit) release() {
	l.free(len(l.fillers))
	unix.Setrlimit(unix.RLIMIT_NOFILE, &l.orig)
}

// rawClient is a client socket opened before the limit is reached: its
// connect and I/O need no descriptor more.
func rawClient(t *testing.T, typ int) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	// A udp client waits for no answer; a tcp one for its answer or end.
	wait := unix.Timeval{Sec: 1}
	if typ == unix.SOCK_DGRAM {
		wait = unix.Timeval{Usec: 200000}
	}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &wait)
	return fd
}

// exchange connects fd to addr, sends req and returns what comes back
// before the connection's end or the socket's receive timeout.
func rawExchange(t *testing.T, fd int, addr, req string) string {
	t.Helper()
	ap := netip.MustParseAddrPort(addr)
	if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}); err != nil {
		t.Fatalf("connect to %s: %v", addr, err)
	}
	if _, err := unix.Write(fd, []byte(req)); err != nil {
		t.Fatalf("send: %v", err)
	}
	return rawRead(fd)
}

// rawRead returns what fd gets before its end or its receive timeout.
func rawRead(fd int) string {
	var got []byte
	buf := make([]byte, 4096)
	for range 16 {
		n, err := unix.Read(fd, buf)
		if err != nil || n <= 0 {
			break
		}
		got = append(got, buf[:n]...)
	}
	return string(got)
}

// At the open-files limit the balancer's failures are its own: accept
// backs off, a connect that cannot get a socket fails only its client,
// active checks that cannot run say nothing, and no backend is ejected.
// Half a second after descriptors are free again, requests succeed.
func TestLocalFaultsAtFDLimit(t *testing.T) {
	for _, typ := range []string{TypeTCP, TypeHTTP, TypeUDP} {
		t.Run(typ, func(t *testing.T) {
			b := newBalancer(t)
			var backend, req, want string
			switch typ {
			case TypeTCP:
				backend = serveTCP(t, func(c net.Conn) { io.WriteString(c, "hello\n") })
				req, want = "", "hello\n"
			case TypeHTTP:
				h, _ := startHTTPBackend(t, "h1")
				backend = hostOf(h)
				req, want = "GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", "h1 /x"
			case TypeUDP:
				backend, _ = startUDPEcho(t, "h1")
				req, want = "ping", "h1 ping"
			}
			l := typed(named(lb("web", "127.0.0.1:0", backend), "h1"), typ)
			// One connect error would eject. (No active checks: their
			// sockets come and go, and the test needs every descriptor
			// counted; TestLocalFaultIsNoCheckFailure has them.)
			l.Health = &pb.BackendHealth{EjectAfterErrors: 1}
			configure(t, b, l)
			front := addr(t, b, "web")
			sockType := unix.SOCK_STREAM
			if typ == TypeUDP {
				sockType = unix.SOCK_DGRAM
			}
			clients := []int{rawClient(t, sockType), rawClient(t, sockType), rawClient(t, sockType), rawClient(t, sockType)}

			lim := holdFDLimit(t)
			if typ != TypeUDP {
				// No descriptor for accept: the first client waits in
				// the backlog.
				if got := rawExchange(t, clients[0], front, req); got != "" {
					t.Errorf("answered with no descriptor free: %q", got)
				}
			}
			for i, fd := range clients {
				var got string
				if typ != TypeUDP {
					// One free once the balancer has closed the last
					// client's connection: accepted, but no socket to
					// the backend.
					eventually(t, "the last client's connection closed", func() bool {
						return testutil.ToFloat64(b.m.Active.WithLabelValues("web")) == 0
					})
					lim.leave(1)
				}
				if i == 0 && typ != TypeUDP {
					got = rawRead(fd)
				} else {
					got = rawExchange(t, fd, front, req)
				}
				// The balancer lingers after an answer until the
				// client's end: the descriptor comes back.
				unix.Shutdown(fd, unix.SHUT_WR)
				if typ == TypeHTTP && !strings.Contains(got, "503 Service Unavailable") {
					t.Errorf("client %d at the limit got %q, want a 503", i, got)
				}
				if typ != TypeHTTP && got != "" {
					t.Errorf("client %d at the limit got %q", i, got)
				}
			}
			for _, op := range []string{policy.OpAccept, policy.OpConnect} {
				if typ == TypeUDP && op == policy.OpAccept {
					continue
				}
				if n := testutil.ToFloat64(b.m.LocalErrors.WithLabelValues("web", op, "EMFILE")); n == 0 {
					t.Errorf("%s{op=%s,error=EMFILE} = 0", policy.MetricLocalErrors, op)
				}
			}
			if n := testutil.ToFloat64(b.m.Ejections.WithLabelValues("web", "h1")); n != 0 {
				t.Errorf("the backend was ejected %v times", n)
			}
			if up := testutil.ToFloat64(b.m.Up.WithLabelValues("web", "h1")); up != 1 {
				t.Errorf("%s = %v at the limit", policy.MetricBackendUp, up)
			}

			lim.release()
			time.Sleep(500 * time.Millisecond)
			if got := answerOnce(t, typ, front, req); !strings.Contains(got, want) {
				t.Errorf("0.5 s after the limit: %q, want %q", got, want)
			}
			if n := testutil.ToFloat64(b.m.Ejections.WithLabelValues("web", "h1")); n != 0 {
				t.Errorf("the backend was ejected %v times", n)
			}
		})
	}
}

// answerOnce makes one request of a fresh client and returns the answer.
func answerOnce(t *testing.T, typ, front, req string) string {
	t.Helper()
	switch typ {
	case TypeHTTP:
		c, err := net.DialTimeout("tcp", front, waitFor)
		if err != nil {
			return err.Error()
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(waitFor))
		io.WriteString(c, req)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err.Error()
		}
		body, _ := io.ReadAll(resp.Body)
		return fmt.Sprintf("%d %s", resp.StatusCode, body)
	case TypeUDP:
		c, err := net.Dial("udp", front)
		if err != nil {
			return err.Error()
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(waitFor))
		c.Write([]byte(req))
		buf := make([]byte, 512)
		n, err := c.Read(buf)
		if err != nil {
			return err.Error()
		}
		return string(buf[:n])
	}
	c, err := net.DialTimeout("tcp", front, waitFor)
	if err != nil {
		return err.Error()
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitFor))
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err.Error()
	}
	return got
}

// A client that leaves while its request is at the backend has the
// backend's work abandoned: the backend connection closes (a Go backend
// cancels the request's context) and the request counts as 499, instead
// of the client's socket waiting in CLOSE-WAIT for the answer.
func TestHTTPClientGoneAbandonsBackend(t *testing.T) {
	b := newBalancer(t)
	started, cancelled := make(chan struct{}, 1), make(chan struct{}, 1)
	h, _ := startHTTPBackend(t, "h1", func(s *http.Server) {
		s.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			started <- struct{}{}
			select {
			case <-r.Context().Done():
				cancelled <- struct{}{}
			case <-time.After(2 * waitFor):
			}
		})
	})
	configure(t, b, named(httpLB("web", hostOf(h)), "h1"))
	c, err := net.Dial("tcp", addr(t, b, "web"))
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	select {
	case <-started:
	case <-time.After(waitFor):
		t.Fatal("the request never reached the backend")
	}
	start := time.Now()
	c.Close()
	select {
	case <-cancelled:
		t.Logf("backend work abandoned %s after the client left", time.Since(start))
	case <-time.After(waitFor):
		t.Fatal("the backend still works for a client that left")
	}
	eventually(t, "499 counted", func() bool { return testutil.ToFloat64(b.m.Requests.WithLabelValues("web", "h1", "499")) == 1 })
}
