package reactor

import (
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Listener is a listening socket on one reactor: a duplicate of the
// frontend's socket, so that closing it stops only this server's
// accepting, and a tcp and an http server can hand the socket over.
type Listener struct {
	r       *Loop
	fd      int // -1 once stopped
	open    func(fd int, sa unix.Sockaddr)
	onError func(err error, retryIn time.Duration)
	// backoff: accepting stops for a while after running out of
	// descriptors.
	backoff time.Duration
}

// acceptBackoffMax bounds the pause in accepting after a failed accept.
const acceptBackoffMax = 100 * time.Millisecond

// ListenOn registers a duplicate of sock with r; open gets each
// accepted connection, on the loop.
func ListenOn(r *Loop, sock *Socket, open func(fd int, sa unix.Sockaddr), onError func(error, time.Duration)) (*Listener, error) {
	l := &Listener{r: r, fd: -1, open: open, onError: onError}
	fd, err := DupFD(sock.fd)
	if err != nil {
		return nil, err
	}
	var derr error
	r.Do(func() {
		if derr = r.Add(fd, l, unix.EPOLLIN|unix.EPOLLEXCLUSIVE); derr == nil {
			l.fd = fd
		}
	})
	if derr != nil {
		unix.Close(fd)
		return nil, derr
	}
	return l, nil
}

// Stop closes the duplicate; connections accepted go on.
func (l *Listener) Stop() {
	l.r.Do(func() {
		if l.fd >= 0 {
			l.r.CloseFD(l.fd)
			l.fd = -1
		}
	})
}

// Event accepts what is pending, a batch at a time: the listening socket
// is level-triggered, so epoll reports the rest.
func (l *Listener) Event(fd int, _ uint32) {
	for range 64 {
		nfd, sa, err := unix.Accept4(fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		switch {
		case err == nil:
			l.backoff = 0
			unix.SetsockoptInt(nfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
			l.open(nfd, sa)
			continue
		case err == unix.EAGAIN:
			return
		case err == unix.EINTR || err == unix.ECONNABORTED:
			continue
		}
		// Out of descriptors or memory: stop accepting for a while
		// rather than spin on a socket that stays readable; briefly, so
		// that accepting resumes within acceptBackoffMax of the
		// descriptors being free.
		l.backoff = min(max(2*l.backoff, 5*time.Millisecond), acceptBackoffMax)
		l.onError(err, l.backoff)
		l.r.remove(fd)
		time.AfterFunc(l.backoff, func() {
			l.r.post(func() {
				if l.fd == fd {
					l.r.Add(fd, l, unix.EPOLLIN|unix.EPOLLEXCLUSIVE)
				}
			})
		})
		return
	}
}

// ConnCount counts a server's client connections, for drain to wait on.
type ConnCount struct {
	N       atomic.Int64
	mu      sync.Mutex
	waiters []chan struct{}
}

func (cc *ConnCount) Opened() { cc.N.Add(1) }

func (cc *ConnCount) Closed() {
	if cc.N.Add(-1) != 0 {
		return
	}
	cc.mu.Lock()
	for _, ch := range cc.waiters {
		close(ch)
	}
	cc.waiters = nil
	cc.mu.Unlock()
}

// WaitEmpty waits up to d for the last connection to end.
func (cc *ConnCount) WaitEmpty(d time.Duration) bool {
	cc.mu.Lock()
	if cc.N.Load() == 0 {
		cc.mu.Unlock()
		return true
	}
	ch := make(chan struct{})
	cc.waiters = append(cc.waiters, ch)
	cc.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	}
}
