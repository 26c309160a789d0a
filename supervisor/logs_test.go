package supervisor

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func TestPluginLogWriter(t *testing.T) {
	for _, tc := range []struct {
		name   string
		writes []string
		want   []map[string]any
	}{
		{"json line split like go-plugin writes it",
			[]string{`{"level":"warn","message":"check fails","check":"web","time":"x"}`, "\n"},
			[]map[string]any{{"level": "warn", "message": "check fails", "check": "web", "plugin": "checker"}}},
		{"two lines in one write",
			[]string{"{\"level\":\"debug\",\"message\":\"a\"}\n{\"level\":\"info\",\"message\":\"b\"}\n"},
			[]map[string]any{{"level": "debug", "message": "a", "plugin": "checker"}, {"level": "info", "message": "b", "plugin": "checker"}}},
		{"a panic line is an error",
			[]string{"panic: boom", "\n"},
			[]map[string]any{{"level": "error", "message": "panic: boom", "plugin": "checker"}}},
		{"the runtime's scheduler trace is debug",
			[]string{"SCHED 2147483647ms: gomaxprocs=2 idleprocs=2 threads=8", "\n"},
			[]map[string]any{{"level": "debug", "message": "SCHED 2147483647ms: gomaxprocs=2 idleprocs=2 threads=8", "plugin": "checker"}}},
		{"blank lines are dropped", []string{"\n", "  \n"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			log := zerolog.New(&out).Level(zerolog.DebugLevel).With().Str("plugin", "checker").Logger()
			w := newPluginLogWriter(log)
			for _, s := range tc.writes {
				if _, err := w.Write([]byte(s)); err != nil {
					t.Fatal(err)
				}
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			if len(tc.want) == 0 {
				if out.Len() != 0 {
					t.Fatalf("logged %q", out.String())
				}
				return
			}
			if len(lines) != len(tc.want) {
				t.Fatalf("got %d lines %q, want %d", len(lines), out.String(), len(tc.want))
			}
			for i, line := range lines {
				var got map[string]any
				if err := json.Unmarshal([]byte(line), &got); err != nil {
					t.Fatal(err)
				}
				for k, v := range tc.want[i] {
					if got[k] != v {
						t.Errorf("line %d: %s = %v, want %v (line %s)", i, k, got[k], v, line)
					}
				}
				if strings.Count(line, `"plugin"`) != 1 {
					t.Errorf("plugin field not exactly once: %s", line)
				}
			}
		})
	}
}
