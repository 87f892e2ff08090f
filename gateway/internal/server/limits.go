package server

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"trine/gateway/internal/auth"
	"trine/gateway/internal/config"
	"trine/gateway/internal/httperr"
	"trine/gateway/internal/ratelimit"
)

// limitErrorLogEvery spaces out log lines about a failing shared limiter:
// during an outage every request fails the same way.
const limitErrorLogEvery = 5 * time.Second

// redisKeyPrefix namespaces the gateway's rate-limit keys in a shared Redis.
const redisKeyPrefix = "trine:gw:rl:"

// newLimiter returns the rate limiter the configuration asks for and a
// function that releases its resources.
func (s *Server) newLimiter(lim config.Limits) (ratelimit.Limiter, func() error) {
	local := ratelimit.NewMemory()
	if lim.RedisURL == nil {
		return local, func() error { return nil }
	}
	// The URL was validated by config; ParseURL adds db, TLS and credentials.
	opts, err := redis.ParseURL(lim.RedisURL.String())
	if err != nil {
		opts = &redis.Options{Addr: lim.RedisURL.Host}
	}
	// A limiter that waits long on Redis adds that wait to every request.
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = time.Second, 500*time.Millisecond, 500*time.Millisecond
	// No retries inside the client: during an outage each would add its
	// backoff to every request before the failure mode applies.
	opts.MaxRetries, opts.DialerRetries = -1, 1
	// The client's own diagnostics would otherwise bypass the JSON log.
	redis.SetLogger(redisLog{s.log})
	client := redis.NewClient(opts)
	var lastLog atomic.Int64
	onError := func(ctx context.Context, err error) {
		s.metrics.RateLimitDecision("error")
		now := time.Now().UnixNano()
		if last := lastLog.Load(); now-last >= int64(limitErrorLogEvery) && lastLog.CompareAndSwap(last, now) {
			s.log.WarnContext(ctx, "shared rate limiter failed", "failure_mode", string(lim.FailureMode), "error", err.Error())
		}
	}
	return ratelimit.NewFailover(ratelimit.NewRedis(client, redisKeyPrefix), local, lim.FailureMode, onError), client.Close
}

// redisLog sends the Redis client's diagnostics to the gateway's log; the
// failures that matter are logged by onError with their consequence.
type redisLog struct{ log *slog.Logger }

// Printf implements the Redis client's logging interface.
func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "redis client", "detail", fmt.Sprintf(format, v...))
}

// keyRule is the rate limit of key: its own settings where it has them,
// else the configured default.
func (s *Server) keyRule(key auth.Key) ratelimit.Rule {
	rule := s.cfg.Limits.Default
	if key.Limits.RatePerSecond > 0 {
		rule.Rate = key.Limits.RatePerSecond
	}
	if key.Limits.Burst > 0 {
		rule.Burst = key.Limits.Burst
	}
	return rule
}

// admit applies the key's rate limits (overall and, if configured, on this
// route) and its in-flight cap. It sets the RateLimit-* headers from the
// tighter of the limits, so every response to a known key carries them. On
// success the caller must call release when the request is done.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, key auth.Key, route string) (release func(), err error) {
	ctx := r.Context()
	checks := []struct {
		key  string
		rule ratelimit.Rule
	}{{"key:" + key.ID, s.keyRule(key)}}
	if rule, ok := s.cfg.Limits.Routes[route]; ok {
		checks = append(checks, struct {
			key  string
			rule ratelimit.Rule
		}{"route:" + route + ":" + key.ID, rule})
	}
	var tightest ratelimit.Decision
	for i, c := range checks {
		d, err := s.limiter.Allow(ctx, c.key, c.rule)
		if err != nil {
			return nil, httperr.Unavailable("rate limiting is unavailable, retry shortly", time.Second, err)
		}
		if i == 0 || !d.Allowed || (tightest.Allowed && d.Remaining < tightest.Remaining) {
			tightest = d
		}
		if !d.Allowed {
			break
		}
	}
	// Assigned directly under their canonical keys, as Set would store
	// them, without canonicalising the names on every request.
	h := w.Header()
	h["Ratelimit-Limit"] = []string{strconv.Itoa(tightest.Limit)}
	h["Ratelimit-Remaining"] = []string{strconv.Itoa(tightest.Remaining)}
	h["Ratelimit-Reset"] = []string{strconv.Itoa(ceilSeconds(tightest.Reset))}
	if !tightest.Allowed {
		s.metrics.RateLimitDecision("limited")
		return nil, httperr.New(http.StatusTooManyRequests, httperr.TypeRateLimited,
			"rate limit exceeded for this API key").
			WithHeader("Retry-After", strconv.Itoa(max(1, ceilSeconds(tightest.RetryAfter))))
	}
	maxInFlight := s.cfg.Limits.MaxInFlight
	if key.Limits.MaxInFlight > 0 {
		maxInFlight = key.Limits.MaxInFlight
	}
	release, ok := s.inFlight.Acquire(key.ID, maxInFlight)
	if !ok {
		s.metrics.RateLimitDecision("concurrency")
		return nil, httperr.New(http.StatusTooManyRequests, httperr.TypeRateLimited,
			"too many concurrent requests for this API key (at most "+strconv.Itoa(maxInFlight)+")").
			WithHeader("Retry-After", "1")
	}
	s.metrics.RateLimitDecision("allowed")
	return release, nil
}

func ceilSeconds(d time.Duration) int {
	return int(math.Ceil(d.Seconds()))
}
