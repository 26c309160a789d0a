package supervisor

import (
	"context"
	"time"

	"github.com/rs/zerolog"

	"github.com/keep-vip/keep-vip/rpc"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
	"github.com/keep-vip/keep-vip/supervisor/config"
)

// The VIP scrub: taking this member's VIPs off the interface when no
// announcer can be trusted with them. The supervisor links no netlink of
// its own: it starts the announcer binary for one Configure, which by the
// announcer's contract (rpc.Announcer) removes every configured VIP it
// finds on the interface, and stops it again.
//
// When the policy scrubs: a running announcer that died (kill -9, a crash)
// leaves its VIPs on the interface, and its successor starts only after
// the restart backoff. If this member stopped leading meanwhile (a
// partition, failing checks, maintenance) the VIP would be on two members.
// So the policy scrubs at once, on its loop, before it acts on anything
// else: nothing it does next (handing leadership over, leaving
// the election) can happen while a VIP may still be here. The same holds
// when the announcer fails to release: it is killed and the scrub runs
// before the handover.

// scrubTimeout bounds the scrub's Configure; starting the process is
// bounded by go-plugin's start timeout.
const scrubTimeout = 5 * time.Second

// scrubOnce runs the announcer at path for one Configure with cfg and
// stops it: the VIPs of cfg are off the interface when it returns nil.
func scrubOnce(ctx context.Context, path string, spawn *spawner, cfg *pb.AnnouncerConfig, log zerolog.Logger) error {
	r := &runner{
		kind:  rpc.KindAnnouncer,
		path:  path,
		log:   log,
		spawn: spawn,
		setup: func(ctx context.Context, impl any) error {
			return impl.(rpc.Announcer).Configure(ctx, cfg)
		},
	}
	inst, err := r.start(ctx)
	if err != nil {
		return err
	}
	r.stop(inst)
	return nil
}

// scrubVIPs is the policy's scrub (see above); why says what made the
// announcer untrustworthy.
func (p *policy) scrubVIPs(why string) {
	log := p.log.With().Str("plugin", rpc.KindAnnouncer).Str("vip", p.s.cfg.VIP).Logger()
	ctx, cancel := context.WithTimeout(context.Background(), scrubTimeout)
	defer cancel()
	start := time.Now()
	spawn := p.s.runners[rpc.KindAnnouncer].spawn
	if err := scrubOnce(ctx, p.s.paths[rpc.KindAnnouncer], spawn, p.s.cfg.AnnouncerConfig(), log); err != nil {
		log.Error().Str("why", why).Str("error", plainError(err)).
			Msg("cannot take the VIPs off the interface: a fresh announcer did not start")
		return
	}
	log.Warn().Str("why", why).Strs("vips", p.s.cfg.AnnouncerConfig().Vips).Dur("took_ms", time.Since(start)).
		Msg("took any VIP left behind off the interface with a fresh announcer")
}

// Cleanup removes the VIPs (vip and every vips entry, IPv4 and IPv6) from the
// interface without starting a member: the same scrub. It is the service's
// ExecStopPost, so no VIP outlives the service.
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
	if err := scrubOnce(ctx, path, newSpawner(), cfg.AnnouncerConfig(), log.With().Str("plugin", rpc.KindAnnouncer).Logger()); err != nil {
		return err
	}
	log.Info().Str("vip", cfg.VIP).Str("plugin", rpc.KindAnnouncer).Strs("vips", cfg.AnnouncerConfig().Vips).
		Str("interface", cfg.Interface).Msg("VIPs removed")
	return nil
}
