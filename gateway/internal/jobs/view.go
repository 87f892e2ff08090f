package jobs

import (
	"encoding/json"
	"time"
)

// timeLayout is RFC 3339 in UTC with millisecond precision.
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

// FormatTime renders Unix milliseconds as the API shows times.
func FormatTime(unixMS int64) string {
	return time.UnixMilli(unixMS).UTC().Format(timeLayout)
}

// PublicJob is the job object clients see (docs/public-api.md, "Jobs").
type PublicJob struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Status    string          `json:"status"`
	Result    json.RawMessage `json:"result"`
	Error     json.RawMessage `json:"error"`
	CreatedAt string          `json:"created_at"`
	UpdatedAt string          `json:"updated_at"`
	Attempts  int             `json:"attempts"`
	Webhook   *PublicWebhook  `json:"webhook,omitempty"`
}

// PublicWebhook is a job's webhook delivery as clients see it.
type PublicWebhook struct {
	URL      string          `json:"url"`
	Status   string          `json:"status"`
	Attempts []PublicAttempt `json:"attempts"`
}

// PublicAttempt is one delivery attempt as clients see it.
type PublicAttempt struct {
	At         string `json:"at"`
	StatusCode int    `json:"status_code,omitempty"`
	Error      string `json:"error,omitempty"`
	DurationMS int64  `json:"duration_ms"`
}

var jsonNull = json.RawMessage("null")

// Public returns the job as clients see it. A job with a webhook URL whose
// delivery does not exist yet (it is not finished) shows it as pending.
func (j Job) Public() PublicJob {
	p := PublicJob{ID: j.ID, Type: j.Type, Status: j.Status, Result: j.Result, Error: j.Error,
		CreatedAt: FormatTime(j.CreatedAt), UpdatedAt: FormatTime(j.UpdatedAt), Attempts: j.Attempts}
	if p.Result == nil {
		p.Result = jsonNull
	}
	if p.Error == nil {
		p.Error = jsonNull
	}
	if j.WebhookURL != "" {
		w := &PublicWebhook{URL: j.WebhookURL, Status: DeliveryPending, Attempts: []PublicAttempt{}}
		if d := j.Webhook; d != nil {
			w.Status = d.Status
			for _, a := range d.Attempts {
				w.Attempts = append(w.Attempts, PublicAttempt{At: FormatTime(a.At), StatusCode: a.StatusCode,
					Error: a.Error, DurationMS: a.DurationMS})
			}
		}
		p.Webhook = w
	}
	return p
}
