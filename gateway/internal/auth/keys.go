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
	"slices"
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
	// Hash is the SHA-256 of the raw key.
	Hash [sha256.Size]byte
	// Scopes lists what the key may do.
	Scopes []string
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

type keyEntry struct {
	ID     string   `json:"id"`
	SHA256 string   `json:"sha256"`
	Scopes []string `json:"scopes"`
}

// ParseKeys parses and validates a keys file:
//
//	{"keys": [{"id": "dev", "sha256": "<hex>", "scopes": ["rag"]}]}
//
// Every problem found is reported, not just the first, so an operator can fix
// the file in one pass. Unknown fields are rejected to catch typos such as
// "scope" for "scopes", which would otherwise silently grant nothing.
func ParseKeys(data []byte) ([]Key, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f keysFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("keys file is not valid JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("keys file has trailing data after the JSON object")
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
	k := Key{ID: e.ID, Scopes: slices.Clone(e.Scopes)}
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
