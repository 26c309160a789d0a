package sched

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParseClass(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Class
		wantErr bool
	}{
		{"", Realtime, false},
		{"realtime", Realtime, false},
		{"raised", Raised, false},
		{"normal", Normal, false},
		{"fifo", 0, true},
	} {
		got, err := ParseClass(tc.in)
		if (err != nil) != tc.wantErr || (err == nil && got != tc.want) {
			t.Errorf("ParseClass(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

// onThread runs f on a fresh locked OS thread that is thrown away after,
// so a test's class does not leak into the test binary's other threads.
func onThread(f func()) {
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		defer close(done)
		f()
	}()
	<-done
}

// What a child forked from a thread set to each class sees (chrt and the
// nice field of /proc/self/stat), and the RLIMIT_RTTIME it inherits.
func TestSetThreadChild(t *testing.T) {
	if unix.Geteuid() != 0 {
		t.Skip("realtime and negative nice need CAP_SYS_NICE")
	}
	for _, tc := range []struct {
		c            Class
		policy, nice string
		checkRTTime  bool
	}{
		{Realtime, "SCHED_RR", "", true},
		{Raised, "SCHED_OTHER", strconv.Itoa(RaisedNice), false},
		{Normal, "SCHED_OTHER", "0", false},
	} {
		var out []byte
		var err error
		onThread(func() {
			if err = SetThread(tc.c); err != nil {
				return
			}
			var got Class
			if got, err = Current(); err == nil && got != tc.c {
				t.Errorf("Current() after SetThread(%v) = %v", tc.c, got)
			}
			out, err = exec.Command("sh", "-c", `chrt -p $$; cut -d' ' -f19 /proc/self/stat; grep 'Max realtime timeout' /proc/self/limits`).CombinedOutput()
		})
		if err != nil {
			t.Fatalf("%v: %v\n%s", tc.c, err, out)
		}
		s := string(out)
		if !strings.Contains(s, "policy: "+tc.policy) {
			t.Errorf("%v: child's policy not %s:\n%s", tc.c, tc.policy, s)
		}
		if tc.nice != "" && strings.Fields(strings.Split(s, "\n")[2])[0] != tc.nice {
			t.Errorf("%v: child's nice not %s:\n%s", tc.c, tc.nice, s)
		}
		if tc.checkRTTime && !regexpLimits(s, RTTimeSoft, RTTimeHard) {
			t.Errorf("%v: child's RLIMIT_RTTIME not %v/%v:\n%s", tc.c, RTTimeSoft, RTTimeHard, s)
		}
	}
}

// SetProcess sets another process, every thread of it, and caps its
// RLIMIT_RTTIME: how the supervisor raises a configured elector.
func TestSetProcess(t *testing.T) {
	if unix.Geteuid() != 0 {
		t.Skip("realtime needs CAP_SYS_NICE")
	}
	// A child with a second thread: a shell's background sleep is another
	// process, so use the test binary (a Go program has several threads).
	cmd := exec.Command("/proc/self/exe", "-test.run", "^TestHelperSleep$")
	cmd.Env = append(cmd.Environ(), "SCHED_HELPER_SLEEP=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pid := cmd.Process.Pid
	policies := func() map[string]int {
		seen := map[string]int{}
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, task := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
			if err != nil {
				continue
			}
			f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
			// Fields from state (3rd): rt_priority is the 40th, policy the 41st.
			seen[f[40-3]+"/"+f[41-3]]++
		}
		return seen
	}
	// Until the Go runtime of the child has its threads (bounded).
	for i := 0; i < 500; i++ {
		if tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid)); len(tasks) >= 3 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := policies(); got["1/2"] != 0 {
		t.Fatalf("child realtime before SetProcess: %v", got)
	}
	if err := SetProcess(pid, Realtime); err != nil {
		t.Fatal(err)
	}
	got := policies()
	if len(got) != 1 || got["1/2"] < 2 {
		t.Errorf("threads by rt_priority/policy after SetProcess(Realtime): %v, want all at 1/2 (SCHED_RR 1), at least two", got)
	}
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil || !regexpLimits(string(limits), RTTimeSoft, RTTimeHard) {
		t.Errorf("child's RLIMIT_RTTIME not %v/%v: %v\n%s", RTTimeSoft, RTTimeHard, err, limits)
	}
	if err := SetProcess(pid, Normal); err != nil {
		t.Fatal(err)
	}
	if got := policies(); got["1/2"] != 0 {
		t.Errorf("threads still realtime after SetProcess(Normal): %v", got)
	}
}

// TestHelperSleep is TestSetProcess's child: it waits to be killed (at
// most a minute).
func TestHelperSleep(t *testing.T) {
	if os.Getenv("SCHED_HELPER_SLEEP") == "" {
		t.Skip("helper")
	}
	time.Sleep(time.Minute)
}

func regexpLimits(s string, soft, hard time.Duration) bool {
	for _, l := range strings.Split(s, "\n") {
		if f := strings.Fields(l); len(f) >= 5 && strings.HasPrefix(l, "Max realtime timeout") {
			return f[3] == strconv.FormatInt(soft.Microseconds(), 10) && f[4] == strconv.FormatInt(hard.Microseconds(), 10)
		}
	}
	return false
}

// A realtime process that spins past RTTimeSoft falls back to nice -10
// instead of owning a CPU (and is not killed at RTTimeHard). Runs the test
// binary itself as the spinning child.
func TestRTTimeFallBack(t *testing.T) {
	if unix.Geteuid() != 0 {
		t.Skip("realtime needs CAP_SYS_NICE")
	}
	cmd := exec.Command("/proc/self/exe", "-test.run", "^TestHelperSpin$", "-test.v")
	cmd.Env = append(cmd.Environ(), "SCHED_HELPER_SPIN=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "fell back: <nil>") || !strings.Contains(string(out), "class after: raised") {
		t.Fatalf("spinning realtime child: %v\n%s", err, out)
	}
}

// TestHelperSpin is TestRTTimeFallBack's child: realtime, then one
// goroutine spins (bounded) until the fall back; it prints what it saw.
func TestHelperSpin(t *testing.T) {
	if os.Getenv("SCHED_HELPER_SPIN") == "" {
		t.Skip("run by TestRTTimeFallBack")
	}
	if err := Set(Realtime); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	WatchRTTime(func(err error) { done <- err })
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	select {
	case err := <-done:
		fmt.Println("fell back:", err)
	case <-time.After(5 * time.Second):
		fmt.Println("no fall back within 5s")
	}
	close(stop)
	fmt.Println("class after:", processClass(t))
}

// processClass is the class every thread of this process has, or "mixed".
func processClass(t *testing.T) string {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, task := range tasks {
		tid, _ := strconv.Atoi(task.Name())
		a, err := unix.SchedGetAttr(tid, 0)
		if err != nil {
			continue
		}
		switch {
		case a.Policy != unix.SCHED_NORMAL:
			seen["realtime"] = true
		case a.Nice == RaisedNice:
			seen["raised"] = true
		default:
			seen[fmt.Sprint("nice ", a.Nice)] = true
		}
	}
	if len(seen) != 1 {
		return fmt.Sprint("mixed ", seen)
	}
	for k := range seen {
		return k
	}
	return ""
}
