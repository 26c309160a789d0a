package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A host pause is time in which the machine ran none of its processes: a
// SCHED_FIFO 99 thread that sleeps 1ms at a time woke late. Inside the
// machine only interrupts and the kernel's stop class come before such a
// thread, so a lateness of many milliseconds means the virtual machine's
// CPUs were not run by the hypervisor (steal time this kind of guest does
// not report), or the kernel kept interrupts off that long. Either way
// every process was stopped at once, the elector included: no scheduling
// class of ours can ride through it, and a lease shorter than the pause
// ends in a step-down. The busy-host bench runs a watch beside each run,
// so a needless move can be told apart from a pause of the whole machine
// (docs/benchmarks.md "A busy host").
const (
	// helperPauseWatch DURATION MIN: print "pause UNIXNANO MS" for every
	// wake-up at least MIN (a Go duration) late, for DURATION.
	helperPauseWatch = "pause-watch"
	// pauseTick is the watch's sleep: short, so a pause is measured to the
	// millisecond.
	pauseTick = time.Millisecond
	// pauseMin is the shortest lateness the bench records: well above the
	// kernel's own jitter for a FIFO 99 sleeper (under 5ms on this kind of
	// machine, idle or saturated) and below the shortest lease (28ms at
	// the fast profile).
	pauseMin = 10 * time.Millisecond
	// pauseBlame is how soon after a pause a VIP move is put down to it: a
	// lease step-down happens at once, a follower's election one heartbeat
	// timeout later (300ms by default).
	pauseBlame = time.Second
)

// helperPauseWatchRun is the watch itself: one goroutine locked to a
// SCHED_FIFO 99 thread, sleeping in the kernel with a raw system call. Not
// Go's timer, whose wake-up runs on another, normal-class thread; and not
// a plain system call either: while the goroutine sleeps in one, sysmon
// hands its P to a normal-class thread, and on waking it waits for that
// thread to be scheduled, which a saturated machine delays by up to 150ms
// (measured: such a watch saw 8-13 "pauses" per 120s of the busy-host load
// that nothing else noticed). A raw call keeps the P on this thread; and
// every thread of the process is SCHED_FIFO 99, so the runtime's own
// hand-offs (sysmon preempts a goroutine that ran 10ms without yielding)
// are not delayed either; the garbage collector is off (the watch
// allocates next to nothing, and a forced collection every 2 minutes
// would be one more hand-off).
func helperPauseWatchRun(args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("usage: %s DURATION MIN", helperPauseWatch)
	}
	d, err := time.ParseDuration(args[0])
	if err != nil {
		return fmt.Errorf("duration %q: %w", args[0], err)
	}
	minLate, err := time.ParseDuration(args[1])
	if err != nil {
		return fmt.Errorf("min %q: %w", args[1], err)
	}
	runtime.GOMAXPROCS(1)
	runtime.LockOSThread()
	debug.SetGCPercent(-1)
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, task := range tasks {
		tid, err := strconv.Atoi(task.Name())
		if err != nil {
			continue
		}
		// Threads made later inherit the class of their maker.
		if err := unix.SchedSetAttr(tid, &unix.SchedAttr{Policy: unix.SCHED_FIFO, Priority: 99}, 0); err != nil {
			return fmt.Errorf("sched_setattr SCHED_FIFO 99 on thread %d: %w", tid, err)
		}
	}
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintln(out, "ready")
	_ = out.Flush()
	ts := unix.NsecToTimespec(pauseTick.Nanoseconds())
	end := time.Now().Add(d)
	prev := time.Now()
	for n := int64(0); n < int64(d/pauseTick)+1 && prev.Before(end); n++ {
		_, _, _ = unix.RawSyscall(unix.SYS_NANOSLEEP, uintptr(unsafe.Pointer(&ts)), 0, 0)
		now := time.Now()
		if late := now.Sub(prev) - pauseTick; late >= minLate {
			fmt.Fprintf(out, "pause %d %.1f\n", prev.Add(pauseTick).UnixNano(), float64(late)/float64(time.Millisecond))
			_ = out.Flush()
		}
		prev = now
	}
	return nil
}

// hostPause is one pause the watch saw.
type hostPause struct {
	At  time.Time // when the late wake-up was due
	Len time.Duration
}

// pauseWatch runs helperPauseWatch in the root namespace (it sends
// nothing anywhere) and collects what it prints.
type pauseWatch struct {
	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	seen []hostPause
	err  error
}

// startPauseWatch starts a watch for d; it stops by itself, with the test
// (Pdeathsig, cleanup), or at helperMaxLifetime.
func startPauseWatch(t *testing.T, d time.Duration) *pauseWatch {
	t.Helper()
	cmd, err := helperCommand("", helperPauseWatch, d.String(), pauseMin.String())
	if err != nil {
		t.Fatalf("pause watch: %v", err)
	}
	w := &pauseWatch{cmd: cmd, done: make(chan struct{})}
	w.cmd.Stderr = os.Stderr
	stdout, err := w.cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("pause watch: %v", err)
	}
	if err := w.cmd.Start(); err != nil {
		t.Fatalf("pause watch: %v", err)
	}
	t.Cleanup(func() { _ = w.cmd.Process.Kill(); <-w.done })
	ready := make(chan bool, 1)
	go func() {
		defer close(w.done)
		sc := bufio.NewScanner(stdout)
		first := true
		for sc.Scan() {
			if first {
				ready <- sc.Text() == "ready"
				first = false
				continue
			}
			if p, ok := parsePause(sc.Text()); ok {
				w.mu.Lock()
				w.seen = append(w.seen, p)
				w.mu.Unlock()
			}
		}
		if first {
			ready <- false
		}
		w.mu.Lock()
		w.err = w.cmd.Wait()
		w.mu.Unlock()
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("pause watch did not start (needs CAP_SYS_NICE for SCHED_FIFO)")
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("pause watch did not start within 10s")
	}
	return w
}

// parsePause reads one "pause UNIXNANO MS" line.
func parsePause(line string) (hostPause, bool) {
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "pause" {
		return hostPause{}, false
	}
	ns, err1 := strconv.ParseInt(f[1], 10, 64)
	ms, err2 := strconv.ParseFloat(f[2], 64)
	if err1 != nil || err2 != nil {
		return hostPause{}, false
	}
	return hostPause{At: time.Unix(0, ns), Len: time.Duration(ms * float64(time.Millisecond))}, true
}

// between returns the pauses due between start and end.
func (w *pauseWatch) between(start, end time.Time) []hostPause {
	w.mu.Lock()
	defer w.mu.Unlock()
	var ps []hostPause
	for _, p := range w.seen {
		if !p.At.Before(start) && !p.At.After(end) {
			ps = append(ps, p)
		}
	}
	return ps
}

// blamed counts the moves (times the VIP left its holder) that came within
// pauseBlame after a pause of least or longer.
func blamed(moves []time.Time, pauses []hostPause, least time.Duration) int {
	n := 0
	for _, m := range moves {
		for _, p := range pauses {
			if p.Len >= least && !m.Before(p.At) && m.Sub(p.At) <= pauseBlame+p.Len {
				n++
				break
			}
		}
	}
	return n
}

func TestParsePause(t *testing.T) {
	for _, tc := range []struct {
		line string
		ok   bool
		ms   float64
	}{
		{"pause 1796613692000000000 28.5", true, 28.5},
		{"pause 1796613692000000000", false, 0},
		{"ready", false, 0},
		{"pause x 1.0", false, 0},
		{"pause 1 y", false, 0},
	} {
		p, ok := parsePause(tc.line)
		if ok != tc.ok || (ok && p.Len != time.Duration(tc.ms*float64(time.Millisecond))) {
			t.Errorf("parsePause(%q) = %v, %v; want ok=%v, %vms", tc.line, p, ok, tc.ok, tc.ms)
		}
	}
}

func TestBlamed(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	pauses := []hostPause{{At: t0, Len: ms(30)}, {At: t0.Add(10 * time.Second), Len: ms(12)}}
	for _, tc := range []struct {
		name  string
		moves []time.Time
		min   time.Duration
		want  int
	}{
		{"a step-down right after the pause", []time.Time{t0.Add(ms(31))}, ms(14), 1},
		{"an election a heartbeat timeout later", []time.Time{t0.Add(ms(400))}, ms(14), 1},
		{"long after", []time.Time{t0.Add(2 * time.Second)}, ms(14), 0},
		{"before the pause", []time.Time{t0.Add(-ms(5))}, ms(14), 0},
		{"pause too short for this system", []time.Time{t0.Add(10*time.Second + ms(20))}, ms(14), 0},
		{"two moves, one pause", []time.Time{t0.Add(ms(40)), t0.Add(ms(300))}, ms(14), 2},
	} {
		if got := blamed(tc.moves, pauses, tc.min); got != tc.want {
			t.Errorf("%s: blamed = %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestPauseWatch runs the watch briefly: it must get SCHED_FIFO 99 and
// exit by itself when its time is up.
func TestPauseWatch(t *testing.T) {
	requireRoot(t)
	w := startPauseWatch(t, 300*time.Millisecond)
	select {
	case <-w.done:
	case <-time.After(10 * time.Second):
		t.Fatal("pause watch still running 10s after its 300ms")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		t.Fatalf("pause watch: %v", w.err)
	}
	t.Logf("pauses of %s or more in 300ms: %d", pauseMin, len(w.seen))
}
