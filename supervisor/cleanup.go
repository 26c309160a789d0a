package supervisor

import (
	"context"

	"github.com/rs/zerolog"

	"github.com/keep-vip/keep-vip/rpc"
	"github.com/keep-vip/keep-vip/supervisor/config"
)

// Cleanup removes the VIPs (vip and every vips entry, IPv4 and IPv6) from the
// interface without starting a member: it runs the announcer once, whose
// Configure removes every VIP it finds. It is the service's ExecStopPost,
// so no VIP outlives the service.
func Cleanup(ctx context.Context, cfg *config.Config, log zerolog.Logger) error {
	// The same fields as a running member's lines; the interface may be
	// gone, so the member is found without CheckHost.
	member := "unknown"
	if m, err := cfg.LocalMember(nil); err == nil {
		member = m.ID
	}
	log = log.With().Str("cluster", cfg.Cluster).Str("member", member).Logger()
	path, err := FindPlugin(rpc.KindAnnouncer, cfg.Plugins.Announcer)
	if err != nil {
		return err
	}
	r := &runner{
		kind:  rpc.KindAnnouncer,
		path:  path,
		log:   log.With().Str("plugin", rpc.KindAnnouncer).Logger(),
		spawn: newSpawner(),
		setup: func(ctx context.Context, impl any) error {
			return impl.(rpc.Announcer).Configure(ctx, cfg.AnnouncerConfig())
		},
	}
	inst, err := r.start(ctx)
	if err != nil {
		return err
	}
	r.stop(inst)
	log.Info().Str("vip", cfg.VIP).Str("plugin", rpc.KindAnnouncer).Strs("vips", cfg.AnnouncerConfig().Vips).
		Str("interface", cfg.Interface).Msg("VIPs removed")
	return nil
}
