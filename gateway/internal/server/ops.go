package server

import (
	"encoding/json"
	"net/http"

	"trine/gateway/internal/upstream"
)

// healthz answers while the process runs; it checks nothing else, so that
// an orchestrator does not restart the gateway for an upstream's fault.
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) error {
	return writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

type readiness struct {
	Status    string            `json:"status"`
	Upstreams []upstream.Status `json:"upstreams"`
}

// readyz is 200 when the gateway can serve its core routes: at least one ML
// replica and the sandbox are healthy. The body lists every upstream either
// way, which makes it the first place to look when requests fail.
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) error {
	body := readiness{Status: "ready"}
	for _, t := range append(s.ml.Targets(), s.sandbox.Targets()...) {
		body.Upstreams = append(body.Upstreams, t.Status())
	}
	code := http.StatusOK
	if !s.ml.AnyHealthy() || !s.sandbox.AnyHealthy() {
		body.Status = "not_ready"
		code = http.StatusServiceUnavailable
	}
	return writeJSON(w, code, body)
}

func writeJSON(w http.ResponseWriter, code int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	// After WriteHeader an error can only mean the client left; the
	// adapter must not try to write an envelope on top, so it is dropped.
	_ = json.NewEncoder(w).Encode(v)
	return nil
}
