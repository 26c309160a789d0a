package rpc

import (
	"strings"
	"testing"
)

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

func TestPluginEnv(t *testing.T) {
	elector := Footprints[KindElector].Godebug
	if elector == "" {
		t.Fatal("the elector's footprint has no GODEBUG settings")
	}
	if g := Footprints[Supervisor].Godebug; g != "" {
		t.Errorf("the supervisor has GODEBUG settings %q it cannot apply to itself", g)
	}
	for _, tc := range []struct {
		name    string
		kind    string
		environ []string
		want    []string
	}{
		{"added", KindElector, []string{"PATH=/bin"}, []string{"PATH=/bin", "GODEBUG=" + elector}},
		{"the operator's come last, so they win", KindElector, []string{"GODEBUG=schedtrace=0,madvdontneed=1", "A=b"},
			[]string{"A=b", "GODEBUG=" + elector + ",schedtrace=0,madvdontneed=1"}},
		{"the last of two GODEBUGs counts, as for exec.Cmd", KindElector, []string{"GODEBUG=x=1", "GODEBUG=y=2"},
			[]string{"GODEBUG=" + elector + ",y=2"}},
		{"an empty one", KindElector, []string{"GODEBUG="}, []string{"GODEBUG=" + elector}},
		{"a kind without settings is left alone", KindChecker, []string{"GODEBUG=x=1", "A=b"}, []string{"GODEBUG=x=1", "A=b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := PluginEnv(tc.kind, tc.environ)
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("PluginEnv(%s, %q) = %q, want %q", tc.kind, tc.environ, got, tc.want)
			}
		})
	}
}
