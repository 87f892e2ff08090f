package httperr

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"trine/gateway/internal/requestid"
)

func TestWrite(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		wantCode int
		wantBody string // "" means nothing written
		wantHdr  [2]string
	}{
		{"typed error", New(403, TypeForbidden, "no"), 403,
			`{"error":{"type":"forbidden","message":"no","request_id":"rid"}}`, [2]string{}},
		{"cause stays out of the body", Wrap(502, TypeUpstreamError, "upstream failed", errors.New("secret detail")), 502,
			`{"error":{"type":"upstream_error","message":"upstream failed","request_id":"rid"}}`, [2]string{}},
		{"wrapped typed error", errors.Join(errors.New("ctx"), New(404, TypeNotFound, "gone")), 404,
			`{"error":{"type":"not_found","message":"gone","request_id":"rid"}}`, [2]string{}},
		{"plain error hides its text", errors.New("secret detail"), 500,
			`{"error":{"type":"internal_error","message":"internal error","request_id":"rid"}}`, [2]string{}},
		{"retry after", Unavailable("busy", 1500e6, nil), 503,
			`{"error":{"type":"unavailable","message":"busy","request_id":"rid"}}`, [2]string{"Retry-After", "2"}},
		{"client closed writes nothing", ClientClosed(context.Canceled), 200, "", [2]string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			log := slog.New(requestid.NewLogHandler(slog.NewJSONHandler(&logs, nil)))
			r := httptest.NewRequest("GET", "/", nil)
			r = r.WithContext(requestid.WithID(r.Context(), "rid"))
			w := httptest.NewRecorder()
			Write(w, r, log, tc.err)
			if w.Code != tc.wantCode || strings.TrimSpace(w.Body.String()) != tc.wantBody {
				t.Errorf("got %d %s", w.Code, w.Body.String())
			}
			if tc.wantHdr[0] != "" && w.Header().Get(tc.wantHdr[0]) != tc.wantHdr[1] {
				t.Errorf("%s = %q", tc.wantHdr[0], w.Header().Get(tc.wantHdr[0]))
			}
			if !strings.Contains(logs.String(), `"request_id":"rid"`) {
				t.Errorf("failure not logged with the request ID: %s", logs.String())
			}
		})
	}
}
