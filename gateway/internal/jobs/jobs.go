// Package jobs is the gateway's side of the async job queue (api/jobs.md):
// the job and webhook-delivery records in SQLite or Redis, the callback that
// finishes a job, the reaper of expired leases, and the webhook sender.
// Workers (Python) claim and run the jobs; this package never runs one.
package jobs

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"time"
)

// Job types (api/jobs.md).
const (
	TypeRAGQuery   = "rag.query"
	TypeIngest     = "ingest"
	TypeSandboxRun = "sandbox.run"
)

// Types lists the job types, for validation and metrics.
var Types = []string{TypeRAGQuery, TypeIngest, TypeSandboxRun}

// Job statuses.
const (
	StatusQueued    = "queued"
	StatusRunning   = "running"
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
)

// Callback outcomes (worker → gateway).
const (
	OutcomeSucceeded = "succeeded"
	OutcomeFailed    = "failed"
	OutcomeRetry     = "retry"
)

// Webhook delivery statuses.
const (
	DeliveryPending   = "pending"
	DeliveryDelivered = "delivered"
	DeliveryFailed    = "failed"
)

// DeliveryLease is how long a gateway holds a claimed delivery: long enough
// for one attempt (connect and response timeouts), after which another
// gateway may claim it again.
const DeliveryLease = 60 * time.Second

// Errors returned by stores.
var (
	// ErrNotFound: no such job (or not the caller's).
	ErrNotFound = errors.New("job not found")
	// ErrConflict: a callback that is not from the current lease holder,
	// or that contradicts how the job already ended.
	ErrConflict = errors.New("job lease or state conflict")
	// ErrIdempotencyMismatch: an Idempotency-Key reused with another request.
	ErrIdempotencyMismatch = errors.New("Idempotency-Key reused with a different request")
)

// Job is a job record (api/jobs.md, "Job record"). Times are Unix ms.
type Job struct {
	ID             string
	Owner          string
	Type           string
	Input          json.RawMessage
	WebhookURL     string // "" when none
	IdempotencyKey string // "" when none
	RequestHash    string
	Status         string
	Attempts       int
	MaxAttempts    int
	AvailableAt    int64
	LeaseOwner     string
	LeaseToken     string
	LeaseExpiresAt int64           // 0 when not leased
	Result         json.RawMessage // nil when none
	Error          json.RawMessage // nil when none
	RequestID      string
	CreatedAt      int64
	UpdatedAt      int64
	// Webhook is the job's delivery, when it has one and it exists yet
	// (filled by Get only).
	Webhook *Delivery
}

// Terminal reports whether the job has finished.
func (j Job) Terminal() bool {
	return j.Status == StatusSucceeded || j.Status == StatusFailed
}

// NewJob is what Enqueue needs; the store fills in the rest.
type NewJob struct {
	Owner          string
	Type           string
	Input          json.RawMessage
	WebhookURL     string
	IdempotencyKey string
	MaxAttempts    int
	RequestID      string
}

// Outcome is a worker's report on its run of a job.
type Outcome struct {
	// LeaseToken must be the job's current lease.
	LeaseToken string
	// Kind is OutcomeSucceeded, OutcomeFailed or OutcomeRetry.
	Kind string
	// Result (succeeded) and Error (failed, retry) are JSON objects.
	Result json.RawMessage
	Error  json.RawMessage
}

// Completion is one item of CompleteMany: a callback for job ID.
type Completion struct {
	ID      string
	Outcome Outcome
}

// Completed is what CompleteMany answers for one Completion.
type Completed struct {
	Job     Job
	Applied bool
	// Err is nil, ErrNotFound or ErrConflict.
	Err error
}

// PurgeBatch caps the jobs (and, separately, the idempotency keys) one
// Purge removes, so that it holds the store's write lock only briefly; the
// reaper calls it again while there is more.
const PurgeBatch = 500

// Delivery is a webhook delivery of a finished job.
type Delivery struct {
	ID             string
	JobID          string
	URL            string
	Status         string
	Attempts       []Attempt
	NextAttemptAt  int64
	LeaseExpiresAt int64
	CreatedAt      int64
	UpdatedAt      int64
}

// Attempt is one try at delivering a webhook. At is Unix ms; StatusCode is
// 0 when no HTTP answer arrived, and Error says why.
type Attempt struct {
	At         int64  `json:"at"`
	StatusCode int    `json:"status_code,omitempty"`
	Error      string `json:"error,omitempty"`
	DurationMS int64  `json:"duration_ms"`
}

// ClaimedDelivery is a delivery claimed for one attempt, with its job as
// it is now (terminal) and the job's owner, whose key signs the webhook.
type ClaimedDelivery struct {
	Delivery Delivery
	Job      Job
}

// Store is the job queue as the gateway uses it. Both backends implement the
// same state machine (api/jobs.md); the conformance suite checks them alike.
type Store interface {
	// Enqueue stores a new queued job and returns it. With an idempotency
	// key already used by the owner, it returns the existing job and
	// existing = true when the request hash matches, else
	// ErrIdempotencyMismatch.
	Enqueue(ctx context.Context, j NewJob) (job Job, existing bool, err error)
	// Get returns the owner's job with its webhook delivery, or ErrNotFound
	// (also for another owner's job).
	Get(ctx context.Context, owner, id string) (Job, error)
	// CompleteMany applies workers' callbacks in order; results[i] answers
	// items[i]: Applied is false when the callback repeats the outcome
	// already applied, and Err is nil, ErrNotFound or ErrConflict. A
	// terminal transition creates the job's delivery. err is for the store
	// failing, and then the caller cannot know which items were applied
	// (repeating them is safe: a repeated outcome is recognised).
	CompleteMany(ctx context.Context, items []Completion) (results []Completed, err error)
	// Reap fails running jobs whose lease expired with their attempts
	// exhausted (creating their deliveries) and makes delayed retries due
	// by now runnable. It returns the jobs it failed.
	Reap(ctx context.Context, now time.Time) ([]Job, error)
	// Purge removes, at most PurgeBatch of each at a time, finished jobs
	// last updated before finishedBefore (with their webhook delivery,
	// unless it is still pending, in which case the job waits) and forgets
	// the idempotency keys of jobs created before keysBefore. It returns
	// how many jobs and keys it removed.
	Purge(ctx context.Context, finishedBefore, keysBefore time.Time) (removedJobs, removedKeys int, err error)
	// ClaimDelivery takes one due pending delivery for DeliveryLease, or
	// returns ok = false when none is due.
	ClaimDelivery(ctx context.Context, now time.Time) (d ClaimedDelivery, ok bool, err error)
	// RecordDeliveryAttempt appends an attempt to a claimed delivery,
	// sets its status (pending with nextAttemptAt for a retry) and ends the
	// claim.
	RecordDeliveryAttempt(ctx context.Context, id string, a Attempt, status string, nextAttemptAt time.Time) error
	// Close releases the store's connections.
	Close() error
}

// idEncoding is lowercase base32 without padding: 128 bits → 26 characters.
var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewID returns a fresh job id: "job_" and 26 lowercase base32 characters.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails; aborts the program instead
	return "job_" + idEncoding.EncodeToString(b[:])
}

// ValidID reports whether id has the shape NewID produces, so malformed ids
// are refused before any store lookup.
func ValidID(id string) bool {
	rest, ok := strings.CutPrefix(id, "job_")
	if !ok || len(rest) != 26 {
		return false
	}
	for i := 0; i < len(rest); i++ {
		if c := rest[i]; (c < 'a' || c > 'z') && (c < '2' || c > '7') {
			return false
		}
	}
	return true
}

// DeliveryID is the webhook-id of a job's delivery: "msg_" + the id's suffix.
func DeliveryID(jobID string) string {
	return "msg_" + strings.TrimPrefix(jobID, "job_")
}

// NewLeaseToken returns a random 128-bit base64url lease token.
func NewLeaseToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// RequestHash is the hex SHA-256 of type, webhook URL and raw input
// (api/jobs.md), which tells a repeated request from a different one.
func RequestHash(typ, webhookURL string, input []byte) string {
	h := sha256.New()
	h.Write([]byte(typ + "\n" + webhookURL + "\n"))
	h.Write(input)
	return hex.EncodeToString(h.Sum(nil))
}

// exhaustedError is the error of a job whose attempts ran out.
var exhaustedError = json.RawMessage(`{"type":"attempts_exhausted","message":"the job's lease expired after its last attempt"}`)

// ms converts a time to Unix milliseconds.
func ms(t time.Time) int64 { return t.UnixMilli() }
