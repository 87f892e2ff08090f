package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"trine/gateway/internal/config"
)

// batchCallback is a worker's signed report of several outcomes.
func batchCallback(body string, sign func(http.Header, []byte)) req {
	q := callback("", body, sign)
	q.path = "/internal/jobs/outcomes"
	return q
}

type batchAnswer struct {
	Results []struct {
		ID        string `json:"id"`
		Status    int    `json:"status"`
		JobStatus string `json:"job_status"`
		Error     *struct {
			Type string `json:"type"`
		} `json:"error"`
	} `json:"results"`
}

func TestJobOutcomesBatch(t *testing.T) {
	h := newJobsHarness(t, options{})
	for range 2 {
		enqueueOK(t, h, postJob(`{"type":"sandbox.run","input":{"code":"1"}}`))
	}
	done, doneToken := claimJob(t, h)
	retried, retriedToken := claimJob(t, h)
	entries := []string{
		`{"id":"` + done + `","lease_token":"` + doneToken + `","outcome":"succeeded","result":{"stdout":"1\n"}}`,
		`{"id":"` + retried + `","lease_token":"` + retriedToken + `","outcome":"retry","error":{"type":"upstream_error","message":"m"}}`,
		`{"id":"` + retried + `","lease_token":"stolen","outcome":"failed","error":{"type":"invalid_request","message":"m"}}`,
		`{"id":"job_aaaaaaaaaaaaaaaaaaaaaaaaaa","lease_token":"t","outcome":"succeeded","result":{}}`,
		`{"id":"` + done + `","lease_token":"` + doneToken + `","outcome":"maybe"}`,
		`{"id":"` + done + `","lease_token":"` + doneToken + `","outcome":"succeeded","result":{},"extra":1}`,
	}
	good := `{"outcomes":[` + strings.Join(entries, ",") + `]}`
	want := []struct {
		status    int
		jobStatus string
		errType   string
	}{{200, "succeeded", ""}, {200, "queued", ""}, {409, "", "conflict"}, {404, "", "not_found"},
		{400, "", "invalid_request"}, {400, "", "invalid_request"}}
	for round := range 2 { // the second is a worker repeating a lost answer
		resp := h.do(t, batchCallback(good, signed))
		raw := body(t, resp)
		var got batchAnswer
		if resp.StatusCode != 200 || json.Unmarshal([]byte(raw), &got) != nil || len(got.Results) != len(want) {
			t.Fatalf("round %d: %d %s", round, resp.StatusCode, raw)
		}
		for i, w := range want {
			r := got.Results[i]
			if r.Status != w.status || r.JobStatus != w.jobStatus || (r.Error == nil) != (w.errType == "") ||
				(r.Error != nil && r.Error.Type != w.errType) {
				t.Errorf("round %d, entry %d: %+v, want %+v", round, i, r, w)
			}
		}
	}
	if _, j := getJob(t, h, done, fullKey); j.Status != "succeeded" {
		t.Errorf("done: %+v", j)
	}
	if _, j := getJob(t, h, retried, fullKey); j.Status != "queued" || j.Attempts != 1 {
		t.Errorf("retried: %+v", j)
	}

	many := `{"outcomes":[` + strings.Repeat(entries[0]+",", 100) + entries[0] + `]}`
	for name, tc := range map[string]struct {
		q    req
		code int
		typ  string
	}{
		"unsigned":    {req{path: "/internal/jobs/outcomes", body: good}, 401, "unauthorized"},
		"wrong key":   {batchCallback(good, signedAt(time.Now(), "not-the-internal-token")), 401, "unauthorized"},
		"stale":       {batchCallback(good, signedAt(time.Now().Add(-6*time.Minute), internalToken)), 401, "unauthorized"},
		"empty":       {batchCallback(`{"outcomes":[]}`, signed), 400, "invalid_request"},
		"too many":    {batchCallback(many, signed), 400, "invalid_request"},
		"not a batch": {batchCallback(entries[0], signed), 400, "invalid_request"},
	} {
		resp := h.do(t, tc.q)
		if env := readEnvelope(t, resp); resp.StatusCode != tc.code || env.Error.Type != tc.typ {
			t.Errorf("%s: %d %+v, want %d %s", name, resp.StatusCode, env.Error, tc.code, tc.typ)
		}
	}
}

func TestFinishedJobsAreRemovedAfterTheRetention(t *testing.T) {
	h := newJobsHarness(t, options{jobs: func(j *config.Jobs) {
		j.Retention, j.IdempotencyRetention = time.Millisecond, time.Hour
	}})
	finished := enqueueOK(t, h, postJob(`{"type":"sandbox.run","input":{"code":"1"}}`))
	id, token := claimJob(t, h)
	if id != finished.ID {
		t.Fatalf("claimed %s, want %s", id, finished.ID)
	}
	if resp := h.do(t, callback(id, `{"lease_token":"`+token+`","outcome":"succeeded","result":{}}`, signed)); resp.StatusCode != 200 {
		t.Fatalf("callback: %d", resp.StatusCode)
	}
	queued := enqueueOK(t, h, postJob(`{"type":"sandbox.run","input":{"code":"2"}}`))
	// The reaper's first round removes what retention no longer keeps.
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { h.srv.RunJobs(ctx); close(stopped) }()
	t.Cleanup(func() { cancel(); <-stopped })
	waitFor(t, "the finished job's removal", func() bool {
		code, _ := getJob(t, h, id, fullKey)
		return code == http.StatusNotFound
	})
	if code, j := getJob(t, h, queued.ID, fullKey); code != http.StatusOK || j.Status != "queued" {
		t.Errorf("the queued job: %d %+v", code, j)
	}
}
