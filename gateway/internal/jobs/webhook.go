package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// Webhook client timeouts: a receiver gets this long to accept the
// connection and then to answer.
const (
	webhookConnectTimeout  = 5 * time.Second
	webhookResponseTimeout = 10 * time.Second
	// maxAttemptError bounds the error text kept per attempt.
	maxAttemptError = 300
)

// Sender delivers one webhook attempt at a time and decides what follows.
// It is safe for concurrent use.
type Sender struct {
	client  *http.Client
	policy  URLPolicy
	backoff Backoff
	// secret returns the webhook secret of an API key by id.
	secret func(owner string) ([]byte, bool)
	now    func() time.Time
}

// NewSender returns a sender whose client refuses forbidden addresses at
// dial time (per policy), never follows redirects and gives up after short
// timeouts. secret looks up the signing secret of a job's owner.
func NewSender(policy URLPolicy, backoff Backoff, secret func(owner string) ([]byte, bool)) *Sender {
	dialer := &net.Dialer{Timeout: webhookConnectTimeout, Control: policy.control}
	transport := &http.Transport{
		// Receivers are public hosts, reached directly: an environment
		// proxy would both bypass the dial-time check and see the payload.
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		TLSHandshakeTimeout:   webhookConnectTimeout,
		ResponseHeaderTimeout: webhookResponseTimeout,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       30 * time.Second,
	}
	return &Sender{
		client: &http.Client{
			Transport: transport,
			// A redirect is a failed attempt: following it could lead
			// anywhere, and the receiver should be configured with its
			// final URL.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			Timeout:       webhookConnectTimeout + webhookResponseTimeout + 5*time.Second,
		},
		policy: policy, backoff: backoff, secret: secret, now: time.Now,
	}
}

// event is the webhook body.
type event struct {
	Type string    `json:"type"`
	Data PublicJob `json:"data"`
}

// Payload returns the body of the webhook for a finished job: its type and
// the public job object (without the webhook's own delivery state, so that
// every attempt sends the same bytes).
func Payload(j Job) ([]byte, error) {
	typ := "job.failed"
	if j.Status == StatusSucceeded {
		typ = "job.succeeded"
	}
	j.WebhookURL, j.Webhook = "", nil
	return json.Marshal(event{Type: typ, Data: j.Public()})
}

// Result is the outcome of one delivery attempt.
type Result struct {
	Attempt Attempt
	// Status is DeliveryDelivered, DeliveryFailed (given up) or
	// DeliveryPending (retry at Next).
	Status string
	Next   time.Time
}

// Send makes one attempt at d and returns what to record.
func (s *Sender) Send(ctx context.Context, d ClaimedDelivery) Result {
	start := s.now()
	a := Attempt{At: start.UnixMilli()}
	code, err := s.post(ctx, d)
	a.DurationMS = s.now().Sub(start).Milliseconds()
	a.StatusCode = code
	if err != nil {
		a.Error = err.Error()
		if len(a.Error) > maxAttemptError {
			a.Error = a.Error[:maxAttemptError]
		}
	}
	var permanent *permanentError
	switch {
	case err == nil && code >= 200 && code <= 299:
		return Result{Attempt: a, Status: DeliveryDelivered}
	case errors.As(err, &permanent):
		return Result{Attempt: a, Status: DeliveryFailed}
	}
	next, ok := s.backoff.Next(s.now(), time.UnixMilli(d.Delivery.CreatedAt), len(d.Delivery.Attempts)+1)
	if !ok {
		return Result{Attempt: a, Status: DeliveryFailed}
	}
	return Result{Attempt: a, Status: DeliveryPending, Next: next}
}

// permanentError is a failure that retrying cannot fix.
type permanentError struct{ msg string }

func (e *permanentError) Error() string { return e.msg }

// post sends the signed webhook and returns the receiver's status code.
func (s *Sender) post(ctx context.Context, d ClaimedDelivery) (int, error) {
	key, ok := s.secret(d.Job.Owner)
	if !ok {
		return 0, &permanentError{"the job's API key no longer exists or has no webhook_secret"}
	}
	if _, err := s.policy.checkScheme(d.Delivery.URL); err != nil {
		return 0, &permanentError{err.Error()}
	}
	body, err := Payload(d.Job)
	if err != nil {
		return 0, &permanentError{"encoding the payload: " + err.Error()}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.Delivery.URL, bytes.NewReader(body))
	if err != nil {
		return 0, &permanentError{"invalid webhook_url"}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "trine-webhooks")
	SetSignature(req.Header, key, d.Delivery.ID, s.now(), body)
	resp, err := s.client.Do(req)
	if err != nil {
		if errors.Is(err, ErrForbiddenAddress) {
			return 0, errors.New("refused: " + ErrForbiddenAddress.Error())
		}
		return 0, fmt.Errorf("no answer: %w", errors.Unwrap(err))
	}
	defer resp.Body.Close()
	// Reading a little lets the connection be reused; the body is ignored.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 300 && resp.StatusCode <= 399 {
		return resp.StatusCode, errors.New("redirect not followed")
	}
	return resp.StatusCode, nil
}
