package jobs

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Standard Webhooks headers.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// Sign returns the Standard Webhooks signature header value, "v1," and the
// base64 HMAC-SHA256 of "{id}.{timestamp}.{body}" under key.
func Sign(key []byte, id string, timestamp int64, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + strconv.FormatInt(timestamp, 10) + "."))
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// SetSignature adds the Standard Webhooks headers for body to h.
func SetSignature(h http.Header, key []byte, id string, now time.Time, body []byte) {
	ts := now.Unix()
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	h.Set(HeaderSignature, Sign(key, id, ts, body))
}

// Verification failures; none reveals what the right signature would be.
var (
	ErrMissingSignature = errors.New("missing webhook-id, webhook-timestamp or webhook-signature")
	ErrStaleTimestamp   = errors.New("webhook-timestamp is not a Unix time within the tolerance")
	ErrBadSignature     = errors.New("no webhook-signature matches")
)

// Verify checks Standard Webhooks headers: a timestamp within tolerance of
// now and, among the space-separated signatures, one v1 signature made with
// key. Comparison is in constant time.
func Verify(h http.Header, body, key []byte, now time.Time, tolerance time.Duration) error {
	id, tsText, sigs := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	if id == "" || tsText == "" || sigs == "" {
		return ErrMissingSignature
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return ErrStaleTimestamp
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return ErrStaleTimestamp
	}
	want := []byte(Sign(key, id, ts, body))
	for _, s := range strings.Fields(sigs) {
		if hmac.Equal([]byte(s), want) {
			return nil
		}
	}
	return ErrBadSignature
}
