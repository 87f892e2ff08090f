package jsonbody

import (
	"net/http/httptest"
	"strings"
	"testing"

	"trine/gateway/internal/httperr"
)

func TestRead(t *testing.T) {
	tests := []struct {
		name, contentType, body string
		wantCode                int // 0 means accepted
	}{
		{"object", "application/json", `{"a":1}`, 0},
		{"object with charset", "application/json; charset=utf-8", ` {"a":[1,2]} `, 0},
		{"case-insensitive type", "Application/JSON", `{}`, 0},
		{"exactly at the limit", "application/json", `{"x":"` + strings.Repeat("a", 10) + `"}`, 0},
		{"over the limit", "application/json", `{"x":"` + strings.Repeat("a", 11) + `"}`, 413},
		{"missing type", "", `{}`, 415},
		{"json suffix type", "application/problem+json", `{}`, 415},
		{"malformed type", "application/json; =", `{}`, 415},
		{"empty body", "application/json", ``, 400},
		{"array", "application/json", `[]`, 400},
		{"string", "application/json", `"x"`, 400},
		{"two objects", "application/json", `{}{}`, 400},
		{"truncated", "application/json", `{"a":`, 400},
	}
	const limit = 18 // len(`{"x":"aaaaaaaaaa"}`)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/", strings.NewReader(tc.body))
			if tc.contentType != "" {
				r.Header.Set("Content-Type", tc.contentType)
			}
			data, err := Read(httptest.NewRecorder(), r, limit)
			code := 0
			if err != nil {
				code = httperr.As(err).Code
			}
			if code != tc.wantCode {
				t.Fatalf("code %d, want %d (%v)", code, tc.wantCode, err)
			}
			if code == 0 && string(data) != tc.body {
				t.Errorf("body changed: %q", data)
			}
		})
	}
}
