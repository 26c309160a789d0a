package checker

import "github.com/prometheus/client_golang/prometheus"

// Metric names, defined once.
const (
	metricCheckUp       = "keep_vip_checker_check_up"
	metricCheckDuration = "keep_vip_checker_check_duration_seconds"
	metricCheckFailures = "keep_vip_checker_check_failures_total"
	metricCheckRequired = "keep_vip_checker_check_required"
	metricWatchWakeups  = "keep_vip_checker_watch_wakeups_total"
)

type metrics struct {
	up       *prometheus.GaugeVec
	duration *prometheus.HistogramVec
	failures *prometheus.CounterVec
	required *prometheus.GaugeVec
	wakeups  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: metricCheckUp,
			Help: "1 while the check counts as healthy (after rise/fall damping), else 0.",
		}, []string{"check"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: metricCheckDuration,
			Help: "How long one run of the check took, failed runs included.",
			// Local TCP connects take tens of microseconds and timeouts are
			// seconds, so the default buckets (5ms and up) would lump every
			// healthy run together.
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9),
		}, []string{"check"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricCheckFailures,
			Help: "Runs of the check that failed, damped or not.",
		}, []string{"check"}),
		required: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: metricCheckRequired,
			Help: "1 if the check's failure makes the member unhealthy (gives up the VIP), 0 if it is only reported.",
		}, []string{"check"}),
		wakeups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricWatchWakeups,
			Help: "Runs of the check started early because its watched connection to the service ended (watch.go).",
		}, []string{"check"}),
	}
	reg.MustRegister(m.up, m.duration, m.failures, m.required, m.wakeups)
	return m
}

// forget drops the series of a check that is no longer configured, so a
// renamed check does not leave a stale up=1 behind.
func (m *metrics) forget(check string) {
	m.up.DeleteLabelValues(check)
	m.duration.DeleteLabelValues(check)
	m.failures.DeleteLabelValues(check)
	m.required.DeleteLabelValues(check)
	m.wakeups.DeleteLabelValues(check)
}
