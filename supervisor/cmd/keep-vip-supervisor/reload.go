package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/keep-vip/keep-vip/supervisor"
	"github.com/keep-vip/keep-vip/supervisor/config"
)

// watchHUP reloads the config on every SIGHUP until ctx ends or the
// returned stop is called, and has the admin socket's reload (what
// `keep-vip-supervisor reload`, the unit's ExecReload, asks for) do the
// same. It listens before it returns, so a SIGHUP never kills the process.
func watchHUP(ctx context.Context, path string, s *supervisor.Supervisor, log zerolog.Logger) (stop func()) {
	s.HandleReload(func(rctx context.Context) error { return reloadFile(rctx, path, s, log, "admin socket") })
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-done:
				return
			case <-hup:
			}
			_ = reloadFile(ctx, path, s, log, "SIGHUP")
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
	}
}

// reloadFile re-reads the config at path and applies it, returning once
// applied. A config that does not load or validate is refused with one
// line naming the key, and the running config stays; the policy loop logs
// what it applied and what failed.
func reloadFile(ctx context.Context, path string, s *supervisor.Supervisor, log zerolog.Logger, by string) error {
	log.Info().Str("config", path).Str("by", by).Msg("reloading the config")
	cfg, err := config.Load(path)
	if err == nil {
		// Each plugin binary validates its part before anything is applied.
		err = s.ValidatePlugins(ctx, cfg)
	}
	if err != nil {
		err = fmt.Errorf("reload refused: %s: %s", path, strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " "))
		log.Error().Str("config", path).Str("error", err.Error()).
			Msg("reload refused: the config is not valid; still running the previous one")
		return err
	}
	return s.Reload(ctx, cfg)
}
