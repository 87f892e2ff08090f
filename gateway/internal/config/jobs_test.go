package config

import (
	"strings"
	"testing"
	"time"
)

func TestJobsDefaults(t *testing.T) {
	cfg, err := Load(nil, env(map[string]string{"TRINE_INTERNAL_TOKEN": goodToken, "TRINE_KEYS_FILE": keysFile(t)}))
	if err != nil {
		t.Fatal(err)
	}
	want := Jobs{Backend: JobsBackendSQLite, SQLitePath: "data/jobs.sqlite3", MaxAttempts: 5,
		WebhookInitialBackoff: 5 * time.Second, WebhookMaxBackoff: 15 * time.Minute, WebhookRetryWindow: 24 * time.Hour,
		Retention: 7 * 24 * time.Hour, IdempotencyRetention: 24 * time.Hour}
	if cfg.Jobs != want {
		t.Errorf("jobs %+v, want %+v", cfg.Jobs, want)
	}
}

func TestJobsFromFileAndEnv(t *testing.T) {
	file := writeFile(t, "gw.json", `{"jobs": {"max_attempts": 2, "webhook_initial_backoff": "1s",
		"webhook_allow_private": true, "sqlite_path": "/tmp/x.db", "retention": "72h"}}`)
	base := map[string]string{"TRINE_INTERNAL_TOKEN": goodToken, "TRINE_KEYS_FILE": keysFile(t)}
	cfg, err := Load([]string{"-config", file}, env(base))
	if err != nil {
		t.Fatal(err)
	}
	if j := cfg.Jobs; j.MaxAttempts != 2 || j.WebhookInitialBackoff != time.Second || !j.WebhookAllowPrivate ||
		j.WebhookAllowHTTP || j.SQLitePath != "/tmp/x.db" || j.Retention != 72*time.Hour {
		t.Errorf("from file: %+v", j)
	}
	base["TRINE_JOBS_MAX_ATTEMPTS"] = "7"
	base["TRINE_JOBS_WEBHOOK_ALLOW_HTTP"] = "true"
	base["TRINE_JOBS_WEBHOOK_ALLOW_PRIVATE"] = "false"
	base["TRINE_JOBS_WEBHOOK_RETRY_WINDOW"] = "30m"
	base["TRINE_JOBS_SQLITE_PATH"] = "q.db"
	base["TRINE_JOBS_RETENTION"] = "48h"
	base["TRINE_JOBS_IDEMPOTENCY_RETENTION"] = "1h"
	base["REDIS_URL"] = "redis://127.0.0.1:6379/0"
	cfg, err = Load([]string{"-config", file}, env(base))
	if err != nil {
		t.Fatal(err)
	}
	if j := cfg.Jobs; j.MaxAttempts != 7 || !j.WebhookAllowHTTP || j.WebhookAllowPrivate ||
		j.WebhookRetryWindow != 30*time.Minute || j.SQLitePath != "q.db" || j.Backend != JobsBackendRedis ||
		j.Retention != 48*time.Hour || j.IdempotencyRetention != time.Hour {
		t.Errorf("from env: %+v", j)
	}
	base["TRINE_JOBS_BACKEND"] = "sqlite"
	if cfg, err = Load(nil, env(base)); err != nil || cfg.Jobs.Backend != JobsBackendSQLite {
		t.Errorf("TRINE_JOBS_BACKEND=sqlite with REDIS_URL: %v %+v", err, cfg)
	}
}

func TestJobsInvalidReportedTogether(t *testing.T) {
	_, err := Load(nil, env(map[string]string{
		"TRINE_INTERNAL_TOKEN":               goodToken,
		"TRINE_KEYS_FILE":                    keysFile(t),
		"TRINE_JOBS_MAX_ATTEMPTS":            "0",
		"TRINE_JOBS_WEBHOOK_INITIAL_BACKOFF": "soon",
		"TRINE_JOBS_WEBHOOK_ALLOW_HTTP":      "perhaps",
		"TRINE_JOBS_BACKEND":                 "redis",
		"TRINE_JOBS_RETENTION":               "0s",
	}))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"TRINE_JOBS_MAX_ATTEMPTS", "TRINE_JOBS_WEBHOOK_INITIAL_BACKOFF",
		"TRINE_JOBS_WEBHOOK_ALLOW_HTTP", "redis needs REDIS_URL", "TRINE_JOBS_RETENTION"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s: %v", want, err)
		}
	}
}
