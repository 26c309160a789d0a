package reactor

import (
	"fmt"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A SendRing sends a loop turn's small socket writes with one io_uring_enter
// instead of one sendto each.
//
// Why: with the kernel's default preemption model a task is switched out
// only on its way back to user space, so every sendto that wakes a backend
// sharing the proxy's CPU hands that CPU to the backend with one request to
// serve; the backend then sleeps again and is woken by the next sendto.
// Writes submitted together reach the backend together, and it serves them
// in one wakeup (measured on the bench's tcp scenario, see the README).
//
// The ring is the loop's alone: only the loop thread submits and reaps, and
// every write is reaped before the turn ends (the sockets are non-blocking
// and the writes carry MSG_DONTWAIT, so none waits in the kernel), which
// keeps the data and the descriptors alive for exactly as long as the
// kernel uses them.
type SendRing struct {
	fd      int
	entries uint32
	sqRing  []byte
	cqRing  []byte
	sqeMem  []byte
	sqTail  *uint32
	sqMask  uint32
	cqHead  *uint32
	cqTail  *uint32
	cqMask  uint32
	sqes    []uringSQE
	cqes    []uringCQE
	// queued are the writes of this turn, in submission order; their
	// data is copied into arena.
	queued []ringWrite
	arena  []byte
	used   int
	// flushing: completions are being handled; everything queued has
	// reached the kernel already.
	flushing bool
}

// ringWrite is one queued write and whom to tell how it went.
type ringWrite struct {
	fd   int
	data []byte
	to   RingWriter
	up   bool
	res  int32
	done bool
}

// A RingWriter learns how its queued writes went: n bytes of data were
// written, or err (EAGAIN: none, the socket is full).
type RingWriter interface {
	Written(up bool, data []byte, n int, err error)
}

// SendRingOn: loops set up a ring (tests turn it off to cover sendto).
var SendRingOn = true

const (
	sysIOURingSetup = 425
	sysIOURingEnter = 426

	uringOpSend         = 26
	uringEnterGetEvents = 1
	uringFeatSingleMmap = 1

	uringOffSQRing = 0
	uringOffCQRing = 0x8000000
	uringOffSQEs   = 0x10000000

	// sendRingEntries bounds the writes one submission carries; a turn
	// with more submits more than once.
	sendRingEntries = 256
	// sendRingArena is where queued data waits; sendRingMax is the largest
	// write that is queued rather than sent at once (a request or a
	// response, not a stream: a full read buffer goes by sendto).
	sendRingArena = 256 << 10
	SendRingMax   = 16 << 10
)

// uringParams is struct io_uring_params.
type uringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  struct {
		head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
		userAddr                                                        uint64
	}
	cqOff struct {
		head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
		userAddr                                                        uint64
	}
}

// uringSQE is struct io_uring_sqe for the fields a send uses.
type uringSQE struct {
	opcode      uint8
	flags       uint8
	ioprio      uint16
	fd          int32
	off         uint64
	addr        uint64
	len         uint32
	msgFlags    uint32
	userData    uint64
	bufIndex    uint16
	personality uint16
	spliceFdIn  int32
	addr3       uint64
	pad         uint64
}

// uringCQE is struct io_uring_cqe.
type uringCQE struct {
	userData uint64
	res      int32
	flags    uint32
}

// NewSendRing sets up a ring; an error means the loop sends with sendto
// (io_uring disabled by sysctl or seccomp, or an old kernel).
func NewSendRing() (*SendRing, error) {
	var p uringParams
	fd, _, e := syscall.RawSyscall(sysIOURingSetup, sendRingEntries, uintptr(unsafe.Pointer(&p)), 0)
	if e != 0 {
		return nil, fmt.Errorf("io_uring_setup: %w", e)
	}
	r := &SendRing{fd: int(fd), entries: p.sqEntries}
	fail := func(what string, err error) (*SendRing, error) {
		r.close()
		return nil, fmt.Errorf("io_uring %s: %w", what, err)
	}
	if p.features&uringFeatSingleMmap == 0 {
		return fail("features", unix.ENOSYS)
	}
	size := max(int(p.sqOff.array)+int(p.sqEntries)*4, int(p.cqOff.cqes)+int(p.cqEntries)*int(unsafe.Sizeof(uringCQE{})))
	ring, err := unix.Mmap(r.fd, uringOffSQRing, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fail("map rings", err)
	}
	r.sqRing, r.cqRing = ring, ring
	sqes, err := unix.Mmap(r.fd, uringOffSQEs, int(p.sqEntries)*int(unsafe.Sizeof(uringSQE{})), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fail("map entries", err)
	}
	r.sqeMem = sqes
	at := func(b []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&b[off])) }
	r.sqTail = at(ring, p.sqOff.tail)
	r.sqMask = *at(ring, p.sqOff.ringMask)
	r.cqHead = at(ring, p.cqOff.head)
	r.cqTail = at(ring, p.cqOff.tail)
	r.cqMask = *at(ring, p.cqOff.ringMask)
	r.sqes = unsafe.Slice((*uringSQE)(unsafe.Pointer(&sqes[0])), p.sqEntries)
	r.cqes = unsafe.Slice((*uringCQE)(unsafe.Pointer(&ring[p.cqOff.cqes])), p.cqEntries)
	// Slot i of the submission queue always names entry i.
	array := unsafe.Slice(at(ring, p.sqOff.array), p.sqEntries)
	for i := range array {
		array[i] = uint32(i)
	}
	r.arena = make([]byte, sendRingArena)
	if err := r.probe(); err != nil {
		return fail("probe", err)
	}
	return r, nil
}

// probe checks on a socket pair that the kernel knows the send operation
// (5.6 and later) and answers a write to a full socket at once with EAGAIN
// rather than holding it until there is room: a held write would stall
// the loop's flush.
func (r *SendRing) probe() error {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fds[1])
	defer unix.Close(fds[0])
	one := []byte{1}
	send := func(wait bool) (res int32, ok bool) {
		tail := *r.sqTail
		r.putSend(tail, fds[0], one, 0)
		atomic.StoreUint32(r.sqTail, tail+1)
		var minComplete, flags uintptr
		if wait {
			minComplete, flags = 1, uringEnterGetEvents
		}
		if _, _, e := syscall.RawSyscall6(sysIOURingEnter, uintptr(r.fd), 1, minComplete, flags, 0, 0); e != 0 {
			return 0, false
		}
		head := *r.cqHead
		if head == atomic.LoadUint32(r.cqTail) {
			return 0, false
		}
		res = r.cqes[head&r.cqMask].res
		atomic.StoreUint32(r.cqHead, head+1)
		return res, true
	}
	if res, ok := send(true); !ok || res != 1 {
		return fmt.Errorf("a send through the ring returned %d, want 1", res)
	}
	unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUF, 4096)
	fill := make([]byte, 4096)
	for range 1 << 12 {
		if _, err := unix.Write(fds[0], fill); err != nil {
			break
		}
	}
	if res, ok := send(false); !ok || res != -int32(unix.EAGAIN) {
		// Closing the pair (deferred) ends a held send, closing the
		// ring whatever else.
		return fmt.Errorf("a send to a full socket was held (or returned %d), want EAGAIN at once", res)
	}
	return nil
}

func (r *SendRing) close() {
	if r.sqeMem != nil {
		unix.Munmap(r.sqeMem)
	}
	if r.sqRing != nil {
		unix.Munmap(r.sqRing)
	}
	unix.Close(r.fd)
}

// Queue copies p and writes it to fd at the next flush; to.written is
// called then, from the loop, with what was written or the error.
func (r *SendRing) Queue(fd int, p []byte, to RingWriter, up bool) {
	if len(r.queued) == int(r.entries) || r.used+len(p) > len(r.arena) {
		r.Flush()
	}
	data := r.arena[r.used : r.used+len(p) : r.used+len(p)]
	copy(data, p)
	r.used += len(p)
	r.queued = append(r.queued, ringWrite{fd: fd, data: data, to: to, up: up})
}

// putSend fills submission slot with a non-blocking send of p to fd;
// MSG_DONTWAIT makes a full socket answer EAGAIN instead of holding it.
func (r *SendRing) putSend(slot uint32, fd int, p []byte, userData uint64) {
	r.sqes[slot&r.sqMask] = uringSQE{
		opcode:   uringOpSend,
		fd:       int32(fd),
		addr:     uint64(uintptr(unsafe.Pointer(unsafe.SliceData(p)))),
		len:      uint32(len(p)),
		msgFlags: unix.MSG_NOSIGNAL | unix.MSG_DONTWAIT,
		userData: userData,
	}
}

// Flush submits the queued writes, waits for all of them and reports each.
func (r *SendRing) Flush() {
	if len(r.queued) == 0 || r.flushing {
		return
	}
	r.flushing = true
	defer func() { r.flushing = false }()
	n := uint32(len(r.queued))
	tail := *r.sqTail
	for i, w := range r.queued {
		r.putSend(tail+uint32(i), w.fd, w.data, uint64(i))
	}
	atomic.StoreUint32(r.sqTail, tail+n)
	toSubmit, reaped := n, uint32(0)
	// Bounded: every write completes at submission (non-blocking), so the
	// first call returns them all; a signal may cut a wait short.
	for tries := 0; reaped < n && tries < 1000; tries++ {
		sub, _, e := syscall.RawSyscall6(sysIOURingEnter, uintptr(r.fd), uintptr(toSubmit), uintptr(n-reaped), uringEnterGetEvents, 0, 0)
		if e == 0 {
			toSubmit -= min(uint32(sub), toSubmit)
		} else if e != unix.EINTR && e != unix.EAGAIN && e != unix.EBUSY {
			break
		}
		reaped += r.reap()
	}
	// The writers hear only now, when every write is done: one may close
	// its sockets, and no queued write may meet a closed descriptor.
	for i := range r.queued {
		w := &r.queued[i]
		switch {
		case !w.done:
			// The kernel refused the ring (cannot happen with one
			// that works): the connection fails rather than hangs.
			w.to.Written(w.up, w.data, 0, unix.EIO)
		case w.res < 0:
			w.to.Written(w.up, w.data, 0, unix.Errno(-w.res))
		default:
			w.to.Written(w.up, w.data, int(w.res), nil)
		}
	}
	clear(r.queued)
	r.queued = r.queued[:0]
	r.used = 0
}

// reap notes the completed writes' results and returns how many there were.
func (r *SendRing) reap() uint32 {
	head := *r.cqHead
	tail := atomic.LoadUint32(r.cqTail)
	var n uint32
	for ; head != tail; head++ {
		c := &r.cqes[head&r.cqMask]
		if c.userData < uint64(len(r.queued)) {
			w := &r.queued[c.userData]
			w.res, w.done = c.res, true
			n++
		}
	}
	atomic.StoreUint32(r.cqHead, head)
	return n
}
