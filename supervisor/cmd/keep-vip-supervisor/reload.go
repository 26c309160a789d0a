package main

import (
	"context"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/keep-vip/keep-vip/supervisor"
	"github.com/keep-vip/keep-vip/supervisor/config"
)

// watchHUP reloads the config on every SIGHUP (systemctl reload) until ctx
// ends or the returned stop is called. It listens before it returns, so a
// SIGHUP never kills the process. A config that does not load or validate
// is logged on one line and the running config stays.
func watchHUP(ctx context.Context, path string, s *supervisor.Supervisor, log zerolog.Logger) (stop func()) {
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
			log.Info().Str("config", path).Msg("SIGHUP: reloading the config")
			cfg, err := config.Load(path)
			if err != nil {
				log.Error().Str("config", path).Str("error", strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")).
					Msg("reload refused: the config is not valid; still running the previous one")
				continue
			}
			// The policy loop logs what it applied and what failed.
			_ = s.Reload(ctx, cfg)
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
	}
}
