package elector

import (
	"testing"
	"time"
)

func TestStallWatch(t *testing.T) {
	t0 := time.Now()
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	for _, tc := range []struct {
		name  string
		ticks []int // ms after t0, t0 being the first
		end   int
		want  time.Duration
	}{
		{"on time", []int{20, 40, 60}, 65, 0},
		{"one late tick", []int{20, 170, 190}, 195, 130 * time.Millisecond},
		{"the longest of two", []int{20, 90, 110, 300, 320}, 325, 170 * time.Millisecond},
		{"in progress at the end", []int{20, 40}, 140, 80 * time.Millisecond},
		{"too old to blame", []int{20, 520, 540, 3000}, 3005, 2440 * time.Millisecond},
		{"forgotten", []int{20, 520, 3000, 3020}, 3025, 2460 * time.Millisecond},
		{"the last within memory beats the one in progress", []int{20, 520, 540, 2600, 2620}, 4000, 2040 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &stallWatch{period: 20 * time.Millisecond, last: t0}
			for _, tick := range tc.ticks {
				w.note(ms(tick))
			}
			if got := w.longestAt(ms(tc.end)); got != tc.want {
				t.Errorf("longest stall %v, want %v", got, tc.want)
			}
		})
	}
}
