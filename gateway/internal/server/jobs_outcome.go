package server

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"trine/gateway/internal/httperr"
	"trine/gateway/internal/jobs"
)

// outcomeRequest is a worker's callback body (api/jobs.md).
type outcomeRequest struct {
	LeaseToken string          `json:"lease_token"`
	Outcome    string          `json:"outcome"`
	Result     json.RawMessage `json:"result"`
	Error      json.RawMessage `json:"error"`
}

// jobError is the shape of a job's error.
type jobError struct {
	Type    *string `json:"type"`
	Message *string `json:"message"`
}

func isNull(raw json.RawMessage) bool { return len(raw) == 0 || string(raw) == "null" }

// parseOutcome checks a callback body and returns it as a store outcome.
func parseOutcome(body []byte) (jobs.Outcome, error) {
	var req outcomeRequest
	if err := decodeStrict(body, &req); err != nil {
		return jobs.Outcome{}, httperr.Wrap(http.StatusBadRequest, httperr.TypeInvalidRequest,
			`the body must be {"lease_token", "outcome", "result" | "error"}`, err)
	}
	return checkOutcome(req)
}

// checkOutcome checks a decoded callback and returns it as a store outcome.
func checkOutcome(req outcomeRequest) (jobs.Outcome, error) {
	o := jobs.Outcome{LeaseToken: req.LeaseToken, Kind: req.Outcome}
	if req.LeaseToken == "" {
		return o, invalid(`"lease_token" is required`)
	}
	switch req.Outcome {
	case jobs.OutcomeSucceeded:
		if !isObject(req.Result) || !isNull(req.Error) {
			return o, invalid(`"succeeded" needs a "result" object and no "error"`)
		}
		o.Result = req.Result
	case jobs.OutcomeFailed, jobs.OutcomeRetry:
		var e jobError
		if !isObject(req.Error) || json.Unmarshal(req.Error, &e) != nil || e.Type == nil || e.Message == nil ||
			*e.Type == "" || !isNull(req.Result) {
			return o, invalid(`%q needs an "error" object with "type" and "message" strings and no "result"`, req.Outcome)
		}
		o.Error = req.Error
	default:
		return o, invalid(`"outcome" must be succeeded, failed or retry`)
	}
	return o, nil
}

// callbackBodyLimit caps a callback body.
func (s *Server) callbackBodyLimit() int64 {
	return max(s.cfg.MaxBodyBytes, minCallbackBody)
}

// readCallback reads a callback's body and checks its signature.
func (s *Server) readCallback(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	// Any Content-Type is taken: the signature, not the header, vouches
	// for the body, and the body is decoded as JSON whatever it claims.
	limit := s.callbackBodyLimit()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return nil, httperr.New(http.StatusRequestEntityTooLarge, httperr.TypePayloadTooLarge,
			"callback body exceeds "+strconv.FormatInt(limit, 10)+" bytes")
	case err != nil:
		return nil, httperr.Wrap(http.StatusBadRequest, httperr.TypeInvalidRequest, "could not read the request body", err)
	}
	if err := jobs.Verify(r.Header, body, []byte(s.cfg.InternalToken), time.Now(), callbackTolerance); err != nil {
		return nil, httperr.Wrap(http.StatusUnauthorized, httperr.TypeUnauthorized,
			"the callback must carry a valid webhook-signature made with the internal token", err)
	}
	return body, nil
}

// Answers to a callback that the store refused.
var (
	errNoSuchJob       = httperr.New(http.StatusNotFound, httperr.TypeNotFound, "no such job")
	errOutcomeConflict = httperr.New(http.StatusConflict, httperr.TypeConflict,
		"the lease is not the job's current one, or the job already ended differently")
)

// completedError maps a store's per-item answer to the callback's.
func completedError(err error) *httperr.Error {
	if errors.Is(err, jobs.ErrNotFound) {
		return errNoSuchJob
	}
	return errOutcomeConflict
}

// outcomeApplied logs, counts and follows up an applied callback.
func (s *Server) outcomeApplied(r *http.Request, job jobs.Job, kind string) {
	s.log.InfoContext(r.Context(), "job outcome", "job_id", job.ID, "outcome", kind, "status", job.Status,
		"attempts", job.Attempts, "job_request_id", job.RequestID)
	if job.Terminal() {
		s.metrics.JobFinished(job.Type, job.Status)
		if job.WebhookURL != "" {
			s.jobRunner.Wake()
		}
	}
}

// jobOutcome is POST /internal/jobs/{id}/outcome, a worker reporting how
// its run ended. It takes no API key (and so no rate limit): the body must
// be signed with the internal token.
func (s *Server) jobOutcome(w http.ResponseWriter, r *http.Request) error {
	body, err := s.readCallback(w, r)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if !jobs.ValidID(id) {
		return errNoSuchJob
	}
	o, err := parseOutcome(body)
	if err != nil {
		return err
	}
	res, err := s.jobs.CompleteMany(r.Context(), []jobs.Completion{{ID: id, Outcome: o}})
	if err != nil {
		return queueUnavailable(err)
	}
	if res[0].Err != nil {
		return completedError(res[0].Err)
	}
	if res[0].Applied {
		s.outcomeApplied(r, res[0].Job, o.Kind)
	}
	return writeJSON(w, http.StatusOK, res[0].Job.Public())
}
