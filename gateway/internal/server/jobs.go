package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"trine/gateway/internal/auth"
	"trine/gateway/internal/httperr"
	"trine/gateway/internal/jobs"
	"trine/gateway/internal/jsonbody"
	"trine/gateway/internal/requestid"
	"trine/gateway/internal/upstream"
)

// Job routes' patterns.
const (
	routeJobs         = "POST /v1/jobs"
	routeJob          = "GET /v1/jobs/{id}"
	routeJobOutcome   = "POST /internal/jobs/{id}/outcome"
	routeJobOutcomes  = "POST /internal/jobs/outcomes"
	validateOnly      = "X-Trine-Validate-Only"
	maxIdempotencyKey = 255
	// callbackTolerance is how far a callback's timestamp may be from now.
	callbackTolerance = 5 * time.Minute
	// minCallbackBody is the least body a callback may carry: results
	// (sandbox output above all) can exceed a client request's cap.
	minCallbackBody = 32 << 20
	// envelopeSlack is room for a job request's own fields around an
	// input of the synchronous route's size.
	envelopeSlack = 16 << 10
)

// registerJobs adds the job routes.
func (s *Server) registerJobs() {
	s.handle(routeJobs, s.enqueueJob)
	s.handle(routeJob, s.getJob)
	s.handle(routeJobOutcome, s.jobOutcome)
	s.handle(routeJobOutcomes, s.jobOutcomes)
}

// jobRequest is the body of POST /v1/jobs.
type jobRequest struct {
	Type       string          `json:"type"`
	Input      json.RawMessage `json:"input"`
	WebhookURL *string         `json:"webhook_url"`
}

func invalid(format string, args ...any) *httperr.Error {
	return httperr.New(http.StatusBadRequest, httperr.TypeInvalidRequest, fmt.Sprintf(format, args...))
}

// decodeStrict decodes one JSON value into v, refusing unknown fields and
// trailing data.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// isObject reports whether raw is a JSON object (already valid JSON).
func isObject(raw json.RawMessage) bool {
	t := bytes.TrimLeft(raw, " \t\r\n")
	return len(t) > 0 && t[0] == '{'
}

// parseJobRequest decodes and checks the body of POST /v1/jobs, all but
// the parts that need I/O.
func parseJobRequest(body []byte) (jobRequest, error) {
	var req jobRequest
	if err := decodeStrict(body, &req); err != nil {
		return req, httperr.Wrap(http.StatusBadRequest, httperr.TypeInvalidRequest,
			`the body must be {"type": ..., "input": {...}, "webhook_url": ...} with no other fields`, err)
	}
	known := false
	for _, t := range jobs.Types {
		known = known || req.Type == t
	}
	switch {
	case !known:
		return req, invalid("unknown job type %q: use one of %s", req.Type, strings.Join(jobs.Types, ", "))
	case !isObject(req.Input):
		return req, invalid(`"input" must be a JSON object: the body of the matching synchronous route`)
	case req.WebhookURL != nil && *req.WebhookURL == "":
		return req, invalid(`"webhook_url" must not be empty; leave it out for no webhook`)
	}
	return req, nil
}

// validIdempotencyKey: 1-255 printable ASCII characters.
func validIdempotencyKey(k string) bool {
	if len(k) == 0 || len(k) > maxIdempotencyKey {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// jobTarget is where a job's input is validated (and later run by a
// worker): the upstream, path and body of the synchronous call.
type jobTarget struct {
	pool    *upstream.Pool
	path    string
	body    []byte
	route   string // the synchronous route, for its body limit
	timeout time.Duration
}

// target checks the type-specific rules of an input and returns where it
// goes.
func (s *Server) target(typ string, input json.RawMessage) (jobTarget, error) {
	switch typ {
	case jobs.TypeRAGQuery:
		var opts struct {
			Stream *bool `json:"stream"`
		}
		if err := json.Unmarshal(input, &opts); err != nil {
			return jobTarget{}, httperr.Wrap(http.StatusBadRequest, httperr.TypeInvalidRequest, `"stream" must be a boolean`, err)
		}
		if opts.Stream != nil && *opts.Stream {
			return jobTarget{}, invalid(`a rag.query job cannot stream: remove "stream": true`)
		}
		return jobTarget{pool: s.ml, path: "/rag/query", body: input, route: "POST /v1/rag/query", timeout: s.cfg.RAGTimeout}, nil
	case jobs.TypeIngest:
		var in struct {
			Collection *string          `json:"collection"`
			Documents  *json.RawMessage `json:"documents"`
		}
		if err := decodeStrict(input, &in); err != nil || in.Collection == nil || in.Documents == nil {
			return jobTarget{}, httperr.Wrap(http.StatusBadRequest, httperr.TypeInvalidRequest,
				`an ingest input is {"collection": "<name>", "documents": [...]}`, err)
		}
		name, err := validCollection(*in.Collection)
		if err != nil {
			return jobTarget{}, err
		}
		body := append(append([]byte(`{"documents":`), *in.Documents...), '}')
		return jobTarget{pool: s.ml, path: "/collections/" + name + "/documents", body: body,
			route: "POST /v1/collections/{name}/documents", timeout: s.cfg.RAGTimeout}, nil
	default:
		return jobTarget{pool: s.sandbox, path: "/run", body: input, route: "POST /v1/sandbox/run", timeout: s.cfg.SandboxTimeout}, nil
	}
}

// jobsBodyLimit caps a job request: its own route limit if configured,
// else the largest synchronous route's limit plus room for the envelope.
// Each input is then held to its own route's limit.
func (s *Server) jobsBodyLimit() int64 {
	if n, ok := s.cfg.Limits.RouteMaxBody[routeJobs]; ok {
		return n
	}
	return max(s.bodyLimit("POST /v1/rag/query"), s.bodyLimit("POST /v1/sandbox/run"),
		s.bodyLimit("POST /v1/collections/{name}/documents")) + envelopeSlack
}

// enqueueJob is POST /v1/jobs: check everything, validate the input with
// the service that will run it, then queue it.
func (s *Server) enqueueJob(w http.ResponseWriter, r *http.Request) error {
	key, release, err := s.authorize(w, r, auth.ScopeJobs)
	if err != nil {
		return err
	}
	defer release()
	idem := r.Header.Get("Idempotency-Key")
	if _, sent := r.Header["Idempotency-Key"]; sent && !validIdempotencyKey(idem) {
		return invalid("Idempotency-Key must be 1-%d printable ASCII characters", maxIdempotencyKey)
	}
	body, err := jsonbody.Read(w, r, s.jobsBodyLimit())
	if err != nil {
		return err
	}
	req, err := parseJobRequest(body)
	if err != nil {
		return err
	}
	t, err := s.target(req.Type, req.Input)
	if err != nil {
		return err
	}
	if limit := s.bodyLimit(t.route); int64(len(req.Input)) > limit {
		return httperr.New(http.StatusRequestEntityTooLarge, httperr.TypePayloadTooLarge,
			"input exceeds "+strconv.FormatInt(limit, 10)+" bytes, the limit of "+t.route)
	}
	webhook := ""
	if req.WebhookURL != nil {
		webhook = *req.WebhookURL
		if len(key.WebhookSecret) == 0 {
			return invalid("webhook_url needs a webhook_secret on the API key to sign webhooks with; " +
				"ask the operator to add one (trine-gateway keys create makes keys with one)")
		}
		if err := s.jobsPolicy.Check(r.Context(), webhook); err != nil {
			var ue *jobs.URLError
			if errors.As(err, &ue) {
				return invalid("%s", ue.Msg)
			}
			return err
		}
	}
	if err := s.validateInput(r, t); err != nil {
		return err
	}
	job, existing, err := s.jobs.Enqueue(r.Context(), jobs.NewJob{Owner: key.ID, Type: req.Type, Input: req.Input,
		WebhookURL: webhook, IdempotencyKey: idem, MaxAttempts: s.cfg.Jobs.MaxAttempts,
		RequestID: requestid.FromContext(r.Context())})
	switch {
	case errors.Is(err, jobs.ErrIdempotencyMismatch):
		return invalid("Idempotency-Key reused with a different request")
	case err != nil:
		return queueUnavailable(err)
	}
	if !existing {
		s.metrics.JobEnqueued(job.Type)
		s.log.InfoContext(r.Context(), "job enqueued", "job_id", job.ID, "type", job.Type)
	}
	w.Header().Set("Location", "/v1/jobs/"+job.ID)
	return writeJSON(w, http.StatusAccepted, map[string]string{"id": job.ID, "status": job.Status})
}

func queueUnavailable(err error) error {
	return httperr.Unavailable("the job queue is unavailable, retry shortly", time.Second, err)
}

// validateInput asks the service that will run the job whether it would
// accept the input: 204 yes; a 4xx envelope is the client's error and
// passes through; anything else fails as a proxied call would.
func (s *Server) validateInput(r *http.Request, t jobTarget) error {
	ctx, cancel := context.WithTimeout(r.Context(), t.timeout)
	defer cancel()
	ex, err := s.proxy.Open(ctx, r, upstream.Call{Pool: t.pool, Path: t.path, Body: t.body, Timeout: t.timeout,
		Header: http.Header{validateOnly: {"1"}}}, nil)
	if err != nil {
		return err
	}
	if _, err := ex.ReadAll(r.Context(), 64<<10); err != nil {
		return err
	}
	if code := ex.Resp.StatusCode; code != http.StatusNoContent {
		return httperr.Wrap(http.StatusBadGateway, httperr.TypeUpstreamError, "the upstream service failed",
			fmt.Errorf("%s answered %d to a validate-only call, want 204 (does it support %s?)", ex.Target.Name, code, validateOnly))
	}
	return nil
}

// getJob is GET /v1/jobs/{id}: the caller's own job only.
func (s *Server) getJob(w http.ResponseWriter, r *http.Request) error {
	key, release, err := s.authorize(w, r, auth.ScopeJobs)
	if err != nil {
		return err
	}
	defer release()
	id := r.PathValue("id")
	if !jobs.ValidID(id) {
		return httperr.New(http.StatusNotFound, httperr.TypeNotFound, "no such job")
	}
	job, err := s.jobs.Get(r.Context(), key.ID, id)
	switch {
	case errors.Is(err, jobs.ErrNotFound):
		return httperr.New(http.StatusNotFound, httperr.TypeNotFound, "no such job")
	case err != nil:
		return queueUnavailable(err)
	}
	return writeJSON(w, http.StatusOK, job.Public())
}
