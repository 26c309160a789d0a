package rpc

import (
	"encoding/json"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/rs/zerolog"

	"github.com/keep-vip/keep-vip/rpc/sched"
)

// LogLevelEnv carries the supervisor's log level to its plugins.
const LogLevelEnv = "KEEPVIP_LOG_LEVEL"

// GatherTimeout bounds one plugin's answer to a metrics scrape.
const GatherTimeout = 2 * time.Second

// Log is a plugin's logger: JSON lines on stderr, which go-plugin hands to
// the supervisor, which re-logs them with a plugin field.
var Log = newPluginLogger()

func newPluginLogger() zerolog.Logger {
	l := zerolog.New(os.Stderr).With().Timestamp().Logger()
	if lvl, err := zerolog.ParseLevel(os.Getenv(LogLevelEnv)); err == nil && lvl != zerolog.NoLevel {
		l = l.Level(lvl)
	} else {
		l = l.Level(zerolog.InfoLevel)
	}
	return l
}

// HCLog adapts l for libraries that log through hclog (raft, go-plugin):
// their JSON entries are re-emitted through zerolog with level and fields.
func HCLog(l zerolog.Logger, name string) hclog.Logger {
	lvl := hclog.Info
	switch {
	case l.GetLevel() <= zerolog.TraceLevel:
		lvl = hclog.Trace
	case l.GetLevel() <= zerolog.DebugLevel:
		lvl = hclog.Debug
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       name,
		Level:      lvl,
		JSONFormat: true,
		Output:     hclogWriter{l},
	})
}

type hclogWriter struct{ l zerolog.Logger }

// Write takes one hclog JSON entry; hclog writes each entry in one call.
func (w hclogWriter) Write(p []byte) (int, error) {
	var m map[string]any
	if err := json.Unmarshal(p, &m); err != nil {
		w.l.Info().Msg(strings.TrimSpace(string(p)))
		return len(p), nil
	}
	lvl, _ := m["@level"].(string)
	msg, _ := m["@message"].(string)
	mod, _ := m["@module"].(string)
	for _, k := range []string{"@level", "@message", "@module", "@timestamp", "@caller"} {
		delete(m, k)
	}
	zl, err := zerolog.ParseLevel(lvl)
	if err != nil || zl == zerolog.NoLevel {
		zl = zerolog.InfoLevel
	}
	if zl == zerolog.TraceLevel {
		zl = zerolog.DebugLevel
	}
	w.l.WithLevel(zl).Str("module", mod).Fields(hclogFields(m)).Msg(msg)
	return len(p), nil
}

// hclogFields puts a library's fields in keep-vip's vocabulary, so the
// journal has one key per fact: raft's leader-id is LEADER, as on every
// other line, and the leader it logs as a struct (an empty object) is
// dropped; other dashes become underscores, as journald would make them.
func hclogFields(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		switch k {
		case "leader-id":
			out["leader"] = v
		case "leader":
			if _, ok := v.(string); ok {
				out[k] = v
			}
		default:
			out[strings.ReplaceAll(k, "-", "_")] = v
		}
	}
	return out
}

// LogRTFallBack is the one line a realtime process (the supervisor, the
// elector, the announcer) logs when it reached RLIMIT_RTTIME and fell back
// to nice -10 (sched.WatchRTTime).
func LogRTFallBack(l zerolog.Logger, err error) {
	if err != nil {
		l.Error().Err(err).Msg("scheduling: realtime CPU limit (RLIMIT_RTTIME) reached and the fall back to nice -10 failed; the kernel kills the process at the hard limit")
		return
	}
	l.Warn().Dur("rttime_soft_ms", sched.RTTimeSoft).Int("nice", sched.RaisedNice).
		Msg("scheduling: realtime CPU limit (RLIMIT_RTTIME) reached: a thread ran without blocking that long; the process falls back to nice -10")
}
