package server

import (
	"encoding/json"
	"errors"
	"net/http"

	"trine/gateway/internal/httperr"
	"trine/gateway/internal/jobs"
)

// maxOutcomesPerBatch caps the outcomes of one batch callback, so that one
// request holds the store's write lock only briefly.
const maxOutcomesPerBatch = 100

// outcomeItem is one entry of a batch callback: an outcome and its job.
type outcomeItem struct {
	ID string `json:"id"`
	outcomeRequest
}

// outcomeResult answers one entry of a batch callback, in its place:
// status 200 with the job's status now, or the status and error that the
// one-job callback would have answered.
type outcomeResult struct {
	ID        string        `json:"id"`
	Status    int           `json:"status"`
	JobStatus string        `json:"job_status,omitempty"`
	Error     *outcomeError `json:"error,omitempty"`
}

type outcomeError struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

func refusedItem(id string, e *httperr.Error) outcomeResult {
	return outcomeResult{ID: id, Status: e.Code, Error: &outcomeError{Type: e.Type, Message: e.Msg}}
}

// jobOutcomes is POST /internal/jobs/outcomes: a worker reporting several
// runs at once (api/jobs.md). Each entry is applied with the rules of the
// one-job callback and answered in its place; a malformed entry is refused
// alone. Signed, and free of API key and rate limit, as that callback is.
func (s *Server) jobOutcomes(w http.ResponseWriter, r *http.Request) error {
	body, err := s.readCallback(w, r)
	if err != nil {
		return err
	}
	var req struct {
		Outcomes []json.RawMessage `json:"outcomes"`
	}
	if err := decodeStrict(body, &req); err != nil {
		return httperr.Wrap(http.StatusBadRequest, httperr.TypeInvalidRequest, `the body must be {"outcomes": [...]}`, err)
	}
	if len(req.Outcomes) == 0 || len(req.Outcomes) > maxOutcomesPerBatch {
		return invalid(`"outcomes" must hold 1 to %d entries`, maxOutcomesPerBatch)
	}
	results := make([]outcomeResult, len(req.Outcomes))
	var items []jobs.Completion
	var places []int // places[k] is the result of items[k]
	for i, raw := range req.Outcomes {
		var item outcomeItem
		if err := decodeStrict(raw, &item); err != nil {
			results[i] = refusedItem("", invalid(`each entry must be {"id", "lease_token", "outcome", "result" | "error"}`))
			continue
		}
		if !jobs.ValidID(item.ID) {
			results[i] = refusedItem(item.ID, errNoSuchJob)
			continue
		}
		o, err := checkOutcome(item.outcomeRequest)
		if err != nil {
			he := invalid("malformed outcome")
			errors.As(err, &he) // checkOutcome's errors carry their own message
			results[i] = refusedItem(item.ID, he)
			continue
		}
		items = append(items, jobs.Completion{ID: item.ID, Outcome: o})
		places = append(places, i)
	}
	if len(items) > 0 {
		done, err := s.jobs.CompleteMany(r.Context(), items)
		if err != nil {
			return queueUnavailable(err)
		}
		for k, c := range done {
			id := items[k].ID
			if c.Err != nil {
				results[places[k]] = refusedItem(id, completedError(c.Err))
				continue
			}
			if c.Applied {
				s.outcomeApplied(r, c.Job, items[k].Outcome.Kind)
			}
			results[places[k]] = outcomeResult{ID: id, Status: http.StatusOK, JobStatus: c.Job.Status}
		}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"results": results})
}
