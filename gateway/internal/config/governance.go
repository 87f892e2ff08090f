package config

import (
	"crypto/tls"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	"trine/gateway/internal/ratelimit"
)

// Limits are the request limits applied to every authenticated request.
type Limits struct {
	// Default applies to keys that set no rate of their own.
	Default ratelimit.Rule
	// MaxInFlight caps each key's concurrent requests on one gateway,
	// unless the key sets its own cap.
	MaxInFlight int
	// Routes adds a per-key limit on single routes, by route pattern
	// ("POST /v1/sandbox/run"), on top of the key's overall limit.
	Routes map[string]ratelimit.Rule
	// RouteMaxBody overrides MaxBodyBytes on single routes, by pattern.
	RouteMaxBody map[string]int64
	// RedisURL, when set, moves rate-limit state to Redis so that all
	// gateway replicas share one limit.
	RedisURL *url.URL
	// FailureMode says what happens when Redis cannot decide.
	FailureMode ratelimit.FailureMode
}

// Upstream tunes how upstreams are called and judged.
type Upstream struct {
	// ConnectTimeout bounds establishing one connection to a replica.
	ConnectTimeout time.Duration
	// RAGFirstByteTimeout and SandboxFirstByteTimeout bound the wait for
	// the upstream's response headers.
	RAGFirstByteTimeout, SandboxFirstByteTimeout time.Duration
	// EjectAfter consecutive failures take a replica out of rotation for
	// EjectFor, after which single probe requests are let through.
	EjectAfter int
	// EjectFor is how long an ejected replica gets no traffic.
	EjectFor time.Duration
	// HedgeDelay is the wait before a hedged RAG query goes to a second
	// replica; zero means the observed p95 latency, at least HedgeMinDelay.
	HedgeDelay time.Duration
	// HedgeMinDelay is the floor of the automatic hedge delay.
	HedgeMinDelay time.Duration
}

// TLS names the certificate and key the public listener serves; both empty
// means plain HTTP.
type TLS struct {
	CertFile, KeyFile string
}

// rawRule is a rate limit as written in the file.
type rawRule struct {
	RatePerSecond float64 `json:"rate_per_second"`
	Burst         int     `json:"burst"`
}

// rawGovernance holds the limit, upstream and TLS settings as written in the
// JSON file; it is embedded in raw, so its keys sit at the file's top level.
type rawGovernance struct {
	RatePerSecond           float64            `json:"rate_per_second"`
	Burst                   int                `json:"burst"`
	MaxInFlight             int                `json:"max_in_flight"`
	RouteLimits             map[string]rawRule `json:"route_limits"`
	RouteMaxBodyBytes       map[string]int64   `json:"route_max_body_bytes"`
	RedisURL                string             `json:"redis_url"`
	RateLimitFailureMode    string             `json:"ratelimit_failure_mode"`
	ConnectTimeout          string             `json:"connect_timeout"`
	RAGFirstByteTimeout     string             `json:"rag_first_byte_timeout"`
	SandboxFirstByteTimeout string             `json:"sandbox_first_byte_timeout"`
	EjectAfter              int                `json:"eject_after"`
	EjectFor                string             `json:"eject_for"`
	HedgeDelay              string             `json:"hedge_delay"`
	HedgeMinDelay           string             `json:"hedge_min_delay"`
	TLSCert                 string             `json:"tls_cert"`
	TLSKey                  string             `json:"tls_key"`
}

func defaultGovernance() rawGovernance {
	return rawGovernance{
		RatePerSecond:           50,
		Burst:                   100,
		MaxInFlight:             64,
		RateLimitFailureMode:    string(ratelimit.FailOpen),
		ConnectTimeout:          "2s",
		RAGFirstByteTimeout:     "60s",
		SandboxFirstByteTimeout: "60s",
		EjectAfter:              5,
		EjectFor:                "10s",
		HedgeDelay:              "auto",
		HedgeMinDelay:           "20ms",
	}
}

// applyEnv overrides g from the environment, returning unparsable values.
func (g *rawGovernance) applyEnv(get func(string) (string, bool)) []error {
	for name, dst := range map[string]*string{
		"REDIS_URL":                        &g.RedisURL,
		"TRINE_RATELIMIT_FAILURE_MODE":     &g.RateLimitFailureMode,
		"TRINE_CONNECT_TIMEOUT":            &g.ConnectTimeout,
		"TRINE_RAG_FIRST_BYTE_TIMEOUT":     &g.RAGFirstByteTimeout,
		"TRINE_SANDBOX_FIRST_BYTE_TIMEOUT": &g.SandboxFirstByteTimeout,
		"TRINE_EJECT_FOR":                  &g.EjectFor,
		"TRINE_HEDGE_DELAY":                &g.HedgeDelay,
		"TRINE_HEDGE_MIN_DELAY":            &g.HedgeMinDelay,
		"TRINE_TLS_CERT":                   &g.TLSCert,
		"TRINE_TLS_KEY":                    &g.TLSKey,
	} {
		if v, ok := get(name); ok {
			*dst = v
		}
	}
	var errs []error
	for name, dst := range map[string]*int{
		"TRINE_RATE_BURST":    &g.Burst,
		"TRINE_MAX_IN_FLIGHT": &g.MaxInFlight,
		"TRINE_EJECT_AFTER":   &g.EjectAfter,
	} {
		if v, ok := get(name); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %q is not an integer", name, v))
				continue
			}
			*dst = n
		}
	}
	if v, ok := get("TRINE_RATE_PER_SECOND"); ok {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("TRINE_RATE_PER_SECOND: %q is not a number", v))
		} else {
			g.RatePerSecond = f
		}
	}
	return errs
}

// validate fills c's limit, upstream and TLS settings from g.
func (g *rawGovernance) validate(c *Config, fail func(string, ...any)) {
	rule := func(name string, rate float64, burst int) ratelimit.Rule {
		if !(rate > 0) || math.IsInf(rate, 0) || burst < 1 {
			fail("%s: rate_per_second must be > 0 and burst >= 1, got %v and %d", name, rate, burst)
		}
		return ratelimit.Rule{Rate: rate, Burst: burst}
	}
	c.Limits.Default = rule("TRINE_RATE_PER_SECOND/TRINE_RATE_BURST (rate_per_second/burst)", g.RatePerSecond, g.Burst)
	if c.Limits.MaxInFlight = g.MaxInFlight; g.MaxInFlight < 1 {
		fail("TRINE_MAX_IN_FLIGHT (max_in_flight): must be >= 1, got %d", g.MaxInFlight)
	}
	c.Limits.Routes = make(map[string]ratelimit.Rule)
	for pattern, r := range g.RouteLimits {
		c.Limits.Routes[pattern] = rule("route_limits["+pattern+"]", r.RatePerSecond, r.Burst)
	}
	c.Limits.RouteMaxBody = make(map[string]int64)
	for pattern, n := range g.RouteMaxBodyBytes {
		if n <= 0 {
			fail("route_max_body_bytes[%s]: must be positive, got %d", pattern, n)
		}
		c.Limits.RouteMaxBody[pattern] = n
	}
	if g.RedisURL != "" {
		u, err := url.Parse(g.RedisURL)
		if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
			fail("REDIS_URL (redis_url): must be redis://host:port[/db] or rediss://...")
		}
		c.Limits.RedisURL = u
	}
	switch m := ratelimit.FailureMode(strings.ToLower(g.RateLimitFailureMode)); m {
	case ratelimit.FailOpen, ratelimit.FailClosed:
		c.Limits.FailureMode = m
	default:
		fail("TRINE_RATELIMIT_FAILURE_MODE (ratelimit_failure_mode): %q is not open or closed", g.RateLimitFailureMode)
	}

	durations := []struct {
		name, value string
		dst         *time.Duration
	}{
		{"TRINE_CONNECT_TIMEOUT (connect_timeout)", g.ConnectTimeout, &c.Upstream.ConnectTimeout},
		{"TRINE_RAG_FIRST_BYTE_TIMEOUT (rag_first_byte_timeout)", g.RAGFirstByteTimeout, &c.Upstream.RAGFirstByteTimeout},
		{"TRINE_SANDBOX_FIRST_BYTE_TIMEOUT (sandbox_first_byte_timeout)", g.SandboxFirstByteTimeout, &c.Upstream.SandboxFirstByteTimeout},
		{"TRINE_EJECT_FOR (eject_for)", g.EjectFor, &c.Upstream.EjectFor},
		{"TRINE_HEDGE_MIN_DELAY (hedge_min_delay)", g.HedgeMinDelay, &c.Upstream.HedgeMinDelay},
	}
	if g.HedgeDelay != "auto" {
		durations = append(durations, struct {
			name, value string
			dst         *time.Duration
		}{"TRINE_HEDGE_DELAY (hedge_delay)", g.HedgeDelay, &c.Upstream.HedgeDelay})
	}
	for _, d := range durations {
		v, err := time.ParseDuration(d.value)
		if err != nil || v <= 0 {
			fail("%s: %q is not a positive Go duration such as 2s or 500ms", d.name, d.value)
			continue
		}
		*d.dst = v
	}
	if c.Upstream.EjectAfter = g.EjectAfter; g.EjectAfter < 1 {
		fail("TRINE_EJECT_AFTER (eject_after): must be >= 1, got %d", g.EjectAfter)
	}
	if (g.TLSCert == "") != (g.TLSKey == "") {
		fail("TRINE_TLS_CERT and TRINE_TLS_KEY (tls_cert, tls_key): set both or neither")
	}
	c.TLS = TLS{CertFile: g.TLSCert, KeyFile: g.TLSKey}
	if g.TLSCert != "" && g.TLSKey != "" {
		// Loading the pair now turns a bad file into a start-up error
		// rather than a server that fails on its first connection.
		if _, err := tls.LoadX509KeyPair(g.TLSCert, g.TLSKey); err != nil {
			fail("TRINE_TLS_CERT/TRINE_TLS_KEY (tls_cert/tls_key): %v", err)
		}
	}
}
