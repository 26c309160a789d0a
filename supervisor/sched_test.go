package supervisor

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestPriorityEnv(t *testing.T) {
	for _, tc := range []struct {
		val     string
		want    bool
		wantErr bool
	}{
		{"", true, false},
		{"raised", true, false},
		{"normal", false, false},
		{"realtime", false, true},
	} {
		t.Run(tc.val, func(t *testing.T) {
			t.Setenv(PriorityEnv, tc.val)
			got, err := priorityWanted()
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("%s=%q: got %v, %v; want %v, error %v", PriorityEnv, tc.val, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

// A plugin started from the normal spawner runs at nice 0 even when the
// supervisor runs raised; one from the other spawner inherits the raise.
// Needs CAP_SYS_NICE (root) to raise.
func TestSpawnersPriority(t *testing.T) {
	if unix.Geteuid() != 0 {
		t.Skip("raising a nice value needs CAP_SYS_NICE")
	}
	// Spawner threads are not necessarily created from a raised thread
	// (Go picks which thread makes a new one): raise both explicitly, as
	// raisePriority does for every thread of the supervisor.
	// What a plugin sees: the nice value of a child forked on the
	// spawner's thread (field 19 of /proc/self/stat).
	childNice := func(sp *spawner) (int, error) {
		var out []byte
		var err error
		sp.do(func() { out, err = exec.Command("sh", "-c", `cut -d' ' -f19 /proc/self/stat`).Output() })
		if err != nil {
			return 0, err
		}
		return strconv.Atoi(strings.TrimSpace(string(out)))
	}
	for _, tc := range []struct {
		name string
		sp   *spawner
		want int
	}{
		{"critical", newSpawnerAt(func() { _ = unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), raisedNice) }), raisedNice},
		{"normal", newSpawnerAt(func() {
			_ = unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), raisedNice)
			if err := normalPriority(); err != nil {
				t.Error(err)
			}
		}), 0},
	} {
		got, err := childNice(tc.sp)
		if err != nil || got != tc.want {
			t.Errorf("%s spawner: child's nice %d (%v), want %d", tc.name, got, err, tc.want)
		}
	}
}
