package balancer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/keep-vip/keep-vip/balancer/internal/policy"
	"github.com/keep-vip/keep-vip/balancer/internal/reactor"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

func TestTCPConnectTimeoutTriesNext(t *testing.T) {
	b := newBalancer(t)
	l := named(lb("web", "127.0.0.1:0", blackhole(t), startBackend(t, "b2")), "hole", "b2")
	l.ConnectTimeoutMs = 100
	configure(t, b, l)

	start := time.Now()
	if got := whoAnswers(t, addr(t, b, "web")); got != "b2" {
		t.Errorf("answer from %s, want b2", got)
	}
	if took := time.Since(start); took < 100*time.Millisecond || took > time.Second {
		t.Errorf("answer after %s, want just over the 100ms connect timeout", took)
	}
	if n := testutil.ToFloat64(b.m.DialErrors.WithLabelValues("web", "hole")); n != 1 {
		t.Errorf("%s{backend=hole} = %v, want 1", policy.MetricDialErrors, n)
	}
}

func TestTCPIdleTimeout(t *testing.T) {
	b := newBalancer(t)
	l := named(lb("web", "127.0.0.1:0", startBackend(t, "b1")), "b1")
	l.IdleTimeoutMs = 300
	configure(t, b, l)
	front := addr(t, b, "web")

	busy, quiet := dial(t, front), dial(t, front)
	busy.ask("one")
	quiet.ask("one")
	start := time.Now()
	// The busy connection talks every 100ms and outlives the timeout
	// twice over; the quiet one is closed within 1.25 timeouts.
	for time.Since(start) < 700*time.Millisecond {
		if got := busy.ask("ping"); got != "b1 ping" {
			t.Fatalf("busy connection: answer %q", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	quiet.c.SetReadDeadline(time.Now().Add(waitFor))
	if _, err := quiet.r.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("quiet connection: read = %v, want EOF", err)
	}
	if got := busy.ask("still"); got != "b1 still" {
		t.Errorf("busy connection after %s: answer %q", time.Since(start), got)
	}
}

// The client's address reaches the backend in a PROXY header of the
// configured version; the header's destination is the balancer's address.
func TestTCPProxyProtocol(t *testing.T) {
	for _, v := range []int32{1, 2} {
		t.Run(map[int32]string{1: "v1", 2: "v2"}[v], func(t *testing.T) {
			b := newBalancer(t)
			l := lb("web", "127.0.0.1:0", startProxyBackend(t))
			l.ProxyProtocol = v
			configure(t, b, l)
			front := addr(t, b, "web")
			c := dial(t, front)
			line, err := c.r.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			want := "v" + string(rune('0'+v)) + " " + c.c.LocalAddr().String() + " " + front + "\n"
			if line != want {
				t.Errorf("backend saw %q, want %q", line, want)
			}
		})
	}
}

// Close lets connections drain for the drain timeout, then cuts them.
func TestTCPDrainOnClose(t *testing.T) {
	b := newBalancer(t)
	configureDrain(t, b, 400*time.Millisecond, named(lb("web", "127.0.0.1:0", startBackend(t, "b1")), "b1"))
	front := addr(t, b, "web")
	leaving, staying := dial(t, front), dial(t, front)
	leaving.ask("hi")
	staying.ask("hi")

	start := time.Now()
	closed := make(chan struct{})
	go func() { b.Close(); close(closed) }()
	time.Sleep(100 * time.Millisecond)
	if _, err := net.DialTimeout("tcp", front, waitFor); err == nil {
		t.Error("a closing balancer accepts")
	}
	if got := staying.ask("draining"); got != "b1 draining" {
		t.Errorf("while draining: answer %q", got)
	}
	leaving.c.Close()
	select {
	case <-closed:
		if took := time.Since(start); took < 400*time.Millisecond {
			t.Errorf("Close returned after %s, before the drain timeout with a connection open", took)
		}
	case <-time.After(waitFor):
		t.Fatal("Close hangs")
	}
	staying.c.SetReadDeadline(time.Now().Add(waitFor))
	if _, err := staying.r.ReadByte(); err == nil {
		t.Error("connection still open after the drain timeout")
	}
}

// A load balancer that changes type between tcp and http keeps its socket:
// no connect is refused, established tcp connections go on, new ones get
// the http proxy.
func TestTypeChangeKeepsSocket(t *testing.T) {
	b := newBalancer(t)
	bind := deadAddr(t)
	web, _ := startHTTPBackend(t, "h1")
	configureDrain(t, b, time.Minute, named(lb("web", bind, startBackend(t, "b1")), "b1"))
	old := dial(t, bind)
	old.ask("hi")

	// Connect attempts all along the change: none may be refused.
	stop := make(chan struct{})
	refused := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				refused <- nil
				return
			default:
			}
			c, err := net.DialTimeout("tcp", bind, waitFor)
			if err != nil {
				refused <- err
				return
			}
			c.Close()
		}
	}()
	time.Sleep(20 * time.Millisecond)
	configureDrain(t, b, time.Minute, typed(named(lb("web", bind, hostOf(web)), "h1"), TypeHTTP))
	time.Sleep(20 * time.Millisecond)
	close(stop)
	if err := <-refused; err != nil {
		t.Errorf("connect during the type change: %v", err)
	}
	if got := addr(t, b, "web"); got != bind {
		t.Errorf("bound to %s, want %s", got, bind)
	}
	if resp, body := get(t, bind, "/x"); resp.StatusCode != 200 || body != "h1 /x" {
		t.Errorf("http after the change: %s %q", resp.Status, body)
	}
	if got := old.ask("still"); got != "b1 still" {
		t.Errorf("tcp connection from before the change: answer %q", got)
	}
	st, _ := b.Status(context.Background())
	if st.Details["web bind"] != "http "+bind {
		t.Errorf("status = %v", st)
	}
}

func TestLeastConnTCP(t *testing.T) {
	b := newBalancer(t)
	l := named(lb("web", "127.0.0.1:0", startBackend(t, "b1"), startBackend(t, "b2")), "b1", "b2")
	l.Algorithm = AlgoLeastConn
	configure(t, b, l)
	front := addr(t, b, "web")
	// Two long connections, one each; closing b1's leaves b1 the least
	// loaded, so the next two go to b1 then to either.
	c1, c2 := dial(t, front), dial(t, front)
	n1, _, _ := strings.Cut(c1.ask("x"), " ")
	n2, _, _ := strings.Cut(c2.ask("x"), " ")
	if n1 == n2 {
		t.Fatalf("two connections both on %s", n1)
	}
	c1.c.Close()
	eventually(t, "closed connection no longer counted", func() bool {
		return testutil.ToFloat64(b.m.BackendActive.WithLabelValues("web", n1)) == 0
	})
	c3 := dial(t, front)
	if got, _, _ := strings.Cut(c3.ask("x"), " "); got != n1 {
		t.Errorf("least loaded is %s, connection went to %s", n1, got)
	}
}

func TestSourceHashTCP(t *testing.T) {
	b := newBalancer(t)
	var addrs, names []string
	for _, n := range []string{"b1", "b2", "b3"} {
		addrs = append(addrs, startBackend(t, n))
		names = append(names, n)
	}
	l := named(lb("web", "127.0.0.1:0", addrs...), names...)
	l.Algorithm = AlgoSourceHash
	configure(t, b, l)
	front := addr(t, b, "web")
	// One client address: always the same backend.
	first := whoAnswers(t, front)
	for range 5 {
		if got := whoAnswers(t, front); got != first {
			t.Fatalf("same client went to %s, then %s", first, got)
		}
	}
}

// The backend closes first: the client reads its last bytes and the end,
// and once it closes too nothing is left open.
func TestTCPBackendClosesFirst(t *testing.T) {
	backend := serveTCP(t, func(c net.Conn) { io.WriteString(c, "bye\n") })
	b := newBalancer(t)
	configure(t, b, lb("web", "127.0.0.1:0", backend))
	c := dial(t, addr(t, b, "web"))
	got, err := io.ReadAll(bufio.NewReader(c.c))
	if err != nil || string(got) != "bye\n" {
		t.Errorf("read %q, %v", got, err)
	}
	c.c.Close()
	eventually(t, "connection gone", func() bool { return testutil.ToFloat64(b.m.Active.WithLabelValues("web")) == 0 })
}

// pipeCounts are how many splice pipes b's loops have opened in all, and
// how many are open now.
func pipeCounts(b *Balancer) (opened, open int) {
	for _, r := range b.loops.Loops {
		opened += int(r.PipesOpened.Load())
		r.Do(func() { open += r.Pipes })
	}
	return opened, open
}

// A bulk transfer both ways at once moves through splice pipes, byte for
// byte and in order, ends with the half-closes as sent, is counted in the
// metrics, and leaves no pipe open.
func TestTCPSpliceStreams(t *testing.T) {
	// The backend echoes everything, then half-closes when the client
	// has.
	backend := serveTCP(t, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(4 * waitFor))
		io.Copy(c, c)
		c.(*net.TCPConn).CloseWrite()
	})
	b := newBalancer(t)
	l := named(lb("web", "127.0.0.1:0", backend), "b1")
	l.Splice = true
	configure(t, b, l)
	c := dial(t, addr(t, b, "web"))
	c.c.SetDeadline(time.Now().Add(4 * waitFor))

	const size = 16<<20 + 4321
	sent := make([]byte, size)
	rand.New(rand.NewSource(1)).Read(sent)
	go func() {
		c.c.Write(sent)
		c.c.CloseWrite()
	}()
	got, err := io.ReadAll(c.c)
	if err != nil {
		t.Fatalf("after %d bytes: %v", len(got), err)
	}
	if len(got) != size || sha256.Sum256(got) != sha256.Sum256(sent) {
		t.Fatalf("got %d bytes back (sha256 %x), sent %d (sha256 %x)", len(got), sha256.Sum256(got), size, sha256.Sum256(sent))
	}
	if opened, _ := pipeCounts(b); opened < 2 {
		t.Errorf("%d splice pipes opened, want one each way", opened)
	}
	if st, _ := b.Status(t.Context()); st.Details["web splice"] != "on" {
		t.Errorf("status does not say splice is on: %v", st.Details)
	}
	c.c.Close()
	eventually(t, "bytes counted", func() bool {
		return testutil.ToFloat64(b.m.Bytes.WithLabelValues("web", "b1", policy.DirToBackend)) == size &&
			testutil.ToFloat64(b.m.Bytes.WithLabelValues("web", "b1", policy.DirToClient)) == size
	})
	eventually(t, "pipes closed", func() bool { _, open := pipeCounts(b); return open == 0 })
}

// Small exchanges copy, splice or not: a request and its answer never
// fill the loop's buffer, and pipes would cost them more than they save.
func TestTCPSmallExchangesCopy(t *testing.T) {
	b := newBalancer(t)
	l := lb("web", "127.0.0.1:0", startBackend(t, "b1"))
	l.Splice = true
	configure(t, b, l)
	c := dial(t, addr(t, b, "web"))
	for i := range 100 {
		if got, want := c.ask(strings.Repeat("x", i*100)), "b1 "+strings.Repeat("x", i*100); got != want {
			t.Fatalf("answer %d: %d bytes, want %d", i, len(got), len(want))
		}
	}
	if opened, _ := pipeCounts(b); opened != 0 {
		t.Errorf("%d splice pipes opened for small exchanges", opened)
	}
}

// BenchmarkTCPStream is a bulk download through the proxy, the streaming
// direction copied (the default) and spliced; cpu-µs/MiB is the whole
// process's, the same client and backend in both.
func BenchmarkTCPStream(b *testing.B) {
	const size = 64 << 20
	chunk := make([]byte, 1<<20)
	backend := serveTCP(b, func(c net.Conn) {
		for n := 0; n < size; n += len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	})
	for _, mode := range []struct {
		name   string
		splice bool
	}{{"copy", false}, {"splice", true}} {
		b.Run(mode.name, func(b *testing.B) {
			bal := New(zerolog.Nop())
			defer bal.Close()
			l := lb("web", "127.0.0.1:0", backend)
			l.Splice = mode.splice
			if err := bal.Configure(context.Background(), &pb.BalancerConfig{LoadBalancers: []*pb.LoadBalancer{l}}); err != nil {
				b.Fatal(err)
			}
			front := bal.Addrs()["web"].String()
			b.SetBytes(size)
			var ru0, ru1 syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
			defer func() {
				syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
				cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
				b.ReportMetric(float64(cpu.Microseconds())/float64(b.N*size>>20), "cpu-µs/MiB")
			}()
			for b.Loop() {
				c, err := net.Dial("tcp", front)
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.Copy(io.Discard, c)
				c.Close()
				if n != size {
					b.Fatalf("got %d bytes", n)
				}
			}
		})
	}
}

// withSendRing runs f with the loops of balancers made meanwhile sending
// through a ring or with sendto.
func withSendRing(t *testing.T, on bool, f func(t *testing.T)) {
	t.Helper()
	if on {
		if _, err := reactor.NewSendRing(); err != nil {
			t.Skipf("no io_uring here: %v", err)
		}
	}
	old := reactor.SendRingOn
	reactor.SendRingOn = on
	t.Cleanup(func() { reactor.SendRingOn = old })
	f(t)
}

// Small writes through the proxy, the ring's kind, whether the loop sends
// them through its ring or one sendto each: many short exchanges, then a
// flood of small writes towards a backend that stops reading for a while
// (the writes meet a full socket and wait), then a half-close that must
// reach the backend after the last byte.
func TestTCPSmallWritesRingAndSendto(t *testing.T) {
	for _, ring := range []bool{true, false} {
		t.Run(fmt.Sprintf("ring=%v", ring), func(t *testing.T) {
			withSendRing(t, ring, func(t *testing.T) {
				b := newBalancer(t)
				type result struct {
					sum [32]byte
					n   int
					err error
				}
				got := make(chan result, 1)
				backend := serveTCP(t, func(c net.Conn) {
					// An echo for the exchanges; "flood" turns it
					// into a sink that reads nothing for a while.
					buf := make([]byte, 4096)
					for {
						n, err := c.Read(buf)
						if err != nil {
							return
						}
						if bytes.Equal(buf[:n], []byte("flood\n")) {
							break
						}
						c.Write(buf[:n])
					}
					time.Sleep(300 * time.Millisecond)
					h := sha256.New()
					n, err := io.Copy(h, c)
					var r result
					copy(r.sum[:], h.Sum(nil))
					r.n, r.err = int(n), err
					got <- r
					c.Write([]byte("done"))
				})
				configure(t, b, lb("web", "127.0.0.1:0", backend))
				c, err := net.Dial("tcp", addr(t, b, "web"))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				if b.loops.Loops[0].Ring != nil != ring {
					t.Fatalf("loop ring set up = %v, want %v", b.loops.Loops[0].Ring != nil, ring)
				}
				buf := make([]byte, 4096)
				for i := range 200 {
					msg := bytes.Repeat([]byte{byte('a' + i%26)}, 1+i*7)
					if _, err := c.Write(msg); err != nil {
						t.Fatal(err)
					}
					if _, err := io.ReadFull(c, buf[:len(msg)]); err != nil || !bytes.Equal(buf[:len(msg)], msg) {
						t.Fatalf("exchange %d: %v, echo differs", i, err)
					}
				}
				if _, err := c.Write([]byte("flood\n")); err != nil {
					t.Fatal(err)
				}
				time.Sleep(50 * time.Millisecond)
				h := sha256.New()
				sent := 0
				for i := range 16000 {
					msg := bytes.Repeat([]byte{byte('A' + i%26)}, 512)
					if _, err := c.Write(msg); err != nil {
						t.Fatal(err)
					}
					h.Write(msg)
					sent += len(msg)
				}
				c.(*net.TCPConn).CloseWrite()
				r := <-got
				if r.err != nil || r.n != sent || r.sum != [32]byte(h.Sum(nil)) {
					t.Errorf("backend got %d bytes (%v), want the %d sent, in order", r.n, r.err, sent)
				}
				if reply, _ := io.ReadAll(c); string(reply) != "done" {
					t.Errorf("after the half-close: %q, want the backend's %q", reply, "done")
				}
			})
		})
	}
}
