package jobs

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var testSecret = []byte("0123456789abcdef01234567")

func secretOf(owner string) ([]byte, bool) { return testSecret, owner == "alice" }

// received is one webhook as a receiver saw it.
type received struct {
	header http.Header
	body   []byte
}

// receiver records webhooks and answers with the status that respond
// returns for the nth request (1-based).
type receiver struct {
	*httptest.Server
	mu   sync.Mutex // guards got
	got  []received
	hits atomic.Int32
}

func newReceiver(t *testing.T, respond func(n int, w http.ResponseWriter)) *receiver {
	r := &receiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, received{req.Header.Clone(), body})
		r.mu.Unlock()
		respond(int(r.hits.Add(1)), w)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) received() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.got...)
}

// verifyIndependently checks a Standard Webhooks signature without the
// package's own Sign, so that a bug there cannot hide itself.
func verifyIndependently(t *testing.T, h http.Header, body []byte) {
	t.Helper()
	mac := hmac.New(sha256.New, testSecret)
	io.WriteString(mac, h.Get("webhook-id")+"."+h.Get("webhook-timestamp")+".")
	mac.Write(body)
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	if h.Get("webhook-signature") != want {
		t.Errorf("signature %q, want %q", h.Get("webhook-signature"), want)
	}
	ts, err := strconv.ParseInt(h.Get("webhook-timestamp"), 10, 64)
	if err != nil || time.Since(time.Unix(ts, 0)).Abs() > time.Minute {
		t.Errorf("webhook-timestamp %q", h.Get("webhook-timestamp"))
	}
}

var loopbackPolicy = URLPolicy{AllowHTTP: true, AllowPrivate: true}

var fastBackoff = Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond, Window: time.Hour}

// runDeliveries runs a Runner over b until the test ends.
func runDeliveries(t *testing.T, b backend, s *Sender) *Runner {
	r := NewRunner(b.store, s, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// finishJob enqueues a job with a webhook to url, claims it and reports
// the outcome, with the real clock so that the runner sees it due.
func finishJob(t *testing.T, b backend, url, kind string) Job {
	t.Helper()
	b.clock.Set(time.Now())
	j := enqueue(t, b.store, NewJob{WebhookURL: url, Type: TypeRAGQuery, Input: json.RawMessage(`{"query":"q"}`)})
	c := mustClaim(t, b, "w", time.Now())
	payload := `{"answer":"a"}`
	if kind != OutcomeSucceeded {
		payload = `{"type":"invalid_request","message":"bad"}`
	}
	if _, _, err := complete(t, b, c, kind, payload); err != nil {
		t.Fatal(err)
	}
	return j
}

func TestWebhookSignedAndDelivered(t *testing.T) {
	b := sqliteBackend(t)
	rcv := newReceiver(t, func(int, http.ResponseWriter) {})
	r := runDeliveries(t, b, NewSender(loopbackPolicy, fastBackoff, secretOf))
	j := finishJob(t, b, rcv.URL+"/hook", OutcomeSucceeded)
	r.Wake()
	waitUntil(t, "delivery", func() bool { return get(t, b.store, j.ID).Webhook.Status == DeliveryDelivered })
	got := rcv.received()
	if len(got) != 1 {
		t.Fatalf("%d webhooks received", len(got))
	}
	verifyIndependently(t, got[0].header, got[0].body)
	if id := got[0].header.Get("webhook-id"); id != DeliveryID(j.ID) {
		t.Errorf("webhook-id %q", id)
	}
	var ev struct {
		Type string
		Data map[string]any
	}
	if err := json.Unmarshal(got[0].body, &ev); err != nil || ev.Type != "job.succeeded" ||
		ev.Data["id"] != j.ID || ev.Data["status"] != "succeeded" || ev.Data["result"].(map[string]any)["answer"] != "a" {
		t.Errorf("body %s (%v)", got[0].body, err)
	}
	if _, has := ev.Data["webhook"]; has {
		t.Errorf("payload carries the delivery state: %s", got[0].body)
	}
	w := get(t, b.store, j.ID).Webhook
	if len(w.Attempts) != 1 || w.Attempts[0].StatusCode != 200 {
		t.Errorf("attempts %+v", w.Attempts)
	}
}

func TestWebhookRetriedUntilDelivered(t *testing.T) {
	b := sqliteBackend(t)
	const failures = 3
	rcv := newReceiver(t, func(n int, w http.ResponseWriter) {
		if n <= failures {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	runDeliveries(t, b, NewSender(loopbackPolicy, fastBackoff, secretOf))
	j := finishJob(t, b, rcv.URL, OutcomeFailed)
	waitUntil(t, "delivery", func() bool { return get(t, b.store, j.ID).Webhook.Status == DeliveryDelivered })
	w := get(t, b.store, j.ID).Webhook
	if len(w.Attempts) != failures+1 {
		t.Fatalf("attempts %+v", w.Attempts)
	}
	for i, a := range w.Attempts {
		want := http.StatusServiceUnavailable
		if i == failures {
			want = http.StatusOK
		}
		if a.StatusCode != want || a.At == 0 || a.DurationMS < 0 {
			t.Errorf("attempt %d: %+v", i, a)
		}
	}
	got := rcv.received()
	for _, g := range got {
		verifyIndependently(t, g.header, g.body)
		if g.header.Get("webhook-id") != DeliveryID(j.ID) || string(g.body) != string(got[0].body) {
			t.Error("attempts differ in id or body")
		}
	}
	if !strings.Contains(string(got[0].body), `"type":"job.failed"`) {
		t.Errorf("body %s", got[0].body)
	}
}

// claimedFor builds a claimed delivery of a succeeded job to url.
func claimedFor(url string) ClaimedDelivery {
	now := time.Now().UnixMilli()
	j := Job{ID: NewID(), Owner: "alice", Type: TypeSandboxRun, Status: StatusSucceeded,
		Result: json.RawMessage(`{}`), CreatedAt: now, UpdatedAt: now, WebhookURL: url}
	return ClaimedDelivery{Job: j, Delivery: Delivery{ID: DeliveryID(j.ID), JobID: j.ID, URL: url,
		Status: DeliveryPending, CreatedAt: now}}
}

func TestWebhookRedirectNotFollowed(t *testing.T) {
	target := newReceiver(t, func(int, http.ResponseWriter) {})
	rcv := newReceiver(t, func(_ int, w http.ResponseWriter) {
		w.Header().Set("Location", target.URL)
		w.WriteHeader(http.StatusFound)
	})
	res := NewSender(loopbackPolicy, fastBackoff, secretOf).Send(context.Background(), claimedFor(rcv.URL))
	if res.Status != DeliveryPending || res.Attempt.StatusCode != http.StatusFound || res.Attempt.Error == "" {
		t.Errorf("result %+v", res)
	}
	if target.hits.Load() != 0 {
		t.Error("the redirect was followed")
	}
}

func TestWebhookDialTimeGuard(t *testing.T) {
	rcv := newReceiver(t, func(int, http.ResponseWriter) {})
	port := rcv.Listener.Addr().(interface{ String() string }).String()
	_, port, _ = strings.Cut(port, ":")
	s := NewSender(URLPolicy{AllowHTTP: true}, fastBackoff, secretOf)
	// "localhost" passes any check that looks only at the URL; the dialer
	// sees the address it resolved to.
	for _, url := range []string{rcv.URL, "http://localhost:" + port} {
		res := s.Send(context.Background(), claimedFor(url))
		if res.Status != DeliveryPending || res.Attempt.StatusCode != 0 || !strings.Contains(res.Attempt.Error, "refused") {
			t.Errorf("%s: %+v", url, res)
		}
	}
	if rcv.hits.Load() != 0 {
		t.Error("a forbidden address was reached")
	}
}

func TestWebhookWithoutSecretGivesUp(t *testing.T) {
	rcv := newReceiver(t, func(int, http.ResponseWriter) {})
	d := claimedFor(rcv.URL)
	d.Job.Owner = "removed-key"
	res := NewSender(loopbackPolicy, fastBackoff, secretOf).Send(context.Background(), d)
	if res.Status != DeliveryFailed || rcv.hits.Load() != 0 {
		t.Errorf("result %+v", res)
	}
}

func TestBackoff(t *testing.T) {
	b := Backoff{Initial: 5 * time.Second, Max: time.Minute, Window: time.Hour}
	created := time.Unix(1000, 0)
	for failed, ceiling := range map[int]time.Duration{1: 5 * time.Second, 2: 10 * time.Second, 4: 40 * time.Second, 5: time.Minute, 80: time.Minute} {
		for range 50 {
			next, ok := b.Next(created, created, failed)
			if d := next.Sub(created); !ok || d < 0 || d > ceiling {
				t.Fatalf("after %d failures: wait %v (ok %v), want within [0, %v]", failed, d, ok, ceiling)
			}
		}
	}
	if _, ok := b.Next(created.Add(time.Hour), created, 3); ok {
		t.Error("retried after the window")
	}
}

type fakeResolver map[string][]netip.Addr

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := f[host]; ok {
		return a, nil
	}
	return nil, errNoSuchHost
}

var errNoSuchHost = errors.New("no such host")

func TestURLPolicy(t *testing.T) {
	res := fakeResolver{
		"public.example":  {netip.MustParseAddr("93.184.216.34")},
		"mixed.example":   {netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("2606:2800:220:1::1")},
		"private.example": {netip.MustParseAddr("192.168.1.1"), netip.MustParseAddr("fd00::1")},
	}
	strict := URLPolicy{Resolver: res}
	lax := URLPolicy{Resolver: res, AllowHTTP: true, AllowPrivate: true}
	tests := []struct {
		url       string
		strictOK  bool
		laxOK     bool
		errSubstr string
	}{
		{"https://public.example/hook", true, true, ""},
		{"https://mixed.example/hook", true, true, ""},
		{"https://93.184.216.34/", true, true, ""},
		{"ftp://public.example/", false, false, "https"},
		{"http://public.example/", false, true, "https"},
		{"https://127.0.0.1/", false, true, "private"},
		{"https://[::1]/", false, true, "private"},
		{"https://[::ffff:127.0.0.1]/", false, true, "private"},
		{"https://10.1.2.3/", false, true, "private"},
		{"https://100.64.0.1/", false, true, "private"},
		{"https://169.254.169.254/", false, true, "private"},
		{"https://0.0.0.0/", false, true, "private"},
		{"https://[fe80::1]/", false, true, "private"},
		{"https://[64:ff9b::a9fe:a9fe]/", false, true, "private"},
		{"https://[64:ff9b::7f00:1]/", false, true, "private"},
		{"https://[64:ff9b::5db8:d822]/", true, true, ""},
		{"https://[64:ff9b:1::5db8:d822]/", false, true, "private"},
		{"https://[2002:a00:1::1]/", false, true, "private"},
		{"https://[2002:5db8:d822::1]/", true, true, ""},
		{"https://224.0.0.1/", false, true, "private"},
		{"https://private.example/", false, true, "private"},
		{"https://nowhere.example/", false, false, "does not resolve"},
		{"https://user:pw@public.example/", false, false, "credentials"},
		{"/relative", false, false, "absolute"},
		{"https:///nohost", false, false, "host"},
	}
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			err := strict.Check(context.Background(), tc.url)
			if (err == nil) != tc.strictOK || (err != nil && !strings.Contains(err.Error(), tc.errSubstr)) {
				t.Errorf("strict: %v", err)
			}
			if err := lax.Check(context.Background(), tc.url); (err == nil) != tc.laxOK {
				t.Errorf("lax: %v", err)
			}
		})
	}
}

func TestVerify(t *testing.T) {
	key := []byte("internal-token-0123456789")
	body := []byte(`{"outcome":"succeeded"}`)
	now := time.Unix(1_800_000_000, 0)
	signed := func(at time.Time, k []byte) http.Header {
		h := http.Header{}
		SetSignature(h, k, "cb_1", at, body)
		return h
	}
	if err := Verify(signed(now, key), body, key, now, 5*time.Minute); err != nil {
		t.Errorf("valid: %v", err)
	}
	fresh := signed(time.Now(), testSecret)
	verifyIndependently(t, fresh, body)
	multi := signed(now, key)
	multi.Set(HeaderSignature, "v1,bm9wZQ== "+multi.Get(HeaderSignature))
	if err := Verify(multi, body, key, now, 5*time.Minute); err != nil {
		t.Errorf("second of two signatures: %v", err)
	}
	tests := map[string]struct {
		h    http.Header
		body []byte
		want error
	}{
		"wrong key":  {signed(now, []byte("another-key-0123456789")), body, ErrBadSignature},
		"other body": {signed(now, key), []byte(`{}`), ErrBadSignature},
		"too old":    {signed(now.Add(-6*time.Minute), key), body, ErrStaleTimestamp},
		"future":     {signed(now.Add(6*time.Minute), key), body, ErrStaleTimestamp},
		"no headers": {http.Header{}, body, ErrMissingSignature},
		"bad ts":     {func() http.Header { h := signed(now, key); h.Set(HeaderTimestamp, "x"); return h }(), body, ErrStaleTimestamp},
	}
	for name, tc := range tests {
		if err := Verify(tc.h, tc.body, key, now, 5*time.Minute); err != tc.want {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
}
