package reactor

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// ringRecorder is a RingWriter that keeps what it hears.
type ringRecorder struct {
	calls []ringResult
}

type ringResult struct {
	up   bool
	size int
	n    int
	err  error
}

func (r *ringRecorder) Written(up bool, data []byte, n int, err error) {
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

func newTestRing(t *testing.T) *SendRing {
	t.Helper()
	r, err := NewSendRing()
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
		{"more than the arena holds", 2, 40, SendRingMax},
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
					r.Queue(pairs[i].w, p, rec, i%2 == 0)
					// The reader keeps up, as a backend would.
					got[i] = append(got[i], readAll(pairs[i].rd)...)
				}
			}
			r.Flush()
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
	r.Queue(w, make([]byte, 4096), rec, true)
	done := make(chan struct{})
	go func() {
		// Bounded: Flush must not wait for the reader.
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			panic("SendRing.Flush waited on a full socket")
		}
	}()
	r.Flush()
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
	r.Queue(w, []byte("hello"), rec, false)
	r.Flush()
	if len(rec.calls) != 1 || !errors.Is(rec.calls[0].err, unix.EPIPE) {
		t.Errorf("write to a closed peer: %+v, want EPIPE", rec.calls)
	}
}
