package checker

import (
	"strings"
	"testing"
)

// TestDamper drives the rise/fall state machine with runs written as a
// string: '+' passed, '-' failed. want is the state after every run ('U'
// healthy, 'D' unhealthy), changed marks the runs that changed it ('^').
func TestDamper(t *testing.T) {
	tests := []struct {
		name       string
		rise, fall int
		runs       string
		want       string
		changed    string
	}{
		{"first run passes", 1, 1, "+", "U", "^"},
		{"first run fails", 1, 1, "-", "D", "^"},
		{"1/1 follows every run", 1, 1, "+-+-", "UDUD", "^^^^"},
		{"zero means one", 0, 0, "+-+", "UDU", "^^^"},
		{"fall 3: two blips ride through", 1, 3, "+--+--+", "UUUUUUU", "^      "},
		{"fall 3: three in a row", 1, 3, "+---", "UUUD", "^  ^"},
		{"fall 3: count restarts after a pass", 1, 3, "+--+---", "UUUUUUD", "^     ^"},
		{"rise 2 after going down", 2, 1, "+-+-++", "UDDDDU", "^^   ^"},
		{"rise 2: a pass between fails does not rise", 2, 1, "-+-+-", "DDDDD", "^    "},
		{"rise 3 fall 2 round trip", 3, 2, "+--+++--", "UUDDDUUD", "^ ^  ^ ^"},
		{"stays down while failing", 2, 2, "------", "DDDDDD", "^     "},
		{"stays up while passing", 2, 2, "++++++", "UUUUUU", "^     "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := damper{rise: tt.rise, fall: tt.fall}
			var got, changed strings.Builder
			for _, r := range tt.runs {
				c := d.observe(r == '+')
				if d.healthy {
					got.WriteByte('U')
				} else {
					got.WriteByte('D')
				}
				if c {
					changed.WriteByte('^')
				} else {
					changed.WriteByte(' ')
				}
			}
			if got.String() != tt.want || changed.String() != tt.changed {
				t.Errorf("runs %s (rise %d, fall %d):\n states  %s, want %s\n changed %q, want %q",
					tt.runs, tt.rise, tt.fall, got.String(), tt.want, changed.String(), tt.changed)
			}
		})
	}
}
