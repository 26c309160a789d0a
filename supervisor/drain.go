package supervisor

import (
	"context"
	"time"

	"github.com/keep-vip/keep-vip/rpc"
	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// Drain-on-stop: a stopping member's balancer lets its connections finish.

// drainPoll is how often the supervisor asks a draining balancer whether
// its connections are gone.
const drainPoll = 100 * time.Millisecond

// drainBalancer lets the balancer's connections finish, up to drainTimeout,
// before its plugin is stopped (go-plugin would give it 2 seconds). It runs
// after the VIP is released, so failover never waits for it: what drains
// is what still reaches this member, on its own addresses.
func (p *policy) drainBalancer() {
	cfg := p.s.liveConfig()
	bal, ok := p.impls[rpc.KindBalancer].(rpc.Balancer)
	if !ok || len(cfg.LoadBalancers) == 0 || cfg.DrainTimeout <= 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	err := bal.Configure(ctx, &pb.BalancerConfig{DrainTimeoutMs: cfg.DrainTimeout.Milliseconds()})
	cancel()
	if err != nil {
		p.log.Warn().Err(err).Msg("balancer: cannot start draining; its connections are cut")
		return
	}
	start := time.Now()
	deadline := start.Add(cfg.DrainTimeout + drainPoll)
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	for {
		select {
		case ev := <-p.s.events:
			p.handle(ev)
			continue
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		st, err := bal.Status(ctx)
		cancel()
		if err != nil || !st.GetBalancer().GetDraining() || time.Now().After(deadline) {
			p.log.Info().Dur("took_ms", time.Since(start)).Int64("left", st.GetBalancer().GetDrainingClients()).Msg("balancer drained")
			return
		}
	}
}
