package balancer

import "github.com/prometheus/client_golang/prometheus"

// Metric names, defined once.
const (
	metricConnections       = "keep_vip_balancer_connections_total"
	metricActiveConnections = "keep_vip_balancer_active_connections"
	metricDialErrors        = "keep_vip_balancer_backend_dial_errors_total"
	metricBytes             = "keep_vip_balancer_bytes_total"
)

// Values of the direction label of metricBytes.
const (
	dirToBackend = "to_backend"
	dirToClient  = "to_client"
)

type metrics struct {
	connections *prometheus.CounterVec
	active      *prometheus.GaugeVec
	dialErrors  *prometheus.CounterVec
	bytes       *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricConnections,
			Help: "Client connections proxied to a backend.",
		}, []string{"balancer", "backend"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: metricActiveConnections,
			Help: "Client connections open now, including those still dialing a backend.",
		}, []string{"balancer"}),
		dialErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricDialErrors,
			Help: "Failed connects to a backend; the client was passed to the next one.",
		}, []string{"balancer", "backend"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricBytes,
			Help: "Bytes proxied, by direction (to_backend, to_client). Counted per chunk of up to 1 MiB and at the end of each direction.",
		}, []string{"balancer", "direction"}),
	}
	reg.MustRegister(m.connections, m.active, m.dialErrors, m.bytes)
	return m
}
