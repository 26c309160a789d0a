package balancer

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// ringRecorder is a ringWriter that keeps what it hears.
type ringRecorder struct {
	calls []ringResult
}

type ringResult struct {
	up   bool
	size int
	n    int
	err  error
}

func (r *ringRecorder) written(up bool, data []byte, n int, err error) {
	r.calls = append(r.calls, ringResult{up: up, size: len(data), n: n, err: err})
}

// socketPair is a connected non-blocking stream pair: the ring writes to
// the first, the test reads the second.
func socketPair(t *testing.T) (int, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return fds[0], fds[1]
}

func newTestRing(t *testing.T) *sendRing {
	t.Helper()
	r, err := newSendRing()
	if err != nil {
		t.Skipf("no io_uring here: %v", err)
	}
	t.Cleanup(r.close)
	return r
}

// readAll drains a non-blocking socket.
func readAll(fd int) []byte {
	var out []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(fd, buf)
		if n <= 0 || err != nil {
			return out
		}
		out = append(out, buf[:n]...)
	}
}

func TestSendRing(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sockets int
		writes  int // per socket
		size    int
	}{
		{"one write", 1, 1, 100},
		{"a turn's writes to many sockets", 8, 4, 300},
		// More writes than ring entries and more bytes than the
		// arena: queue flushes on its own, order kept per socket.
		{"more than the ring holds", 3, 200, 1000},
		{"more than the arena holds", 2, 40, sendRingMax},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newTestRing(t)
			rec := &ringRecorder{}
			type pair struct {
				w, rd int
				want  []byte
			}
			pairs := make([]pair, tc.sockets)
			for i := range pairs {
				pairs[i].w, pairs[i].rd = socketPair(t)
				unix.SetsockoptInt(pairs[i].w, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
			}
			var got [][]byte = make([][]byte, tc.sockets)
			for k := range tc.writes {
				for i := range pairs {
					p := bytes.Repeat([]byte{byte('a' + (k+i)%26)}, tc.size)
					pairs[i].want = append(pairs[i].want, p...)
					r.queue(pairs[i].w, p, rec, i%2 == 0)
					// The reader keeps up, as a backend would.
					got[i] = append(got[i], readAll(pairs[i].rd)...)
				}
			}
			r.flush()
			if len(r.queued) != 0 || r.used != 0 {
				t.Fatalf("after flush: %d writes, %d bytes still queued", len(r.queued), r.used)
			}
			if len(rec.calls) != tc.sockets*tc.writes {
				t.Fatalf("%d writes reported, want %d", len(rec.calls), tc.sockets*tc.writes)
			}
			for i, c := range rec.calls {
				if c.err != nil || c.n != c.size || c.up != ((i%tc.sockets)%2 == 0) {
					t.Fatalf("write %d: %+v, want all %d bytes written, up=%v", i, c, tc.size, (i%tc.sockets)%2 == 0)
				}
			}
			for i := range pairs {
				got[i] = append(got[i], readAll(pairs[i].rd)...)
				if sha256.Sum256(got[i]) != sha256.Sum256(pairs[i].want) {
					t.Errorf("socket %d: %d bytes arrived, want %d in order", i, len(got[i]), len(pairs[i].want))
				}
			}
		})
	}
}

// A full socket is not an error: the writer hears how much went (none or
// part), with EAGAIN when nothing did, and keeps the rest.
func TestSendRingFullSocket(t *testing.T) {
	r := newTestRing(t)
	w, rd := socketPair(t)
	fill := make([]byte, 64<<10)
	for {
		if _, err := unix.Write(w, fill); err != nil {
			if !errors.Is(err, unix.EAGAIN) {
				t.Fatal(err)
			}
			break
		}
	}
	rec := &ringRecorder{}
	r.queue(w, make([]byte, 4096), rec, true)
	done := make(chan struct{})
	go func() {
		// Bounded: flush must not wait for the reader.
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			panic("sendRing.flush waited on a full socket")
		}
	}()
	r.flush()
	close(done)
	if len(rec.calls) != 1 {
		t.Fatalf("%d writes reported, want 1", len(rec.calls))
	}
	if c := rec.calls[0]; !(errors.Is(c.err, unix.EAGAIN) && c.n == 0) && !(c.err == nil && c.n < c.size) {
		t.Errorf("write to a full socket: %+v, want EAGAIN or a short write", c)
	}
	_ = rd
}

// A write to a closed peer fails with EPIPE and raises no SIGPIPE.
func TestSendRingClosedPeer(t *testing.T) {
	r := newTestRing(t)
	w, rd := socketPair(t)
	unix.Close(rd)
	rec := &ringRecorder{}
	r.queue(w, []byte("hello"), rec, false)
	r.flush()
	if len(rec.calls) != 1 || !errors.Is(rec.calls[0].err, unix.EPIPE) {
		t.Errorf("write to a closed peer: %+v, want EPIPE", rec.calls)
	}
}

// withSendRing runs f with the loops of balancers made meanwhile sending
// through a ring or with sendto.
func withSendRing(t *testing.T, on bool, f func(t *testing.T)) {
	t.Helper()
	if on {
		if _, err := newSendRing(); err != nil {
			t.Skipf("no io_uring here: %v", err)
		}
	}
	old := sendRingOn
	sendRingOn = on
	t.Cleanup(func() { sendRingOn = old })
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
				if b.loops.loops[0].ring != nil != ring {
					t.Fatalf("loop ring set up = %v, want %v", b.loops.loops[0].ring != nil, ring)
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
