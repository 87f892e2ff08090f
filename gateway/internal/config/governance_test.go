package config

import (
	"strings"
	"testing"
	"time"

	"trine/gateway/internal/ratelimit"
)

func TestGovernanceDefaults(t *testing.T) {
	cfg, err := Load(nil, env(map[string]string{"TRINE_INTERNAL_TOKEN": goodToken, "TRINE_KEYS_FILE": keysFile(t)}))
	if err != nil {
		t.Fatal(err)
	}
	l, u := cfg.Limits, cfg.Upstream
	if l.Default != (ratelimit.Rule{Rate: 50, Burst: 100}) || l.MaxInFlight != 64 || l.RedisURL != nil ||
		l.FailureMode != ratelimit.FailOpen || u.ConnectTimeout != 2*time.Second || u.EjectAfter != 5 ||
		u.HedgeDelay != 0 || u.HedgeMinDelay != 20*time.Millisecond || cfg.TLS.CertFile != "" {
		t.Errorf("defaults: %+v %+v %+v", l, u, cfg.TLS)
	}
}

func TestGovernanceFromFileAndEnv(t *testing.T) {
	file := writeFile(t, "gw.json", `{
		"rate_per_second": 5, "burst": 7,
		"route_limits": {"POST /v1/sandbox/run": {"rate_per_second": 1, "burst": 2}},
		"route_max_body_bytes": {"POST /v1/rag/query": 1000},
		"hedge_delay": "80ms"
	}`)
	cfg, err := Load([]string{"-config", file}, env(map[string]string{
		"TRINE_INTERNAL_TOKEN":         goodToken,
		"TRINE_KEYS_FILE":              keysFile(t),
		"TRINE_RATE_BURST":             "9",
		"REDIS_URL":                    "redis://127.0.0.1:6379/2",
		"TRINE_RATELIMIT_FAILURE_MODE": "closed",
		"TRINE_EJECT_AFTER":            "2",
	}))
	if err != nil {
		t.Fatal(err)
	}
	l := cfg.Limits
	if l.Default != (ratelimit.Rule{Rate: 5, Burst: 9}) || l.Routes["POST /v1/sandbox/run"] != (ratelimit.Rule{Rate: 1, Burst: 2}) ||
		l.RouteMaxBody["POST /v1/rag/query"] != 1000 || l.RedisURL.Host != "127.0.0.1:6379" ||
		l.FailureMode != ratelimit.FailClosed || cfg.Upstream.EjectAfter != 2 || cfg.Upstream.HedgeDelay != 80*time.Millisecond {
		t.Errorf("got %+v %+v", l, cfg.Upstream)
	}
}

func TestGovernanceInvalid(t *testing.T) {
	tests := map[string]string{
		"TRINE_RATE_PER_SECOND":        "0",
		"TRINE_RATE_BURST":             "x",
		"TRINE_MAX_IN_FLIGHT":          "0",
		"REDIS_URL":                    "http://localhost:6379",
		"TRINE_RATELIMIT_FAILURE_MODE": "maybe",
		"TRINE_CONNECT_TIMEOUT":        "soon",
		"TRINE_EJECT_AFTER":            "0",
		"TRINE_HEDGE_DELAY":            "-1s",
		"TRINE_TLS_CERT":               "/only/the/cert.pem",
	}
	for name, value := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Load(nil, env(map[string]string{
				"TRINE_INTERNAL_TOKEN": goodToken, "TRINE_KEYS_FILE": keysFile(t), name: value,
			}))
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Errorf("error %v does not name %s", err, name)
			}
		})
	}
}

func TestTLSFilesChecked(t *testing.T) {
	_, err := Load(nil, env(map[string]string{
		"TRINE_INTERNAL_TOKEN": goodToken, "TRINE_KEYS_FILE": keysFile(t),
		"TRINE_TLS_CERT": writeFile(t, "c.pem", "not a cert"), "TRINE_TLS_KEY": writeFile(t, "k.pem", "not a key"),
	}))
	if err == nil || !strings.Contains(err.Error(), "TRINE_TLS_CERT") {
		t.Errorf("error %v", err)
	}
}
