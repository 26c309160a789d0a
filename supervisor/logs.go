package supervisor

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
	"github.com/rs/zerolog/journald"
)

// NewLogger builds the supervisor's logger. format "auto" picks journald's
// native protocol when systemd says stdout is the journal (JOURNAL_STREAM),
// readable console lines on a terminal, and JSON lines otherwise.
func NewLogger(format string, level zerolog.Level, out *os.File) zerolog.Logger {
	var w io.Writer
	toJournal := false
	switch format {
	case "journal":
		w, toJournal = journald.NewJournalDWriter(), true
	case "console":
		w = zerolog.ConsoleWriter{Out: out, TimeFormat: time.RFC3339Nano}
	case "json":
		w = out
	default:
		switch {
		case out == os.Stdout && journalStdout():
			w, toJournal = journald.NewJournalDWriter(), true
		case isatty.IsTerminal(out.Fd()):
			w = zerolog.ConsoleWriter{Out: out, TimeFormat: time.RFC3339Nano}
		default:
			w = out
		}
	}
	zerolog.DurationFieldUnit = time.Millisecond
	zerolog.DurationFieldInteger = false
	// Milliseconds matter here: failover is measured in them, also from
	// the logs (e2e reads the check verdict's and the VIP's times).
	zerolog.TimeFieldFormat = "2006-01-02T15:04:05.000000Z07:00"
	ctx := zerolog.New(w).Level(level).With().Timestamp()
	if toJournal {
		// The journald writer turns every field into a journal field named
		// in upper case: plugin -> PLUGIN, member -> MEMBER, term -> TERM,
		// vip -> VIP; this one makes `journalctl -t keep-vip-supervisor` work
		// and names the plugins' lines after the supervisor that logs them.
		ctx = ctx.Str("syslog_identifier", SyslogIdentifier)
	}
	return ctx.Logger()
}

// SyslogIdentifier is the journal's SYSLOG_IDENTIFIER of every line the
// supervisor logs, its plugins' included.
const SyslogIdentifier = "keep-vip-supervisor"

// JournalStdout is whether systemd connected stdout to the journal.
func JournalStdout() bool { return journalStdout() }

func journalStdout() bool {
	ok, err := journal.StdoutIsJournalStream()
	return err == nil && ok
}

// pluginLogWriter receives a plugin's stderr from go-plugin, which writes a
// line and its newline in separate calls, and re-logs each line through the
// supervisor's logger with a plugin field. JSON lines (what rpc.Log writes)
// keep their level and fields; the runtime's scheduler trace is debug;
// anything else (a panic) is logged as an error.
type pluginLogWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
	log zerolog.Logger
}

// newPluginLogWriter re-logs through log, which already carries the plugin field.
func newPluginLogWriter(log zerolog.Logger) *pluginLogWriter {
	return &pluginLogWriter{log: log}
}

func (w *pluginLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for {
		line, err := w.buf.ReadBytes('\n')
		if err != nil { // no newline yet: keep the fragment
			w.buf.Reset()
			w.buf.Write(line)
			return len(p), nil
		}
		w.emit(bytes.TrimRight(line, "\r\n"))
	}
}

func (w *pluginLogWriter) emit(line []byte) {
	if len(bytes.TrimSpace(line)) == 0 {
		return
	}
	// The runtime's scheduler trace (rpc.Footprint.Godebug) is no error.
	if bytes.HasPrefix(line, []byte("SCHED ")) {
		w.log.Debug().Msg(string(line))
		return
	}
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		w.log.Error().Msg(string(line))
		return
	}
	lvl, _ := m[zerolog.LevelFieldName].(string)
	msg, _ := m[zerolog.MessageFieldName].(string)
	delete(m, zerolog.LevelFieldName)
	delete(m, zerolog.MessageFieldName)
	delete(m, zerolog.TimestampFieldName)
	zl, err := zerolog.ParseLevel(lvl)
	if err != nil || zl == zerolog.NoLevel {
		zl = zerolog.InfoLevel
	}
	w.log.WithLevel(zl).Fields(m).Msg(msg)
}
