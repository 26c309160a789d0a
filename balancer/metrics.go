package balancer

import (
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names, defined once.
const (
	metricConnections        = "keep_vip_balancer_connections_total"
	metricActiveConnections  = "keep_vip_balancer_active_connections"
	metricBackendActive      = "keep_vip_balancer_backend_active_connections"
	metricDialErrors         = "keep_vip_balancer_backend_dial_errors_total"
	metricBytes              = "keep_vip_balancer_bytes_total"
	metricBackendUp          = "keep_vip_balancer_backend_up"
	metricEjections          = "keep_vip_balancer_backend_ejections_total"
	metricHTTPRequests       = "keep_vip_balancer_http_requests_total"
	metricHTTPRequestSeconds = "keep_vip_balancer_http_request_duration_seconds"
	metricLocalErrors        = "keep_vip_balancer_local_errors_total"
)

// Values of the direction label of metricBytes.
const (
	dirToBackend = "to_backend"
	dirToClient  = "to_client"
)

// backendNone labels HTTP answers no backend gave (503 and the like).
const backendNone = "none"

type metrics struct {
	connections *prometheus.CounterVec
	active      *prometheus.GaugeVec
	beActive    *prometheus.GaugeVec
	dialErrors  *prometheus.CounterVec
	bytes       *prometheus.CounterVec
	up          *prometheus.GaugeVec
	ejections   *prometheus.CounterVec
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	localErrors *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricConnections,
			Help: "Connections to a backend: tcp client connections proxied, udp sessions opened, http backend connections dialed (keep-alive reuses them).",
		}, []string{"balancer", "backend"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: metricActiveConnections,
			Help: "Client connections (udp: sessions) open now, including those still connecting to a backend.",
		}, []string{"balancer"}),
		beActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: metricBackendActive,
			Help: "Connections (udp: sessions, http: requests in flight) a backend serves now.",
		}, []string{"balancer", "backend"}),
		dialErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricDialErrors,
			Help: "Failed connects to a backend (udp: refused by it); the client was passed to the next one.",
		}, []string{"balancer", "backend"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricBytes,
			Help: "Bytes proxied, by direction (to_backend, to_client). tcp and udp count what they read; http counts what crosses backend connections, headers included.",
		}, []string{"balancer", "backend", "direction"}),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: metricBackendUp,
			Help: "1 while a backend gets new connections, 0 while its checks fail or it is ejected after connect errors.",
		}, []string{"balancer", "backend"}),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricEjections,
			Help: "Times a backend was taken out after consecutive connect errors.",
		}, []string{"balancer", "backend"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricHTTPRequests,
			Help: "HTTP requests answered, by status code; backend=none for answers the balancer gave itself (503 with every backend down).",
		}, []string{"balancer", "backend", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    metricHTTPRequestSeconds,
			Help:    "HTTP request duration, from the request's headers to the end of the response body.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"balancer", "backend"}),
		localErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricLocalErrors,
			Help: "Failures of the balancer's own resources (out of descriptors, memory, buffers, local ports), by operation (accept, connect, check) and errno; never counted against a backend.",
		}, []string{"balancer", "op", "error"}),
	}
	reg.MustRegister(m.connections, m.active, m.beActive, m.dialErrors, m.bytes, m.up, m.ejections, m.requests, m.duration, m.localErrors)
	return m
}

// backendMetrics are one backend's series, resolved once so the hot paths
// never hash label values.
type backendMetrics struct {
	conns, dialErrors, ejections prometheus.Counter
	toBackend, toClient          prometheus.Counter
	active, up                   prometheus.Gauge
	duration                     prometheus.Observer

	vec          *prometheus.CounterVec
	labels       [2]string
	codes        [600]atomic.Pointer[prometheus.Counter]
	otherCodeCtr atomic.Pointer[prometheus.Counter]
}

func (m *metrics) forBackend(lbName, beName string) *backendMetrics {
	return &backendMetrics{
		conns:      m.connections.WithLabelValues(lbName, beName),
		dialErrors: m.dialErrors.WithLabelValues(lbName, beName),
		ejections:  m.ejections.WithLabelValues(lbName, beName),
		toBackend:  m.bytes.WithLabelValues(lbName, beName, dirToBackend),
		toClient:   m.bytes.WithLabelValues(lbName, beName, dirToClient),
		active:     m.beActive.WithLabelValues(lbName, beName),
		up:         m.up.WithLabelValues(lbName, beName),
		duration:   m.duration.WithLabelValues(lbName, beName),
		vec:        m.requests,
		labels:     [2]string{lbName, beName},
	}
}

// forNone is the series of http answers no backend gave.
func (m *metrics) forNone(lbName string) *backendMetrics {
	return &backendMetrics{
		vec:    m.requests,
		labels: [2]string{lbName, backendNone},
	}
}

// forget removes a backend's gauges once it is no longer configured, so a
// removed backend does not linger as up. Counters stay: rates over them
// stay right.
func (m *metrics) forget(lbName, beName string) {
	m.beActive.DeleteLabelValues(lbName, beName)
	m.up.DeleteLabelValues(lbName, beName)
}

// request counts one HTTP answer by code, caching the series per code.
func (bm *backendMetrics) request(code int) {
	slot, label := &bm.otherCodeCtr, "other"
	if code >= 100 && code < len(bm.codes) {
		slot = &bm.codes[code]
	}
	if c := slot.Load(); c != nil {
		(*c).Inc()
		return
	}
	if slot != &bm.otherCodeCtr {
		label = strconv.Itoa(code)
	}
	c := bm.vec.WithLabelValues(bm.labels[0], bm.labels[1], label)
	slot.Store(&c)
	c.Inc()
}
