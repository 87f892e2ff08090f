package main

import (
	"bytes"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestLoadSecretFiles(t *testing.T) {
	files := map[string]string{
		"/run/secrets/token": "0123456789abcdef\n",
		"/run/secrets/db":    "postgresql://trine:pw@postgres/trine",
		"/run/secrets/empty": "\n",
	}
	read := func(p string) ([]byte, error) {
		if v, ok := files[p]; ok {
			return []byte(v), nil
		}
		return nil, fs.ErrNotExist
	}
	tests := []struct {
		name    string
		env     map[string]string
		want    map[string]string
		wantErr bool
	}{
		{
			name: "reads each secret file and drops the trailing newline",
			env: map[string]string{
				"TRINE_INTERNAL_TOKEN_FILE": "/run/secrets/token",
				"DATABASE_URL_FILE":         "/run/secrets/db",
			},
			want: map[string]string{
				"TRINE_INTERNAL_TOKEN": "0123456789abcdef",
				"DATABASE_URL":         "postgresql://trine:pw@postgres/trine",
			},
		},
		{
			name: "leaves file-path settings alone",
			env:  map[string]string{"TRINE_KEYS_FILE": "/run/secrets/token"},
			want: map[string]string{},
		},
		{
			name:    "refuses both forms at once",
			env:     map[string]string{"REDIS_URL": "redis://r", "REDIS_URL_FILE": "/run/secrets/db"},
			wantErr: true,
		},
		{
			name:    "a missing file is an error",
			env:     map[string]string{"ANTHROPIC_API_KEY_FILE": "/nope"},
			wantErr: true,
		},
		{
			name:    "an empty file is an error",
			env:     map[string]string{"TRINE_INTERNAL_TOKEN_FILE": "/run/secrets/empty"},
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := map[string]string{}
			lookup := func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }
			set := func(k, v string) error { got[k] = v; return nil }
			err := loadSecretFiles(lookup, set, read)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if len(got) != len(tt.want) {
				t.Fatalf("set %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
		})
	}
}

func TestProbe(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	if err := probe(srv.URL+"/healthz", time.Second); err != nil {
		t.Errorf("healthy: %v", err)
	}
	if err := probe(srv.URL+"/readyz", time.Second); err == nil {
		t.Error("503 should fail the probe")
	}
	srv.Close()
	if err := probe(srv.URL+"/healthz", time.Second); err == nil {
		t.Error("a closed server should fail the probe")
	}
}

func TestRunUsage(t *testing.T) {
	var stderr bytes.Buffer
	for _, args := range [][]string{nil, {"exec"}, {"exec", "--"}, {"bogus"}} {
		stderr.Reset()
		if code := run(args, &stderr); code != 2 {
			t.Errorf("run(%q) = %d, want 2", args, code)
		}
		if stderr.Len() == 0 {
			t.Errorf("run(%q) printed nothing", args)
		}
	}
	t.Setenv("TRINE_HEALTHCHECK_URL", "")
	if code := run([]string{"health"}, &stderr); code != 2 {
		t.Errorf("health without a URL = %d, want 2", code)
	}
}
