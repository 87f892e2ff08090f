package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Job queue backends.
const (
	JobsBackendSQLite = "sqlite"
	JobsBackendRedis  = "redis"
)

// Jobs configures the async job queue (api/jobs.md).
type Jobs struct {
	// Backend is JobsBackendRedis when REDIS_URL is set (unless
	// TRINE_JOBS_BACKEND=sqlite), else JobsBackendSQLite.
	Backend string
	// SQLitePath is the queue database shared with the workers.
	SQLitePath string
	// MaxAttempts is stored on each job: claims allowed before it fails.
	MaxAttempts int
	// WebhookInitialBackoff, WebhookMaxBackoff and WebhookRetryWindow
	// shape webhook retries: exponential with full jitter, capped, given
	// up after the window.
	WebhookInitialBackoff, WebhookMaxBackoff, WebhookRetryWindow time.Duration
	// Retention is how long a finished job is kept (counted from when it
	// finished) before the reaper removes it, with its webhook delivery
	// once that is no longer pending.
	Retention time.Duration
	// IdempotencyRetention is how long an Idempotency-Key is remembered
	// (from the enqueue); after it, the key may be used again.
	IdempotencyRetention time.Duration
	// WebhookAllowPrivate lets webhooks reach loopback, link-local and
	// private addresses (development only).
	WebhookAllowPrivate bool
	// WebhookAllowHTTP admits http:// webhook URLs besides https://.
	WebhookAllowHTTP bool
}

// rawJobs is the file's "jobs" object.
type rawJobs struct {
	Backend               string `json:"backend"`
	SQLitePath            string `json:"sqlite_path"`
	MaxAttempts           int    `json:"max_attempts"`
	WebhookInitialBackoff string `json:"webhook_initial_backoff"`
	WebhookMaxBackoff     string `json:"webhook_max_backoff"`
	WebhookRetryWindow    string `json:"webhook_retry_window"`
	Retention             string `json:"retention"`
	IdempotencyRetention  string `json:"idempotency_retention"`
	WebhookAllowPrivate   bool   `json:"webhook_allow_private"`
	WebhookAllowHTTP      bool   `json:"webhook_allow_http"`
}

func defaultJobs() rawJobs {
	return rawJobs{
		SQLitePath:            "data/jobs.sqlite3",
		MaxAttempts:           5,
		WebhookInitialBackoff: "5s",
		WebhookMaxBackoff:     "15m",
		WebhookRetryWindow:    "24h",
		Retention:             "168h",
		IdempotencyRetention:  "24h",
	}
}

// applyEnv overrides j from the environment, returning unparsable values.
func (j *rawJobs) applyEnv(get func(string) (string, bool)) []error {
	for name, dst := range map[string]*string{
		"TRINE_JOBS_BACKEND":                 &j.Backend,
		"TRINE_JOBS_SQLITE_PATH":             &j.SQLitePath,
		"TRINE_JOBS_WEBHOOK_INITIAL_BACKOFF": &j.WebhookInitialBackoff,
		"TRINE_JOBS_WEBHOOK_MAX_BACKOFF":     &j.WebhookMaxBackoff,
		"TRINE_JOBS_WEBHOOK_RETRY_WINDOW":    &j.WebhookRetryWindow,
		"TRINE_JOBS_RETENTION":               &j.Retention,
		"TRINE_JOBS_IDEMPOTENCY_RETENTION":   &j.IdempotencyRetention,
	} {
		if v, ok := get(name); ok {
			*dst = v
		}
	}
	var errs []error
	if v, ok := get("TRINE_JOBS_MAX_ATTEMPTS"); ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("TRINE_JOBS_MAX_ATTEMPTS: %q is not an integer", v))
		} else {
			j.MaxAttempts = n
		}
	}
	for name, dst := range map[string]*bool{
		"TRINE_JOBS_WEBHOOK_ALLOW_PRIVATE": &j.WebhookAllowPrivate,
		"TRINE_JOBS_WEBHOOK_ALLOW_HTTP":    &j.WebhookAllowHTTP,
	} {
		if v, ok := get(name); ok {
			b, err := strconv.ParseBool(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %q is not true or false", name, v))
				continue
			}
			*dst = b
		}
	}
	return errs
}

// validate fills c.Jobs from j; it runs after the governance settings, so
// c.Limits.RedisURL is known.
func (j *rawJobs) validate(c *Config, fail func(string, ...any)) {
	c.Jobs = Jobs{SQLitePath: j.SQLitePath, MaxAttempts: j.MaxAttempts,
		WebhookAllowPrivate: j.WebhookAllowPrivate, WebhookAllowHTTP: j.WebhookAllowHTTP}
	switch b := strings.ToLower(j.Backend); b {
	case "":
		c.Jobs.Backend = JobsBackendSQLite
		if c.Limits.RedisURL != nil {
			c.Jobs.Backend = JobsBackendRedis
		}
	case JobsBackendSQLite:
		c.Jobs.Backend = b
	case JobsBackendRedis:
		c.Jobs.Backend = b
		if c.Limits.RedisURL == nil {
			fail("TRINE_JOBS_BACKEND (jobs.backend): redis needs REDIS_URL")
		}
	default:
		fail("TRINE_JOBS_BACKEND (jobs.backend): %q is not sqlite or redis", j.Backend)
	}
	if c.Jobs.Backend == JobsBackendSQLite && strings.TrimSpace(j.SQLitePath) == "" {
		fail("TRINE_JOBS_SQLITE_PATH (jobs.sqlite_path): must not be empty")
	}
	if j.MaxAttempts < 1 {
		fail("TRINE_JOBS_MAX_ATTEMPTS (jobs.max_attempts): must be >= 1, got %d", j.MaxAttempts)
	}
	durations := []struct {
		name, value string
		dst         *time.Duration
	}{
		{"TRINE_JOBS_WEBHOOK_INITIAL_BACKOFF (jobs.webhook_initial_backoff)", j.WebhookInitialBackoff, &c.Jobs.WebhookInitialBackoff},
		{"TRINE_JOBS_WEBHOOK_MAX_BACKOFF (jobs.webhook_max_backoff)", j.WebhookMaxBackoff, &c.Jobs.WebhookMaxBackoff},
		{"TRINE_JOBS_WEBHOOK_RETRY_WINDOW (jobs.webhook_retry_window)", j.WebhookRetryWindow, &c.Jobs.WebhookRetryWindow},
		{"TRINE_JOBS_RETENTION (jobs.retention)", j.Retention, &c.Jobs.Retention},
		{"TRINE_JOBS_IDEMPOTENCY_RETENTION (jobs.idempotency_retention)", j.IdempotencyRetention, &c.Jobs.IdempotencyRetention},
	}
	for _, d := range durations {
		v, err := time.ParseDuration(d.value)
		if err != nil || v <= 0 {
			fail("%s: %q is not a positive Go duration such as 5s or 15m", d.name, d.value)
			continue
		}
		*d.dst = v
	}
	if c.Jobs.WebhookInitialBackoff > 0 && c.Jobs.WebhookMaxBackoff > 0 && c.Jobs.WebhookInitialBackoff > c.Jobs.WebhookMaxBackoff {
		fail("jobs.webhook_initial_backoff (%v) must not exceed jobs.webhook_max_backoff (%v)",
			c.Jobs.WebhookInitialBackoff, c.Jobs.WebhookMaxBackoff)
	}
}
