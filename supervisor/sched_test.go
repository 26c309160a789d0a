package supervisor

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/keep-vip/keep-vip/rpc/sched"
)

func TestPriorityEnv(t *testing.T) {
	for _, tc := range []struct {
		val     string
		want    sched.Class
		wantErr bool
	}{
		{"", sched.Realtime, false},
		{"realtime", sched.Realtime, false},
		{"raised", sched.Raised, false},
		{"normal", sched.Normal, false},
		{"fifo", 0, true},
	} {
		t.Run(tc.val, func(t *testing.T) {
			t.Setenv(PriorityEnv, tc.val)
			got, err := priorityWanted()
			if (err != nil) != tc.wantErr || (err == nil && got != tc.want) {
				t.Fatalf("%s=%q: got %v, %v; want %v, error %v", PriorityEnv, tc.val, got, err, tc.want, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), PriorityEnv) {
				t.Errorf("error does not name %s: %v", PriorityEnv, err)
			}
		})
	}
}

// A process started from the normal spawner (balancer, checker, hooks) runs
// in the normal class at nice 0 even when the spawner's thread was set
// realtime after the spawner was made (as setPriority does to every thread
// of the supervisor); one from the other spawner inherits the supervisor's
// class. Needs CAP_SYS_NICE (root).
func TestSpawnersPriority(t *testing.T) {
	if unix.Geteuid() != 0 {
		t.Skip("realtime needs CAP_SYS_NICE")
	}
	// What a child sees: its policy and nice value.
	child := func(sp *spawner) string {
		var out []byte
		var err error
		sp.do(func() {
			out, err = exec.Command("sh", "-c", `chrt -p $$ | head -1; cut -d' ' -f19 /proc/self/stat`).Output()
		})
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	critical, normal := newSpawner(), newNormalSpawner(zerolog.Nop())
	for _, sp := range []*spawner{critical, normal} {
		sp.do(func() {
			if err := sched.SetThread(sched.Realtime); err != nil {
				t.Fatal(err)
			}
		})
	}
	if got := child(critical); !strings.Contains(got, "SCHED_RR") {
		t.Errorf("critical spawner's child: %q, want SCHED_RR", got)
	}
	if got := child(normal); !strings.Contains(got, "SCHED_OTHER") || strings.Fields(strings.Split(got, "\n")[1])[0] != "0" {
		t.Errorf("normal spawner's child: %q, want SCHED_OTHER at nice 0", got)
	}
}
