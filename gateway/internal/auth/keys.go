// Package auth checks API keys. Keys are stored only as SHA-256 hashes; a
// presented key is hashed and compared against every stored hash in constant
// time, so neither timing nor an early exit reveals which key (if any)
// matched.
package auth

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Scopes a key can hold (docs/public-api.md).
const (
	ScopeRAG     = "rag"
	ScopeIngest  = "ingest"
	ScopeSandbox = "sandbox"
	ScopeJobs    = "jobs"
	ScopeAdmin   = "admin"
)

var knownScopes = []string{ScopeRAG, ScopeIngest, ScopeSandbox, ScopeJobs, ScopeAdmin}

// maxKeyIDLen bounds key IDs, which appear in every log line of a request.
const maxKeyIDLen = 64

// Key is one API key as configured: never the key itself, only its hash.
type Key struct {
	// ID names the key in logs and metrics.
	ID string
	// Name is an optional human description (who or what uses the key).
	Name string
	// Hash is the SHA-256 of the raw key.
	Hash [sha256.Size]byte
	// Scopes lists what the key may do.
	Scopes []string
	// Limits overrides the gateway's default limits for this key; zero
	// fields keep the defaults.
	Limits Limits
	// WebhookSecret signs the webhooks of the key's jobs (the decoded
	// bytes of "whsec_..."); nil when the key has none.
	WebhookSecret []byte
}

// Limits are a key's own request limits.
type Limits struct {
	// RatePerSecond is the sustained request rate allowed.
	RatePerSecond float64
	// Burst is how many requests may arrive at once above the rate.
	Burst int
	// MaxInFlight caps the key's concurrent requests on one gateway.
	MaxInFlight int
}

// HasScope reports whether the key grants scope.
func (k Key) HasScope(scope string) bool {
	return slices.Contains(k.Scopes, scope)
}

// HashKey returns the lowercase hex SHA-256 of a raw key, the form the keys
// file stores.
func HashKey(raw string) string {
	sum := sha256.Sum256([]byte(raw))
	return hex.EncodeToString(sum[:])
}

type keysFile struct {
	Keys []keyEntry `json:"keys"`
}

// keyEntry is one key as written in the file. New fields are optional and
// omitted when unset, so files written by older tools stay valid.
type keyEntry struct {
	ID            string   `json:"id"`
	Name          string   `json:"name,omitempty"`
	SHA256        string   `json:"sha256"`
	Scopes        []string `json:"scopes"`
	RatePerSecond float64  `json:"rate_per_second,omitempty"`
	Burst         int      `json:"burst,omitempty"`
	MaxInFlight   int      `json:"max_in_flight,omitempty"`
	WebhookSecret string   `json:"webhook_secret,omitempty"`
}

// ParseKeys parses and validates a keys file:
//
//	{"keys": [{"id": "dev", "sha256": "<hex>", "scopes": ["rag"]}]}
//
// with optional "name", "rate_per_second", "burst", "max_in_flight" and
// "webhook_secret".
//
// Every problem found is reported, not just the first, so an operator can fix
// the file in one pass. Unknown fields are rejected to catch typos such as
// "scope" for "scopes", which would otherwise silently grant nothing.
func ParseKeys(data []byte) ([]Key, error) {
	f, err := decodeFile(data)
	if err != nil {
		return nil, err
	}
	if len(f.Keys) == 0 {
		return nil, errors.New(`keys file defines no keys (expected {"keys": [...]})`)
	}
	var errs []error
	keys := make([]Key, 0, len(f.Keys))
	seenID := make(map[string]bool)
	seenHash := make(map[[sha256.Size]byte]string)
	for i, e := range f.Keys {
		where := fmt.Sprintf("keys[%d]", i)
		if e.ID != "" {
			where = fmt.Sprintf("key %q", e.ID)
		}
		k, err := parseEntry(e)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		if seenID[k.ID] {
			errs = append(errs, fmt.Errorf("%s: duplicate id", where))
		}
		seenID[k.ID] = true
		if other, dup := seenHash[k.Hash]; dup {
			errs = append(errs, fmt.Errorf("%s: same sha256 as key %q", where, other))
		}
		seenHash[k.Hash] = k.ID
		keys = append(keys, k)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return keys, nil
}

func decodeFile(data []byte) (keysFile, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f keysFile
	if err := dec.Decode(&f); err != nil {
		return keysFile{}, fmt.Errorf("keys file is not valid JSON: %w", err)
	}
	if dec.More() {
		return keysFile{}, errors.New("keys file has trailing data after the JSON object")
	}
	return f, nil
}

// maxNameLen bounds a key's name, which is logged.
const maxNameLen = 200

func parseEntry(e keyEntry) (Key, error) {
	if !validKeyID(e.ID) {
		return Key{}, fmt.Errorf("id must be 1-%d characters from [A-Za-z0-9._-]", maxKeyIDLen)
	}
	raw, err := hex.DecodeString(e.SHA256)
	if err != nil || len(raw) != sha256.Size {
		return Key{}, errors.New("sha256 must be 64 hexadecimal characters (use `trine-gateway hash-key`)")
	}
	if len(e.Scopes) == 0 {
		return Key{}, errors.New("scopes is empty")
	}
	for _, s := range e.Scopes {
		if !slices.Contains(knownScopes, s) {
			return Key{}, fmt.Errorf("unknown scope %q (known: %v)", s, knownScopes)
		}
	}
	if len(e.Name) > maxNameLen || !utf8.ValidString(e.Name) || strings.ContainsFunc(e.Name, unicode.IsControl) {
		return Key{}, fmt.Errorf("name must be at most %d printable characters", maxNameLen)
	}
	// NaN fails every comparison, so it is rejected with the negatives.
	if !(e.RatePerSecond >= 0) || math.IsInf(e.RatePerSecond, 0) || e.Burst < 0 || e.MaxInFlight < 0 {
		return Key{}, errors.New("rate_per_second, burst and max_in_flight must be positive (or absent for the defaults)")
	}
	k := Key{ID: e.ID, Name: e.Name, Scopes: slices.Clone(e.Scopes),
		Limits: Limits{RatePerSecond: e.RatePerSecond, Burst: e.Burst, MaxInFlight: e.MaxInFlight}}
	if e.WebhookSecret != "" {
		if k.WebhookSecret, err = ParseWebhookSecret(e.WebhookSecret); err != nil {
			return Key{}, err
		}
	}
	copy(k.Hash[:], raw)
	return k, nil
}

func validKeyID(id string) bool {
	if len(id) == 0 || len(id) > maxKeyIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '.' || c == '_' || c == '-'
		if !ok {
			return false
		}
	}
	return true
}
