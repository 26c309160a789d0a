package rpc

import "testing"

// Every process keep-vip starts has its row, so none runs with settings
// nobody chose.
func TestFootprintsCoverEveryProcess(t *testing.T) {
	for _, p := range append([]string{Supervisor}, Kinds...) {
		f, ok := Footprints[p]
		if !ok {
			t.Errorf("no footprint for %s", p)
			continue
		}
		if f.GCPercent < 0 || f.MemoryLimit < 0 || f.SettleAfter < 0 {
			t.Errorf("%s: negative setting %+v", p, f)
		}
	}
	if len(Footprints) != len(Kinds)+1 {
		t.Errorf("%d footprints for %d processes", len(Footprints), len(Kinds)+1)
	}
}
