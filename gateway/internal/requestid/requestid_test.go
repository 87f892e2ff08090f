package requestid

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// reference is the documented rule; Valid is a hand-written equivalent.
var reference = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

func TestValid(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"abc", true},
		{"A-b_c.d:e", true},
		{strings.Repeat("x", 128), true},
		{"", false},
		{strings.Repeat("x", 129), false},
		{"has space", false},
		{"new\nline", false},
		{`quote"`, false},
		{"ünï", false},
		{"slash/", false},
	}
	for _, tc := range tests {
		t.Run(tc.id, func(t *testing.T) {
			if got := Valid(tc.id); got != tc.want {
				t.Errorf("Valid(%q) = %v, want %v", tc.id, got, tc.want)
			}
		})
	}
}

func TestNewIsValidAndUnique(t *testing.T) {
	a, b := New(), New()
	if !Valid(a) || len(a) != 32 || a == b {
		t.Errorf("New gave %q and %q", a, b)
	}
}

func FuzzSanitize(f *testing.F) {
	for _, seed := range []string{"", "abc", "a b", strings.Repeat("z", 129), "x\x00y", "é", "a:b.c-d_e"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if Valid(id) != reference.MatchString(id) {
			t.Fatalf("Valid(%q) = %v disagrees with the documented pattern", id, Valid(id))
		}
		got := Sanitize(id)
		if !Valid(got) {
			t.Fatalf("Sanitize(%q) = %q is not valid", id, got)
		}
		if Valid(id) && got != id {
			t.Fatalf("Sanitize(%q) replaced a valid ID with %q", id, got)
		}
	})
}

func TestMiddleware(t *testing.T) {
	tests := []struct {
		name, sent string
		keep       bool
	}{
		{"keeps sane", "rid-1", true},
		{"replaces bad", "bad id", false},
		{"generates missing", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var inCtx, inHeader string
			h := Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				inCtx, inHeader = FromContext(r.Context()), r.Header.Get(Header)
			}))
			r := httptest.NewRequest("GET", "/", nil)
			if tc.sent != "" {
				r.Header.Set(Header, tc.sent)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			got := w.Header().Get(Header)
			if tc.keep && got != tc.sent || !tc.keep && (got == tc.sent || !Valid(got)) {
				t.Errorf("response ID %q for sent %q", got, tc.sent)
			}
			if inCtx != got || inHeader != got {
				t.Errorf("context %q, request header %q, response %q", inCtx, inHeader, got)
			}
		})
	}
}

func TestLogHandlerAddsRequestID(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(NewLogHandler(slog.NewJSONHandler(&buf, nil))).With("svc", "gw").WithGroup("g")
	log.InfoContext(WithID(context.Background(), "rid-9"), "hello", "k", "v")
	log.InfoContext(context.Background(), "no id")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"request_id":"rid-9"`) || strings.Contains(lines[1], "request_id") {
		t.Errorf("log output:\n%s", buf.String())
	}
}
