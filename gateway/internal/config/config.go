// Package config loads the gateway's settings once at start-up: defaults,
// then an optional JSON file, then environment variables, each overriding the
// last. Everything is validated before the server starts, and this is the
// only package that reads the environment.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"trine/gateway/internal/auth"
)

// MinTokenLen is the shortest internal token accepted (api/README.md).
const MinTokenLen = 16

// Config is the validated configuration.
type Config struct {
	// Addr is the host:port the public listener binds.
	Addr string
	// MLURLs are the base URLs of the ML replicas, named ml-0, ml-1, ... in order.
	MLURLs []*url.URL
	// SandboxURL is the base URL of the sandbox service.
	SandboxURL *url.URL
	// InternalToken is sent upstream as X-Trine-Internal-Token.
	InternalToken string
	// KeysFile is the path the API keys were read from.
	KeysFile string
	// Keys are the API keys parsed from KeysFile.
	Keys []auth.Key
	// MaxBodyBytes caps request bodies; larger ones get 413.
	MaxBodyBytes int64
	// RAGTimeout bounds a whole RAG call, streaming included.
	RAGTimeout time.Duration
	// SandboxTimeout bounds a whole sandbox call.
	SandboxTimeout time.Duration
	// HealthInterval is the time between active health checks.
	HealthInterval time.Duration
	// LogLevel is the minimum level logged.
	LogLevel slog.Level
	// Limits are the rate, concurrency and body limits.
	Limits Limits
	// Upstream tunes timeouts, ejection and hedging of upstream calls.
	Upstream Upstream
	// TLS, when set, makes the public listener serve HTTPS.
	TLS TLS
	// Jobs configures the async job queue.
	Jobs Jobs
}

// LogValue describes the configuration for the start-up log line, leaving
// out the internal token.
func (c *Config) LogValue() slog.Value {
	ml := make([]string, len(c.MLURLs))
	for i, u := range c.MLURLs {
		ml[i] = u.String()
	}
	return slog.GroupValue(
		slog.String("addr", c.Addr),
		slog.Any("ml_urls", ml),
		slog.String("sandbox_url", c.SandboxURL.String()),
		slog.String("keys_file", c.KeysFile),
		slog.Int("keys", len(c.Keys)),
		slog.Int64("max_body_bytes", c.MaxBodyBytes),
		slog.String("rag_timeout", c.RAGTimeout.String()),
		slog.String("sandbox_timeout", c.SandboxTimeout.String()),
		slog.String("health_interval", c.HealthInterval.String()),
		slog.String("log_level", c.LogLevel.String()),
		slog.Float64("rate_per_second", c.Limits.Default.Rate),
		slog.Int("burst", c.Limits.Default.Burst),
		slog.Int("max_in_flight", c.Limits.MaxInFlight),
		slog.Bool("redis", c.Limits.RedisURL != nil),
		slog.String("ratelimit_failure_mode", string(c.Limits.FailureMode)),
		slog.Bool("tls", c.TLS.CertFile != ""),
		slog.String("jobs_backend", c.Jobs.Backend),
		slog.String("jobs_sqlite_path", c.Jobs.SQLitePath),
		slog.Int("jobs_max_attempts", c.Jobs.MaxAttempts),
		slog.Bool("jobs_webhook_allow_private", c.Jobs.WebhookAllowPrivate),
		slog.Bool("jobs_webhook_allow_http", c.Jobs.WebhookAllowHTTP),
	)
}

// raw holds settings as written in the JSON file, before validation. The
// field names are the file's keys.
type raw struct {
	Addr           string   `json:"addr"`
	MLURLs         []string `json:"ml_urls"`
	SandboxURL     string   `json:"sandbox_url"`
	InternalToken  string   `json:"internal_token"`
	KeysFile       string   `json:"keys_file"`
	MaxBodyBytes   int64    `json:"max_body_bytes"`
	RAGTimeout     string   `json:"rag_timeout"`
	SandboxTimeout string   `json:"sandbox_timeout"`
	HealthInterval string   `json:"health_interval"`
	LogLevel       string   `json:"log_level"`
	Jobs           rawJobs  `json:"jobs"`
	rawGovernance
}

func defaults() raw {
	return raw{
		Addr:           "127.0.0.1:8080",
		MLURLs:         []string{"http://127.0.0.1:8101"},
		SandboxURL:     "http://127.0.0.1:8200",
		MaxBodyBytes:   10 << 20,
		RAGTimeout:     "60s",
		SandboxTimeout: "60s",
		HealthInterval: "2s",
		LogLevel:       "info",
		Jobs:           defaultJobs(),
		rawGovernance:  defaultGovernance(),
	}
}

// LoadFromOS is Load with the process's environment.
func LoadFromOS(args []string) (*Config, error) {
	return Load(args, os.LookupEnv)
}

// Load builds the configuration from command-line args (without the program
// name), an optional JSON file and the environment as seen through lookupEnv.
// All problems found are returned together. For -h it returns flag.ErrHelp,
// and the caller prints Usage.
func Load(args []string, lookupEnv func(string) (string, bool)) (*Config, error) {
	fs := flag.NewFlagSet("trine-gateway", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	path := fs.String("config", "", "path of a JSON config file (also TRINE_GATEWAY_CONFIG)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if *path == "" {
		*path, _ = lookupEnv("TRINE_GATEWAY_CONFIG")
	}

	r := defaults()
	if *path != "" {
		if err := r.readFile(*path); err != nil {
			return nil, err
		}
	}
	envErrs := r.applyEnv(lookupEnv)
	cfg, err := r.validate()
	if err := errors.Join(append(envErrs, err)...); err != nil {
		return nil, err
	}
	return cfg, nil
}

func (r *raw) readFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	// A misspelt key would otherwise be ignored and its default used.
	dec.DisallowUnknownFields()
	if err := dec.Decode(r); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

// applyEnv overrides r with every environment variable that is set and
// non-empty, returning the values it could not parse.
func (r *raw) applyEnv(lookupEnv func(string) (string, bool)) []error {
	get := func(name string) (string, bool) {
		v, ok := lookupEnv(name)
		v = strings.TrimSpace(v)
		return v, ok && v != ""
	}
	strs := []struct {
		name string
		dst  *string
	}{
		{"TRINE_GATEWAY_ADDR", &r.Addr},
		{"TRINE_SANDBOX_URL", &r.SandboxURL},
		{"TRINE_INTERNAL_TOKEN", &r.InternalToken},
		{"TRINE_KEYS_FILE", &r.KeysFile},
		{"TRINE_RAG_TIMEOUT", &r.RAGTimeout},
		{"TRINE_SANDBOX_TIMEOUT", &r.SandboxTimeout},
		{"TRINE_HEALTH_INTERVAL", &r.HealthInterval},
		{"TRINE_LOG_LEVEL", &r.LogLevel},
	}
	for _, s := range strs {
		if v, ok := get(s.name); ok {
			*s.dst = v
		}
	}
	if v, ok := get("TRINE_ML_URLS"); ok {
		r.MLURLs = strings.Split(v, ",")
	}
	var errs []error
	if v, ok := get("TRINE_MAX_BODY_BYTES"); ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("TRINE_MAX_BODY_BYTES: %q is not an integer", v))
		} else {
			r.MaxBodyBytes = n
		}
	}
	errs = append(errs, r.Jobs.applyEnv(get)...)
	return append(errs, r.rawGovernance.applyEnv(get)...)
}

func (r *raw) validate() (*Config, error) {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	c := &Config{Addr: r.Addr, InternalToken: r.InternalToken, KeysFile: r.KeysFile, MaxBodyBytes: r.MaxBodyBytes}

	if _, _, err := net.SplitHostPort(r.Addr); err != nil {
		fail("TRINE_GATEWAY_ADDR (addr): %q is not host:port", r.Addr)
	}
	if len(r.MLURLs) == 0 {
		fail("TRINE_ML_URLS (ml_urls): at least one ML replica URL is required")
	}
	for i, s := range r.MLURLs {
		u, err := parseBaseURL(s)
		if err != nil {
			fail("TRINE_ML_URLS (ml_urls) entry %d: %v", i, err)
			continue
		}
		c.MLURLs = append(c.MLURLs, u)
	}
	u, err := parseBaseURL(r.SandboxURL)
	if err != nil {
		fail("TRINE_SANDBOX_URL (sandbox_url): %v", err)
	}
	c.SandboxURL = u

	if len(r.InternalToken) < MinTokenLen {
		fail("TRINE_INTERNAL_TOKEN (internal_token): required, at least %d characters", MinTokenLen)
	}
	if r.KeysFile == "" {
		fail("TRINE_KEYS_FILE (keys_file): required (path of the API keys JSON file)")
	} else if data, err := os.ReadFile(r.KeysFile); err != nil {
		fail("TRINE_KEYS_FILE (keys_file): %v", err)
	} else if c.Keys, err = auth.ParseKeys(data); err != nil {
		fail("TRINE_KEYS_FILE (keys_file) %s: %v", r.KeysFile, err)
	}
	if r.MaxBodyBytes <= 0 {
		fail("TRINE_MAX_BODY_BYTES (max_body_bytes): must be positive, got %d", r.MaxBodyBytes)
	}

	durations := []struct {
		name, value string
		dst         *time.Duration
	}{
		{"TRINE_RAG_TIMEOUT (rag_timeout)", r.RAGTimeout, &c.RAGTimeout},
		{"TRINE_SANDBOX_TIMEOUT (sandbox_timeout)", r.SandboxTimeout, &c.SandboxTimeout},
		{"TRINE_HEALTH_INTERVAL (health_interval)", r.HealthInterval, &c.HealthInterval},
	}
	for _, d := range durations {
		v, err := time.ParseDuration(d.value)
		if err != nil || v <= 0 {
			fail("%s: %q is not a positive Go duration such as 60s or 500ms", d.name, d.value)
			continue
		}
		*d.dst = v
	}
	if err := c.LogLevel.UnmarshalText([]byte(r.LogLevel)); err != nil {
		fail("TRINE_LOG_LEVEL (log_level): %q is not one of debug, info, warn, error", r.LogLevel)
	}
	r.rawGovernance.validate(c, fail)
	r.Jobs.validate(c, fail)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// parseBaseURL accepts an absolute http(s) URL without query, fragment or
// credentials, and drops a trailing slash so paths can be appended.
func parseBaseURL(s string) (*url.URL, error) {
	s = strings.TrimSpace(s)
	u, err := url.Parse(s)
	switch {
	case err != nil || s == "":
		return nil, fmt.Errorf("%q is not a URL", s)
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("%q: scheme must be http or https", s)
	case u.Host == "":
		return nil, fmt.Errorf("%q: missing host", s)
	case u.User != nil:
		return nil, fmt.Errorf("%q: credentials in the URL are not supported", s)
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return nil, fmt.Errorf("%q: a base URL cannot have a query or fragment", s)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// Usage is printed for -h.
const Usage = `usage:
  trine-gateway [-config PATH]   run the gateway
  trine-gateway hash-key         read an API key on stdin, print its sha256 for the keys file

Settings (defaults, then the JSON file, then the environment):
  TRINE_GATEWAY_CONFIG  / -config   JSON file with the keys below in snake_case
  TRINE_GATEWAY_ADDR    addr             default 127.0.0.1:8080
  TRINE_ML_URLS         ml_urls          comma-separated (file: array); default http://127.0.0.1:8101
  TRINE_SANDBOX_URL     sandbox_url      default http://127.0.0.1:8200
  TRINE_INTERNAL_TOKEN  internal_token   required, at least 16 characters
  TRINE_KEYS_FILE       keys_file        required, {"keys":[{"id","sha256","scopes"}]}
  TRINE_MAX_BODY_BYTES  max_body_bytes   default 10485760
  TRINE_RAG_TIMEOUT     rag_timeout      default 60s
  TRINE_SANDBOX_TIMEOUT sandbox_timeout  default 60s
  TRINE_HEALTH_INTERVAL health_interval  default 2s
  TRINE_LOG_LEVEL       log_level        debug, info, warn or error; default info
  TRINE_RATE_PER_SECOND rate_per_second  default per-key rate, default 50
  TRINE_RATE_BURST      burst            default per-key burst, default 100
  TRINE_MAX_IN_FLIGHT   max_in_flight    default per-key concurrent requests, default 64
  (file only)           route_limits     {"POST /v1/sandbox/run": {"rate_per_second": 5, "burst": 10}}
  (file only)           route_max_body_bytes  {"POST /v1/rag/query": 1048576}
  REDIS_URL             redis_url        redis://host:port/db: share rate limits across replicas
  TRINE_RATELIMIT_FAILURE_MODE ratelimit_failure_mode  open (default) or closed, when Redis fails
  TRINE_CONNECT_TIMEOUT connect_timeout  default 2s
  TRINE_RAG_FIRST_BYTE_TIMEOUT / TRINE_SANDBOX_FIRST_BYTE_TIMEOUT  default 60s
  TRINE_EJECT_AFTER     eject_after      consecutive failures that eject a replica, default 5
  TRINE_EJECT_FOR       eject_for        default 10s, then probe requests (half-open)
  TRINE_HEDGE_DELAY     hedge_delay      auto (p95 of recent RAG latency) or a duration
  TRINE_HEDGE_MIN_DELAY hedge_min_delay  floor of the automatic hedge delay, default 20ms
  TRINE_TLS_CERT, TRINE_TLS_KEY  tls_cert, tls_key  PEM files; both set → HTTPS
  TRINE_JOBS_BACKEND    jobs.backend     sqlite or redis; default redis when REDIS_URL is set
  TRINE_JOBS_SQLITE_PATH jobs.sqlite_path default data/jobs.sqlite3 (shared with the workers)
  TRINE_JOBS_MAX_ATTEMPTS jobs.max_attempts  claims per job before it fails, default 5
  TRINE_JOBS_WEBHOOK_INITIAL_BACKOFF / _MAX_BACKOFF / _RETRY_WINDOW  default 5s / 15m / 24h
  TRINE_JOBS_WEBHOOK_ALLOW_PRIVATE jobs.webhook_allow_private  default false
  TRINE_JOBS_WEBHOOK_ALLOW_HTTP    jobs.webhook_allow_http     default false
`
