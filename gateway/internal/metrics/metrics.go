// Package metrics exposes the gateway's Prometheus metrics. Labels are
// bounded on purpose: routes are labelled by their registered pattern, never
// by the raw path, so a client cannot create unbounded series.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics owns a private registry, so tests and several gateways in one
// process never collide on the global one.
type Metrics struct {
	registry *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight prometheus.Gauge
}

// New registers the gateway's metrics and the Go runtime and process
// collectors.
func New() *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trine_gateway_requests_total",
			Help: "Requests handled, by route pattern and status code (499: client closed the request).",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "trine_gateway_request_duration_seconds",
			Help: "Time from receiving a request to finishing its response, by route pattern.",
			// Spans fast rejections up to long generations and sandbox runs.
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"route"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trine_gateway_requests_in_flight",
			Help: "Requests currently being handled.",
		}),
	}
	m.registry.MustRegister(
		m.requests, m.duration, m.inFlight,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// RequestStarted counts a request as in flight; call the returned function
// when it is done, with its route pattern and final status.
func (m *Metrics) RequestStarted() func(route string, code int) {
	start := time.Now()
	m.inFlight.Inc()
	return func(route string, code int) {
		m.inFlight.Dec()
		m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
		m.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
	}
}

// TrackUpstream exports the health of the named upstream as
// trine_gateway_upstream_healthy{upstream=name}, read from healthy at scrape
// time so that the value can never lag behind the health state itself.
func (m *Metrics) TrackUpstream(name string, healthy func() bool) {
	m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "trine_gateway_upstream_healthy",
		Help:        "1 if the upstream passes health checks, else 0.",
		ConstLabels: prometheus.Labels{"upstream": name},
	}, func() float64 {
		if healthy() {
			return 1
		}
		return 0
	}))
}
