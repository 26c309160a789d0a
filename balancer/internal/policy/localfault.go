package policy

import (
	"errors"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// The proxy's own faults: running out of descriptors, memory, buffers or
// local ports says nothing of a backend. Counted against one, they ejected
// healthy backends the moment the balancer hit its open-files limit, and
// kept every request failing after the descriptors were free again. So
// they are told apart here, once, and only counted (MetricLocalErrors) and
// logged at most once a second; the connection, request or datagram that
// met one fails alone.

// Operations a local fault is counted under (the op label).
const (
	OpAccept  = "accept"
	OpConnect = "connect"
	OpCheck   = "check"
)

// localFault says whether err is the proxy's own, and its errno.
func localFault(err error) (unix.Errno, bool) {
	var errno unix.Errno
	if !errors.As(err, &errno) {
		return 0, false
	}
	switch errno {
	case unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM,
		// No local port left (EADDRNOTAVAIL), no epoll watch left
		// (ENOSPC).
		unix.EADDRNOTAVAIL, unix.ENOSPC:
		return errno, true
	}
	return 0, false
}

// localLogEvery spaces the log lines local faults give: at the open-files
// limit every accept and connect fails, thousands a second.
const localLogEvery = time.Second

func newLocalLog(log zerolog.Logger) zerolog.Logger {
	return log.Sample(&zerolog.BurstSampler{Burst: 1, Period: localLogEvery})
}

// NoteLocal counts a local fault of lbName's op and logs it, rate-limited.
// It says whether err was one; other errors are the caller's.
func (j *Judge) NoteLocal(lbName, op string, err error) bool {
	errno, ok := localFault(err)
	if !ok {
		return false
	}
	j.Metrics.LocalErrors.WithLabelValues(lbName, op, unix.ErrnoName(errno)).Inc()
	j.LocalLog.Error().Err(err).Str("balancer", lbName).Str("op", op).Msg("the balancer is out of a resource of its own; no backend is blamed (logged at most once a second, counted in " + MetricLocalErrors + ")")
	return true
}
