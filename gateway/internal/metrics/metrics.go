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
	limits   *prometheus.CounterVec
	upstream *prometheus.HistogramVec
	overhead prometheus.Histogram
	// Job queue: enqueued by type, finished by type and status, webhook
	// attempts by outcome.
	jobsEnqueued *prometheus.CounterVec
	jobsFinished *prometheus.CounterVec
	webhooks     *prometheus.CounterVec

	// The per-request series, resolved once per label set.
	routes    cache[string, *routeSeries]
	upstreams cache[upstreamLabels, prometheus.Observer]
	decisions cache[string, prometheus.Counter]
}

// routeSeries holds one route's request series.
type routeSeries struct {
	duration prometheus.Observer
	codes    cache[int, prometheus.Counter]
}

type upstreamLabels struct{ upstream, outcome string }

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
		limits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trine_gateway_ratelimit_decisions_total",
			Help: "Rate-limit decisions: allowed, limited (rate), concurrency (in-flight cap), error (shared limiter failed).",
		}, []string{"decision"}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "trine_gateway_upstream_duration_seconds",
			Help:    "Upstream exchanges from sending the request to the end of the answer, by upstream and outcome (success, failure, no_verdict).",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"upstream", "outcome"}),
		overhead: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "trine_gateway_overhead_seconds",
			Help: "Time a request spent in the gateway itself, not waiting on an upstream.",
			// The gateway's own work is measured in microseconds.
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .1},
		}),
		jobsEnqueued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trine_gateway_jobs_enqueued_total",
			Help: "Jobs enqueued, by type (idempotent repeats are not counted).",
		}, []string{"type"}),
		jobsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trine_gateway_jobs_finished_total",
			Help: "Jobs that reached succeeded or failed, by type and status.",
		}, []string{"type", "status"}),
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trine_gateway_webhook_attempts_total",
			Help: "Webhook delivery attempts by outcome: delivered, retrying (will be retried), failed (given up).",
		}, []string{"outcome"}),
	}
	m.registry.MustRegister(
		m.jobsEnqueued, m.jobsFinished, m.webhooks,
		m.requests, m.duration, m.inFlight, m.limits, m.upstream, m.overhead,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// RequestStarted counts a request as in flight; call RequestDone when it is
// done.
func (m *Metrics) RequestStarted() {
	m.inFlight.Inc()
}

// RequestDone records a request that took d, with its route pattern and
// final status.
func (m *Metrics) RequestDone(route string, code int, d time.Duration) {
	m.inFlight.Dec()
	rs := m.routes.get(route, func() *routeSeries {
		return &routeSeries{duration: m.duration.WithLabelValues(route)}
	})
	rs.codes.get(code, func() prometheus.Counter {
		return m.requests.WithLabelValues(route, strconv.Itoa(code))
	}).Inc()
	rs.duration.Observe(d.Seconds())
}

// UpstreamDone records one finished upstream exchange.
func (m *Metrics) UpstreamDone(upstream, outcome string, d time.Duration) {
	m.upstreams.get(upstreamLabels{upstream, outcome}, func() prometheus.Observer {
		return m.upstream.WithLabelValues(upstream, outcome)
	}).Observe(d.Seconds())
}

// Overhead records the gateway's own time for one request.
func (m *Metrics) Overhead(d time.Duration) {
	m.overhead.Observe(d.Seconds())
}

// TrackUpstream exports the state of the named upstream, read at scrape time
// so that the values can never lag behind the state itself:
// trine_gateway_upstream_healthy (active checks), _ejected (passive) and
// _in_flight.
func (m *Metrics) TrackUpstream(name string, healthy, ejected func() bool, inFlight func() int64) {
	labels := prometheus.Labels{"upstream": name}
	m.registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "trine_gateway_upstream_ejected", ConstLabels: labels,
			Help: "1 while the upstream is ejected after consecutive failed requests, else 0.",
		}, func() float64 { return boolValue(ejected()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "trine_gateway_upstream_in_flight", ConstLabels: labels,
			Help: "Requests being proxied to the upstream.",
		}, func() float64 { return float64(inFlight()) }),
	)
	m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "trine_gateway_upstream_healthy",
		Help:        "1 if the upstream passes health checks, else 0.",
		ConstLabels: prometheus.Labels{"upstream": name},
	}, func() float64 { return boolValue(healthy()) }))
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// RateLimitDecision counts one rate-limit decision (allowed, limited,
// concurrency or error).
func (m *Metrics) RateLimitDecision(decision string) {
	m.decisions.get(decision, func() prometheus.Counter {
		return m.limits.WithLabelValues(decision)
	}).Inc()
}

// JobEnqueued counts a new job of a known type.
func (m *Metrics) JobEnqueued(typ string) {
	m.jobsEnqueued.WithLabelValues(typ).Inc()
}

// JobFinished counts a job of a known type reaching a terminal status.
func (m *Metrics) JobFinished(typ, status string) {
	m.jobsFinished.WithLabelValues(typ, status).Inc()
}

// WebhookAttempt counts one webhook delivery attempt (delivered, retrying
// or failed).
func (m *Metrics) WebhookAttempt(outcome string) {
	m.webhooks.WithLabelValues(outcome).Inc()
}
