package supervisor

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/keep-vip/keep-vip/supervisor/config"
)

// metrics are the supervisor's own series, including the ones the original keep-vip's
// program exported, kept under their old names and labels so existing
// dashboards keep working.
type metrics struct {
	reg *prometheus.Registry

	restarts *prometheus.CounterVec
	up       *prometheus.GaugeVec
	vipHeld  prometheus.Gauge
	healthy  prometheus.Gauge
	// unhealthy{reason} is 1 for each reason this member is unhealthy
	// (faults.go).
	unhealthy *prometheus.GaugeVec

	// The original keep-vip's series.
	isLeader  prometheus.Gauge
	state     prometheus.Gauge
	checkPort *prometheus.GaugeVec

	failover *failoverMetrics // failover.go
}

// The original keep-vip's member states, the values of keep_vip_member_state.
const (
	memberFollower  = 0
	memberCandidate = 1
	memberLeader    = 2
)

func newMetrics(cfg *config.Config, local config.Member) *metrics {
	member := prometheus.Labels{
		"keep_vip_cluster": cfg.Cluster,
		"server_id":        local.ID,
		"server_address":   local.Address,
	}
	withVIP := prometheus.Labels{"vip": cfg.VIP}
	for k, v := range member {
		withVIP[k] = v
	}
	m := &metrics{
		reg: prometheus.NewRegistry(),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keep_vip_supervisor_plugin_restarts_total",
			Help: "Times a plugin was started again after it stopped.",
		}, []string{"plugin"}),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "keep_vip_supervisor_plugin_up",
			Help: "1 while the plugin process runs and answers.",
		}, []string{"plugin"}),
		vipHeld: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keep_vip_supervisor_vip_held",
			Help: "1 while the supervisor has the announcer hold the VIP.",
		}),
		healthy: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keep_vip_supervisor_healthy",
			Help: "1 while this member may serve the VIP: checks pass, interface usable, not in maintenance.",
		}),
		isLeader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name:        "keep_vip_member_is_leader",
			Help:        "1 if this member is the Raft leader.",
			ConstLabels: withVIP,
		}),
		state: prometheus.NewGauge(prometheus.GaugeOpts{
			Name:        "keep_vip_member_state",
			Help:        "Raft state of this member: 0 follower, 1 candidate, 2 leader.",
			ConstLabels: withVIP,
		}),
		checkPort: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name:        "keep_vip_check_port",
			Help:        "1 if the check passed on its last run, 0 if it failed.",
			ConstLabels: member,
		}, []string{"name", "address"}),
	}
	m.unhealthy = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "keep_vip_supervisor_unhealthy",
		Help: "1 for each reason this member is unhealthy: checks, checker_down, interface, vip (cannot hold the VIP), <plugin>_start (a plugin cannot start).",
	}, []string{"reason"})
	for _, l := range unhealthyLabels() {
		m.unhealthy.WithLabelValues(l)
	}
	m.reg.MustRegister(m.unhealthy)
	m.failover = newFailoverMetrics(m.reg)
	m.reg.MustRegister(m.restarts, m.up, m.vipHeld, m.healthy, m.isLeader, m.state, m.checkPort,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// pluginGatherer merges the metrics of whichever plugins run at scrape time.
// A plugin that is down or slow is left out of that scrape rather than
// failing it: its absence shows in keep_vip_supervisor_plugin_up.
type pluginGatherer struct {
	mu   sync.Mutex
	live map[string]prometheus.Gatherer
	log  zerolog.Logger
}

func (g *pluginGatherer) set(kind string, gth prometheus.Gatherer) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if gth == nil {
		delete(g.live, kind)
		return
	}
	g.live[kind] = gth
}

func (g *pluginGatherer) Gather() ([]*dto.MetricFamily, error) {
	g.mu.Lock()
	live := make(map[string]prometheus.Gatherer, len(g.live))
	for k, v := range g.live {
		live[k] = v
	}
	g.mu.Unlock()
	var out []*dto.MetricFamily
	for kind, gth := range live {
		fams, err := gth.Gather()
		if err != nil {
			g.log.Debug().Err(err).Str("plugin", kind).Msg("plugin metrics left out of this scrape")
			continue
		}
		out = append(out, fams...)
	}
	return out, nil
}

// serveMetrics serves /metrics until ctx ends. The listener is opened before
// it returns, so a port in use is a start error, not a log line.
func serveMetrics(ctx context.Context, addr string, g prometheus.Gatherer, log zerolog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Msg("metrics server stopped")
		}
	}()
	return nil
}

// failoverMetrics are the supervisor's failover series.
type failoverMetrics struct {
	electorRestarts *prometheus.CounterVec
	lastFailover    prometheus.Gauge
	handovers       *prometheus.CounterVec
}

func newFailoverMetrics(reg *prometheus.Registry) *failoverMetrics {
	m := &failoverMetrics{
		electorRestarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keep_vip_supervisor_elector_restarts_total",
			Help: "Times the elector was started again, by why it had stopped: unhealthy (this member left the election) or crash.",
		}, []string{"cause"}),
		lastFailover: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keep_vip_supervisor_last_failover_seconds",
			Help: "The last failover as this member saw it: from its last contact with the previous leader to holding the VIP. 0 until it has taken over once.",
		}),
		handovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keep_vip_supervisor_handovers_total",
			Help: "Leadership handovers this member started, by reason (unhealthy, preempt, shutdown) and result (ok, failed).",
		}, []string{"reason", "result"}),
	}
	for _, c := range []string{causeUnhealthy, causeCrash} {
		m.electorRestarts.WithLabelValues(c)
	}
	reg.MustRegister(m.electorRestarts, m.lastFailover, m.handovers)
	return m
}
