package policy

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Judge is the balancing policy at run time, shared by every load balancer
// of a balancer: it picks backends (pick.go), judges their health from
// active checks and connect results (health.go), and tells the balancer's
// own faults apart from theirs (localfault.go).
type Judge struct {
	Log zerolog.Logger
	// LocalLog is Log sampled for the balancer's own faults (see
	// NoteLocal).
	LocalLog zerolog.Logger
	Metrics  *Metrics
	// EjectCooldown: see DefaultEjectCooldown; tests shorten it.
	EjectCooldown time.Duration
	// ctx ends every active check.
	ctx context.Context
}

// NewJudge returns a Judge whose metrics are registered in reg and whose
// active checks run until ctx ends.
func NewJudge(ctx context.Context, log zerolog.Logger, reg prometheus.Registerer) *Judge {
	return &Judge{
		Log:           log,
		LocalLog:      newLocalLog(log),
		Metrics:       newMetrics(reg),
		EjectCooldown: DefaultEjectCooldown,
		ctx:           ctx,
	}
}

// WarnNoBackend logs that a client got no backend, at most once a second
// per load balancer, so a dead pool does not flood the log.
func (j *Judge) WarnNoBackend(lb *LoadBalancer, tried bool) {
	now := time.Now().UnixNano()
	last := lb.lastWarn.Load()
	if now-last < int64(time.Second) || !lb.lastWarn.CompareAndSwap(last, now) {
		return
	}
	msg := "client refused: every backend is down"
	if tried {
		msg = "client refused: no backend answered"
	}
	j.Log.Warn().Str("balancer", lb.Name).Msg(msg)
}
