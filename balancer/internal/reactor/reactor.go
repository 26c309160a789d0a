// Package reactor is the load balancer's I/O engine: epoll event loops
// (Loop, a Group of them), the listening sockets they accept on, the
// frontends' sockets, the io_uring ring that sends a turn's small writes
// together, and splice pipes. It knows nothing of tcp, http or udp load
// balancing: a socket's owner is a Handler, called with epoll's events.
package reactor

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Loop is an epoll event loop, the way HAProxy and nginx work: one
// goroutine owns a set of non-blocking sockets and reads each only when
// epoll says it has data. Go's own netpoller reads first and parks on
// EAGAIN, one wasted syscall per wakeup, and parks a goroutine per socket
// direction; on a proxy's small request and response that is a fifth of
// the CPU time. The tcp, http and udp load balancers run on reactors.
//
// The loop blocks in epoll_wait itself when it has nothing to do, as
// HAProxy's and nginx's do, rather than parking in Go's netpoller: there a
// wakeup cost two more epoll calls and a trip through the scheduler, about
// 3µs of CPU per request on a lightly loaded proxy (measured with one
// connection against HAProxy). The wait is an ordinary syscall, so the
// runtime can stop the world or hand the processor on meanwhile; the
// balancer plugin gives the runtime one processor more than it has loops,
// so that a loop's wait never holds up the rest of the process.
//
// Everything a socket handler touches is the loop's: other goroutines hand
// work over with post.
type Loop struct {
	epfd    int
	efd     int // eventfd: post wakes the loop through it
	events  []unix.EpollEvent
	Entries []reactorEntry // by fd
	// scratch is where sockets are read into: data is written on in the
	// same turn (small writes through ring, copied into its arena) and
	// kept only when the other side cannot take it all.
	Scratch []byte
	// again are handlers to call after the batch (see later): those
	// whose I/O waits for the batch's end, and those that stopped before
	// their socket was drained (a bound on the work per event keeps the
	// loop fair; edge-triggered epoll will not report them again).
	again, spareAgain []reactorEntry
	// held are handlers to call with evHeld at a time (see holdUntil).
	held []heldEntry
	// now is the time of the current batch: handlers stamp activity with it
	// instead of reading the clock per socket.
	Now time.Time
	// Pipes are the splice pipes open on the loop (see splice.go);
	// pipesOpened counts every one opened, for tests.
	Pipes       int
	PipesOpened atomic.Int64
	// ring sends a turn's small writes together; nil: sendto each, and
	// ringErr says why.
	Ring    *SendRing
	RingErr error

	mu      sync.Mutex
	tasks   []func()
	spare   []func()
	woken   atomic.Bool
	tickers map[*reactorTicker]struct{}
	// conns counts the registered sockets that are not listening ones:
	// the sockets a ticker may have to time out. With none, the tickers
	// stop (see tick).
	conns int
	// nextTick is when the earliest ticker is due, in UnixNano, for the
	// tick goroutine: the loop is woken only when a ticker is due.
	nextTick    atomic.Int64
	tickChanged chan struct{}
	quit        bool
	done        chan struct{}

	tickFn func()
}

// Handler owns one or more of the loop's sockets.
type Handler interface {
	// Event reports epoll events on fd, one of the handler's sockets; 0
	// is the call later asked for, evHeld the one holdUntil asked for.
	Event(fd int, ev uint32)
}

type reactorEntry struct {
	H  Handler
	fd int
}

type heldEntry struct {
	reactorEntry
	until time.Time
}

// EvHeld is the event a handler gets when a holdUntil time comes; no
// epoll event has the bit.
const EvHeld = 1 << 27

// reactorTicker runs a function on the loop every interval (see tick).
type reactorTicker struct {
	every time.Duration
	next  time.Time
	f     func(now time.Time)
}

const (
	// Tick is the shortest ticker interval: connect deadlines
	// and idle timeouts are checked at this resolution at best.
	Tick = 10 * time.Millisecond
	// reactorYield is how often a busy loop hands its processor back to
	// the scheduler: under the runtime's 10ms preemption deadline.
	reactorYield = 5 * time.Millisecond
	// reactorBatch is how many events one epoll_wait fetches.
	reactorBatch = 256
	// reactorScratch is the read buffer, as large as a socket usually
	// delivers in one read.
	reactorScratch = 64 << 10
	// EvConn is what a connection's socket is registered for, once,
	// edge-triggered.
	EvConn = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET
)

func newReactor() (*Loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("epoll set non-blocking: %w", err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	r := &Loop{
		epfd: epfd, efd: efd, events: make([]unix.EpollEvent, reactorBatch),
		Scratch: make([]byte, reactorScratch), tickers: map[*reactorTicker]struct{}{},
		done: make(chan struct{}), Now: time.Now(), tickChanged: make(chan struct{}, 1),
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(efd)}); err != nil {
		unix.Close(efd)
		unix.Close(epfd)
		return nil, fmt.Errorf("epoll add eventfd: %w", err)
	}
	if SendRingOn {
		r.Ring, r.RingErr = NewSendRing()
	}
	r.tickFn = r.tick
	go r.run()
	go r.tickLoop()
	return r, nil
}

// Add registers fd for h; the events come edge-triggered.
func (r *Loop) Add(fd int, h Handler, events uint32) error {
	if err := unix.EpollCtl(r.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: events, Fd: int32(fd)}); err != nil {
		return err
	}
	for fd >= len(r.Entries) {
		r.Entries = append(r.Entries, make([]reactorEntry, len(r.Entries)+64)...)
	}
	r.Entries[fd] = reactorEntry{H: h, fd: fd}
	if counted(h) {
		r.conns++
		if r.nextTick.Load() == 0 && len(r.tickers) > 0 {
			r.setNextTick() // the tickers had stopped: idle no more
		}
	}
	return nil
}

// remove forgets fd; the caller closes it.
func (r *Loop) remove(fd int) {
	unix.EpollCtl(r.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	if fd < len(r.Entries) {
		if counted(r.Entries[fd].H) {
			r.conns--
		}
		r.Entries[fd] = reactorEntry{}
	}
}

// counted says whether a socket of h keeps the tickers running: a
// listening socket has nothing to time out.
func counted(h Handler) bool {
	if h == nil {
		return false
	}
	_, listener := h.(*Listener)
	return !listener
}

// CloseFD removes fd and closes it.
func (r *Loop) CloseFD(fd int) {
	if fd < 0 {
		return
	}
	r.remove(fd)
	unix.Close(fd)
}

// Later calls h for fd with no events (0) once the loop has polled again
// (without waiting) and handled what that poll brought: the handler goes
// on with the readiness it recorded, and with whatever arrived meanwhile.
func (r *Loop) Later(fd int, h Handler) {
	r.again = append(r.again, reactorEntry{H: h, fd: fd})
}

// HoldUntil calls h for fd with evHeld at until, or soon after: how a
// handler waits a moment for more data without a timer of its own.
func (r *Loop) HoldUntil(fd int, h Handler, until time.Time) {
	r.held = append(r.held, heldEntry{reactorEntry{H: h, fd: fd}, until})
}

// releaseHeld calls the held handlers whose time has come.
func (r *Loop) releaseHeld() {
	keep := r.held[:0]
	for _, e := range r.held {
		switch {
		case r.Now.Before(e.until):
			keep = append(keep, e)
		case e.fd < len(r.Entries) && r.Entries[e.fd].H == e.H:
			e.H.Event(e.fd, EvHeld)
		}
	}
	clear(r.held[len(keep):])
	r.held = keep
}

// heldTimeout is how long the wait for events may block, in epoll's
// milliseconds (rounded up): until the earliest held handler is due, or
// for ever (-1).
func (r *Loop) heldTimeout(now time.Time) int {
	if len(r.held) == 0 {
		return -1
	}
	next := r.held[0].until
	for _, e := range r.held[1:] {
		if e.until.Before(next) {
			next = e.until
		}
	}
	d := next.Sub(now)
	if d <= 0 {
		return 0
	}
	return int((d + time.Millisecond - 1) / time.Millisecond)
}

// post runs f on the loop, soon. It is how other goroutines reach the
// loop's sockets.
func (r *Loop) post(f func()) {
	r.mu.Lock()
	r.tasks = append(r.tasks, f)
	r.mu.Unlock()
	if r.woken.CompareAndSwap(false, true) {
		var one = [8]byte{1}
		unix.Write(r.efd, one[:])
	}
}

// Do runs f on the loop and waits for it.
func (r *Loop) Do(f func()) {
	if r.closed() {
		return
	}
	done := make(chan struct{})
	r.post(func() { f(); close(done) })
	select {
	case <-done:
	case <-r.done:
	}
}

func (r *Loop) closed() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// Every runs f on the loop every interval (rounded up to the tick) until
// the returned function is called, while the loop has sockets other than
// listening ones: the tickers time out connections and sessions, and
// waking an idle loop for nothing costs more than the tick itself (each
// return from epoll_wait also wakes the runtime's monitor thread, which
// then polls for a while: measured, an idle balancer's 150-260 context
// switches a second). An idle loop stops ticking after one more tick and
// starts again with its next socket.
func (r *Loop) Every(interval time.Duration, f func(now time.Time)) (stop func()) {
	t := &reactorTicker{every: max(interval, Tick), f: f}
	r.post(func() {
		t.next = r.Now.Add(t.every)
		r.tickers[t] = struct{}{}
		r.setNextTick()
	})
	return func() {
		r.post(func() {
			delete(r.tickers, t)
			r.setNextTick()
		})
	}
}

// tickLoop wakes the loop when its earliest ticker is due, and sleeps
// otherwise; with no socket to time out there are none (see Every), so an
// idle balancer costs no wakeups.
func (r *Loop) tickLoop() {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		d := time.Hour
		if next := r.nextTick.Load(); next != 0 {
			d = max(time.Until(time.Unix(0, next)), 0)
		}
		t.Reset(d)
		select {
		case <-r.done:
			return
		case <-r.tickChanged:
			continue
		case <-t.C:
		}
		if next := r.nextTick.Load(); next != 0 && time.Now().UnixNano() >= next {
			// Not again until the loop has run the tick.
			r.nextTick.Store(0)
			r.post(r.tickFn)
		}
	}
}

func (r *Loop) tick() {
	for t := range r.tickers {
		if !r.Now.Before(t.next) {
			t.next = r.Now.Add(t.every)
			t.f(r.Now)
		}
	}
	if r.conns > 0 {
		r.setNextTick()
	}
	// Otherwise nextTick stays 0 (tickLoop cleared it before posting this
	// tick), and Add publishes it again.
}

// setNextTick publishes when the earliest ticker is due; 0 for none.
func (r *Loop) setNextTick() {
	var next time.Time
	for t := range r.tickers {
		if next.IsZero() || t.next.Before(next) {
			next = t.next
		}
	}
	var ns int64
	if !next.IsZero() {
		ns = next.UnixNano()
	}
	if r.nextTick.Swap(ns) != ns {
		select {
		case r.tickChanged <- struct{}{}:
		default:
		}
	}
}

// Stop ends the loop once the posted work is done; the sockets still
// registered are the callers' to have closed.
func (r *Loop) stop() {
	r.post(func() { r.quit = true })
	<-r.done
}

// turn hands a poll's n events to their handlers, then runs the handlers
// whose I/O waited for this poll, the held ones that are due and the
// posted tasks.
func (r *Loop) turn(n int) {
	r.Now = time.Now()
	again := r.again
	r.again = r.spareAgain[:0]
	for i := range n {
		ev := &r.events[i]
		fd := int(ev.Fd)
		if fd == r.efd {
			var b [8]byte
			unix.Read(r.efd, b[:])
			continue
		}
		if fd < len(r.Entries) && r.Entries[fd].H != nil {
			r.Entries[fd].H.Event(fd, ev.Events)
		}
	}
	for _, e := range again {
		// A handler may have closed the socket meanwhile.
		if e.fd < len(r.Entries) && r.Entries[e.fd].H == e.H {
			e.H.Event(e.fd, 0)
		}
	}
	clear(again)
	r.spareAgain = again[:0]
	if r.Ring != nil {
		r.Ring.Flush()
	}
	if len(r.held) > 0 {
		r.releaseHeld()
	}
	if r.woken.Load() {
		r.runTasks()
	}
	if r.Ring != nil {
		r.Ring.Flush()
	}
}

func (r *Loop) run() {
	// The loop keeps its thread: otherwise, each time its wait returned
	// to find the processor handed on, the goroutine moved to another
	// thread (measured: the loop's work spread over three threads, with
	// a third more context switches than nginx's single worker).
	runtime.LockOSThread()
	yielded := time.Now()
	defer func() {
		if r.Ring != nil {
			r.Ring.Flush()
			r.Ring.close()
		}
		close(r.done)
		unix.Close(r.epfd)
		unix.Close(r.efd)
	}()
	for !r.quit {
		if r.Now.Sub(yielded) >= reactorYield {
			// A goroutine that never yields is preempted by the
			// runtime after 10ms: a signal, and the processor taken
			// if the loop is waiting, which sends the runtime's
			// monitor back to waking every 20µs for a while
			// (measured: 50 signals and 1000 monitor wakeups a
			// second on a busy loop). Yielding first costs neither,
			// only a hand-over of the processor and back (the loop
			// keeps its thread), 200 times a second at most.
			yielded = r.Now
			runtime.Gosched()
		}
		timeout := 0
		if len(r.again) == 0 && !r.woken.Load() {
			timeout = r.heldTimeout(time.Now())
		}
		n, err := sysWait(r.epfd, r.events, timeout)
		if err != nil {
			if err != unix.EINTR {
				// Nothing else can fail here; do not spin if it does.
				time.Sleep(Tick)
			}
			n = 0
		}
		r.turn(n)
	}
	r.runTasks()
}

func (r *Loop) runTasks() {
	r.woken.Store(false)
	r.mu.Lock()
	tasks := r.tasks
	r.tasks = r.spare[:0]
	r.mu.Unlock()
	for i, f := range tasks {
		f()
		tasks[i] = nil
	}
	r.mu.Lock()
	r.spare = tasks[:0]
	r.mu.Unlock()
}

// Group is a balancer's loops, one per CPU Go may use; sockets are
// spread over them.
type Group struct {
	Loops []*Loop
	next  atomic.Uint32
}

func NewGroup(n int) (*Group, error) {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	rs := &Group{}
	for range n {
		r, err := newReactor()
		if err != nil {
			rs.Stop()
			return nil, err
		}
		rs.Loops = append(rs.Loops, r)
	}
	return rs, nil
}

// pick is the loop the next socket goes to, in turn.
func (rs *Group) pick() *Loop {
	return rs.Loops[int(rs.next.Add(1))%len(rs.Loops)]
}

func (rs *Group) Stop() {
	for _, r := range rs.Loops {
		r.stop()
	}
}

// The loop's hot syscalls are raw: none of them blocks (every socket is
// non-blocking), and the runtime's syscall bookkeeping would otherwise let
// its monitor hand the processor to another thread whenever a write to a
// loopback peer ran long, a context switch per request on a busy proxy.
//
// Sockets are read and written with recvfrom and sendto rather than read
// and write, as HAProxy does: those skip the file layer (position lock,
// file notifications), about 2% of the proxy's CPU per request measured
// with perf; and a write to a reset peer fails with EPIPE without raising
// SIGPIPE first.
func SysRead(fd int, p []byte) (int, error) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func SysWrite(fd int, p []byte) (int, error) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)), unix.MSG_NOSIGNAL, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// sysWait fetches the ready events, waiting up to timeout milliseconds (-1:
// for ever) for one. Without a timeout it is raw, as the loop's other hot
// syscalls; a wait is an ordinary syscall, which lets the runtime use the
// processor meanwhile.
func sysWait(epfd int, events []unix.EpollEvent, timeout int) (int, error) {
	var n uintptr
	var e syscall.Errno
	if timeout == 0 {
		n, _, e = syscall.RawSyscall6(syscall.SYS_EPOLL_WAIT, uintptr(epfd), uintptr(unsafe.Pointer(unsafe.SliceData(events))), uintptr(len(events)), 0, 0, 0)
	} else {
		n, _, e = syscall.Syscall6(syscall.SYS_EPOLL_WAIT, uintptr(epfd), uintptr(unsafe.Pointer(unsafe.SliceData(events))), uintptr(len(events)), uintptr(timeout), 0, 0)
	}
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// Readiness is what edge-triggered epoll last reported of a socket, kept
// until a read or write finds otherwise.
type Readiness struct {
	R, W bool
	// rdhup: the peer's FIN (or an error) is queued, so a short read
	// does not mean there is nothing more to read.
	Rdhup bool
}

// Note adds the events ev reports.
func (rd *Readiness) Note(ev uint32) {
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		rd.R = true
	}
	if ev&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		rd.W = true
	}
	if ev&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		rd.Rdhup = true
	}
}
