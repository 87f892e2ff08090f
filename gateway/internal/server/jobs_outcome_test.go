package server_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"trine/gateway/internal/config"
	"trine/gateway/internal/jobs"
)

// claimJob claims the next job with the contract's statement, as a worker
// does, and returns its id and lease token.
func claimJob(t *testing.T, h *harness) (id, token string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+h.cfg.Jobs.SQLitePath+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	token = jobs.NewLeaseToken()
	now := time.Now().UnixMilli()
	err = db.QueryRow(`UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = 'w',
		lease_token = :token, lease_expires_at = :now + 30000, updated_at = :now
		WHERE id = (SELECT id FROM jobs WHERE (status = 'queued' AND available_at <= :now)
		   OR (status = 'running' AND lease_expires_at <= :now AND attempts < max_attempts)
		   ORDER BY available_at LIMIT 1) RETURNING id`, sql.Named("token", token), sql.Named("now", now)).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	return id, token
}

// callback is a worker's signed outcome report.
func callback(id, body string, sign func(http.Header, []byte)) req {
	q := req{path: "/internal/jobs/" + id + "/outcome", body: body, header: map[string]string{}}
	h := http.Header{}
	sign(h, []byte(body))
	for k := range h {
		q.header[k] = h.Get(k)
	}
	return q
}

func signedAt(at time.Time, key string) func(http.Header, []byte) {
	return func(h http.Header, body []byte) { jobs.SetSignature(h, []byte(key), "cb_1", at, body) }
}

var signed = signedAt(time.Now(), internalToken)

// webhookReceiver records webhooks, checking each signature with the full
// key's secret independently of the jobs package.
type webhookReceiver struct {
	*httptest.Server
	mu     sync.Mutex // guards bodies
	bodies []string
}

func newWebhookReceiver(t *testing.T) *webhookReceiver {
	rcv := &webhookReceiver{}
	rcv.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mac := hmac.New(sha256.New, webhookSecret)
		io.WriteString(mac, r.Header.Get("webhook-id")+"."+r.Header.Get("webhook-timestamp")+".")
		mac.Write(body)
		if r.Header.Get("webhook-signature") != "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)) {
			t.Errorf("bad webhook signature %q", r.Header.Get("webhook-signature"))
		}
		if _, err := strconv.ParseInt(r.Header.Get("webhook-timestamp"), 10, 64); err != nil {
			t.Errorf("webhook-timestamp %q", r.Header.Get("webhook-timestamp"))
		}
		rcv.mu.Lock()
		rcv.bodies = append(rcv.bodies, string(body))
		rcv.mu.Unlock()
	}))
	t.Cleanup(rcv.Close)
	return rcv
}

func (r *webhookReceiver) received() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.bodies...)
}

func TestJobOutcomeAndWebhook(t *testing.T) {
	h := newJobsHarness(t, options{jobs: func(j *config.Jobs) { j.WebhookAllowHTTP, j.WebhookAllowPrivate = true, true }})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { h.srv.RunJobs(ctx); close(stopped) }()
	t.Cleanup(func() { cancel(); <-stopped })
	rcv := newWebhookReceiver(t)
	a := enqueueOK(t, h, postJob(`{"type":"sandbox.run","input":{"code":"1"},"webhook_url":"`+rcv.URL+`/hook"}`))
	id, token := claimJob(t, h)
	if id != a.ID {
		t.Fatalf("claimed %s, want %s", id, a.ID)
	}
	if _, j := getJob(t, h, id, fullKey); j.Status != "running" || j.Attempts != 1 || j.Webhook == nil || j.Webhook.Status != "pending" {
		t.Errorf("running job %+v", j)
	}

	succeeded := `{"lease_token":"` + token + `","outcome":"succeeded","result":{"status":"ok","stdout":"1\n"}}`
	for name, tc := range map[string]struct {
		q    req
		code int
		typ  string
	}{
		"unsigned":        {req{path: "/internal/jobs/" + id + "/outcome", body: succeeded}, 401, "unauthorized"},
		"wrong key":       {callback(id, succeeded, signedAt(time.Now(), "not-the-internal-token")), 401, "unauthorized"},
		"stale":           {callback(id, succeeded, signedAt(time.Now().Add(-6*time.Minute), internalToken)), 401, "unauthorized"},
		"unknown job":     {callback("job_aaaaaaaaaaaaaaaaaaaaaaaaaa", succeeded, signed), 404, "not_found"},
		"wrong lease":     {callback(id, strings.Replace(succeeded, token, "stolen", 1), signed), 409, "conflict"},
		"no result":       {callback(id, `{"lease_token":"`+token+`","outcome":"succeeded"}`, signed), 400, "invalid_request"},
		"error untyped":   {callback(id, `{"lease_token":"`+token+`","outcome":"failed","error":{"message":"m"}}`, signed), 400, "invalid_request"},
		"unknown outcome": {callback(id, `{"lease_token":"`+token+`","outcome":"maybe"}`, signed), 400, "invalid_request"},
	} {
		resp := h.do(t, tc.q)
		if env := readEnvelope(t, resp); resp.StatusCode != tc.code || env.Error.Type != tc.typ {
			t.Errorf("%s: %d %+v, want %d %s", name, resp.StatusCode, env.Error, tc.code, tc.typ)
		}
	}

	for i := range 2 { // the second is a worker repeating a lost answer
		resp := h.do(t, callback(id, succeeded, signed))
		if got := body(t, resp); resp.StatusCode != 200 || !strings.Contains(got, `"status":"succeeded"`) {
			t.Fatalf("callback %d: %d %s", i, resp.StatusCode, got)
		}
	}
	failed := `{"lease_token":"` + token + `","outcome":"failed","error":{"type":"invalid_request","message":"m"}}`
	if resp := h.do(t, callback(id, failed, signed)); resp.StatusCode != 409 {
		t.Errorf("contradicting callback: %d", resp.StatusCode)
	}

	waitFor(t, "the webhook", func() bool {
		_, j := getJob(t, h, id, fullKey)
		return j.Webhook != nil && j.Webhook.Status == "delivered"
	})
	got := rcv.received()
	if len(got) != 1 || !strings.Contains(got[0], `"type":"job.succeeded"`) || !strings.Contains(got[0], `"id":"`+id+`"`) ||
		!strings.Contains(got[0], `"stdout":"1\n"`) {
		t.Errorf("webhooks %q", got)
	}
	_, j := getJob(t, h, id, fullKey)
	if j.Status != "succeeded" || len(j.Webhook.Attempts) != 1 || j.Webhook.Attempts[0].StatusCode != 200 ||
		j.Webhook.URL != rcv.URL+"/hook" {
		t.Errorf("job %+v", j)
	}
	metrics := body(t, h.do(t, req{method: "GET", path: "/metrics"}))
	for _, want := range []string{
		`trine_gateway_jobs_enqueued_total{type="sandbox.run"} 1`,
		`trine_gateway_jobs_finished_total{status="succeeded",type="sandbox.run"} 1`,
		`trine_gateway_webhook_attempts_total{outcome="delivered"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestJobOutcomeNotRateLimited(t *testing.T) {
	h := newJobsHarness(t, options{limits: func(l *config.Limits) { l.Default.Rate, l.Default.Burst = 0.001, 2 }})
	// The enqueue and the final read use the burst; the callbacks must not.
	enqueueOK(t, h, postJob(`{"type":"sandbox.run","input":{"code":"1"}}`))
	id, token := claimJob(t, h)
	for i := range 3 {
		resp := h.do(t, callback(id, `{"lease_token":"`+token+`","outcome":"retry","error":{"type":"upstream_error","message":"m"}}`, signed))
		if resp.StatusCode != 200 || resp.Header.Get("RateLimit-Limit") != "" {
			t.Fatalf("callback %d: %d", i, resp.StatusCode)
		}
	}
	if _, j := getJob(t, h, id, fullKey); j.Status != "queued" || j.Attempts != 1 {
		t.Errorf("after retry: %+v", j)
	}
}
