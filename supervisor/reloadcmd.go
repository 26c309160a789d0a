package supervisor

import (
	"context"
	"errors"

	"github.com/rs/zerolog"
)

// HandleReload sets what the admin socket's reload command runs (the
// command's main re-reads the config file, as on SIGHUP). It must be set
// before Run.
func (s *Supervisor) HandleReload(fn func(context.Context) error) { s.reloadFn = fn }

// Log is the supervisor's logger: every line carries its member and
// cluster, so the command's own lines (starting, SIGHUP, stopped) match
// `journalctl MEMBER=...` like the rest.
func (s *Supervisor) Log() zerolog.Logger { return s.log }

func (s *Supervisor) reload(ctx context.Context) error {
	if s.reloadFn == nil {
		return errors.New("this supervisor cannot reload from its admin socket")
	}
	return s.reloadFn(ctx)
}
