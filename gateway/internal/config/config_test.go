package config

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"trine/gateway/internal/auth"
)

const goodToken = "0123456789abcdef"

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func keysFile(t *testing.T) string {
	return writeFile(t, "keys.json", `{"keys":[{"id":"dev","sha256":"`+auth.HashKey("k")+`","scopes":["rag"]}]}`)
}

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := Load(nil, env(map[string]string{
		"TRINE_INTERNAL_TOKEN": goodToken,
		"TRINE_KEYS_FILE":      keysFile(t),
	}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != "127.0.0.1:8080" || len(cfg.MLURLs) != 1 || cfg.MLURLs[0].String() != "http://127.0.0.1:8101" ||
		cfg.SandboxURL.String() != "http://127.0.0.1:8200" || cfg.MaxBodyBytes != 10485760 ||
		cfg.RAGTimeout != 60*time.Second || cfg.SandboxTimeout != 60*time.Second ||
		cfg.HealthInterval != 2*time.Second || cfg.LogLevel != slog.LevelInfo || len(cfg.Keys) != 1 {
		t.Errorf("defaults: %+v", cfg)
	}
}

func TestPrecedence(t *testing.T) {
	keys := keysFile(t)
	file := writeFile(t, "gw.json", `{
		"addr": "0.0.0.0:9000",
		"ml_urls": ["http://a:1/", "https://b:2/base/"],
		"internal_token": "from-the-file-0000",
		"keys_file": "`+keys+`",
		"rag_timeout": "5s",
		"log_level": "debug"
	}`)
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(t *testing.T, c *Config)
	}{
		{"file via flag", []string{"-config", file}, nil, func(t *testing.T, c *Config) {
			if c.Addr != "0.0.0.0:9000" || c.RAGTimeout != 5*time.Second || c.LogLevel != slog.LevelDebug ||
				c.InternalToken != "from-the-file-0000" || c.SandboxTimeout != 60*time.Second {
				t.Errorf("%+v", c)
			}
			if len(c.MLURLs) != 2 || c.MLURLs[0].String() != "http://a:1" || c.MLURLs[1].String() != "https://b:2/base" {
				t.Errorf("ML URLs %v", c.MLURLs)
			}
		}},
		{"file via env", nil, map[string]string{"TRINE_GATEWAY_CONFIG": file}, func(t *testing.T, c *Config) {
			if c.Addr != "0.0.0.0:9000" {
				t.Errorf("addr %s", c.Addr)
			}
		}},
		{"env beats file", []string{"-config", file}, map[string]string{
			"TRINE_GATEWAY_ADDR":   "127.0.0.1:7000",
			"TRINE_ML_URLS":        "http://x:1, http://y:2",
			"TRINE_RAG_TIMEOUT":    "1m30s",
			"TRINE_MAX_BODY_BYTES": "1024",
			"TRINE_LOG_LEVEL":      "",
		}, func(t *testing.T, c *Config) {
			if c.Addr != "127.0.0.1:7000" || c.RAGTimeout != 90*time.Second || c.MaxBodyBytes != 1024 ||
				len(c.MLURLs) != 2 || c.MLURLs[1].String() != "http://y:2" {
				t.Errorf("%+v", c)
			}
			if c.LogLevel != slog.LevelDebug {
				t.Error("an empty variable overrode the file")
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(tc.args, env(tc.env))
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestValidationErrors(t *testing.T) {
	keys := keysFile(t)
	base := func() map[string]string {
		return map[string]string{"TRINE_INTERNAL_TOKEN": goodToken, "TRINE_KEYS_FILE": keys}
	}
	tests := []struct {
		name    string
		args    []string
		set     map[string]string
		unset   string
		wantErr string
	}{
		{"missing token", nil, nil, "TRINE_INTERNAL_TOKEN", "TRINE_INTERNAL_TOKEN"},
		{"short token", nil, map[string]string{"TRINE_INTERNAL_TOKEN": "short"}, "", "at least 16"},
		{"missing keys file", nil, nil, "TRINE_KEYS_FILE", "TRINE_KEYS_FILE (keys_file): required"},
		{"keys file not found", nil, map[string]string{"TRINE_KEYS_FILE": "/nonexistent/keys.json"}, "", "no such file"},
		{"bad keys file", nil, map[string]string{"TRINE_KEYS_FILE": writeFile(t, "k.json", `{"keys":[]}`)}, "", "defines no keys"},
		{"ML URL without scheme", nil, map[string]string{"TRINE_ML_URLS": "127.0.0.1:8101"}, "", "TRINE_ML_URLS"},
		{"ML URL with ftp", nil, map[string]string{"TRINE_ML_URLS": "http://ok:1,ftp://x"}, "", "entry 1"},
		{"ML URL with query", nil, map[string]string{"TRINE_ML_URLS": "http://a:1/?x=1"}, "", "query"},
		{"empty ML entry", nil, map[string]string{"TRINE_ML_URLS": "http://a:1,"}, "", "entry 1"},
		{"bad sandbox URL", nil, map[string]string{"TRINE_SANDBOX_URL": "http://"}, "", "TRINE_SANDBOX_URL"},
		{"bad addr", nil, map[string]string{"TRINE_GATEWAY_ADDR": "8080"}, "", "TRINE_GATEWAY_ADDR"},
		{"bad duration", nil, map[string]string{"TRINE_RAG_TIMEOUT": "60"}, "", "TRINE_RAG_TIMEOUT"},
		{"negative duration", nil, map[string]string{"TRINE_HEALTH_INTERVAL": "-1s"}, "", "TRINE_HEALTH_INTERVAL"},
		{"bad body limit", nil, map[string]string{"TRINE_MAX_BODY_BYTES": "10MB"}, "", "TRINE_MAX_BODY_BYTES"},
		{"zero body limit", nil, map[string]string{"TRINE_MAX_BODY_BYTES": "0"}, "", "must be positive"},
		{"bad log level", nil, map[string]string{"TRINE_LOG_LEVEL": "loud"}, "", "TRINE_LOG_LEVEL"},
		{"missing config file", []string{"-config", "/nonexistent.json"}, nil, "", "config file"},
		{"unknown config field", []string{"-config", writeFile(t, "c.json", `{"adr":"x"}`)}, nil, "", `unknown field "adr"`},
		{"unknown flag", []string{"-port", "1"}, nil, "", "-port"},
		{"stray argument", []string{"serve"}, nil, "", "unexpected arguments"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := base()
			for k, v := range tc.set {
				e[k] = v
			}
			delete(e, tc.unset)
			cfg, err := Load(tc.args, env(e))
			if err == nil {
				t.Fatalf("accepted: %+v", cfg)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not mention %q", err, tc.wantErr)
			}
		})
	}
}

func TestAllProblemsReportedTogether(t *testing.T) {
	_, err := Load(nil, env(map[string]string{"TRINE_ML_URLS": "nope", "TRINE_RAG_TIMEOUT": "x"}))
	for _, want := range []string{"TRINE_ML_URLS", "TRINE_RAG_TIMEOUT", "TRINE_INTERNAL_TOKEN", "TRINE_KEYS_FILE"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %s", err, want)
		}
	}
}

func TestLogValueHidesToken(t *testing.T) {
	cfg, err := Load(nil, env(map[string]string{"TRINE_INTERNAL_TOKEN": "super-secret-token-1", "TRINE_KEYS_FILE": keysFile(t)}))
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	slog.New(slog.NewJSONHandler(&sb, nil)).Info("cfg", "config", cfg)
	if strings.Contains(sb.String(), "super-secret") || !strings.Contains(sb.String(), "127.0.0.1:8101") {
		t.Errorf("log: %s", sb.String())
	}
}
