package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

	"trine/gateway/internal/httperr"
)

// Keyring holds the configured keys. It is immutable after NewKeyring and
// safe for concurrent use.
type Keyring struct {
	keys []Key
}

// NewKeyring returns a keyring over a copy of keys.
func NewKeyring(keys []Key) *Keyring {
	return &Keyring{keys: append([]Key(nil), keys...)}
}

// Lookup finds the key whose hash matches the raw presented key. It compares
// against every stored hash, always, and selects the match without branching
// on secret data, so the time taken does not depend on which key matched.
func (kr *Keyring) Lookup(presented string) (Key, bool) {
	sum := sha256.Sum256([]byte(presented))
	found, idx := 0, 0
	for i := range kr.keys {
		eq := subtle.ConstantTimeCompare(sum[:], kr.keys[i].Hash[:])
		idx = subtle.ConstantTimeSelect(eq, i, idx)
		found |= eq
	}
	if found == 0 {
		return Key{}, false
	}
	return kr.keys[idx], true
}

// Authorize checks the request's bearer key and that it grants scope. It
// returns a 401 *httperr.Error for a missing or unknown key and a 403 for a
// key without the scope. The raw key never appears in any error.
func (kr *Keyring) Authorize(r *http.Request, scope string) (Key, error) {
	presented, ok := bearerToken(r.Header.Get("Authorization"))
	if !ok {
		return Key{}, httperr.New(http.StatusUnauthorized, httperr.TypeUnauthorized,
			"missing API key: send Authorization: Bearer <key>").
			WithHeader("WWW-Authenticate", `Bearer realm="trine"`)
	}
	key, ok := kr.Lookup(presented)
	if !ok {
		return Key{}, httperr.New(http.StatusUnauthorized, httperr.TypeUnauthorized, "invalid API key").
			WithHeader("WWW-Authenticate", `Bearer realm="trine", error="invalid_token"`)
	}
	if !key.HasScope(scope) {
		return key, httperr.New(http.StatusForbidden, httperr.TypeForbidden,
			"API key lacks the "+scope+" scope")
	}
	return key, nil
}

// bearerToken extracts the credential from an Authorization header. The
// scheme name is case-insensitive (RFC 9110, section 11.1).
func bearerToken(header string) (string, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// Len returns the number of keys.
func (kr *Keyring) Len() int { return len(kr.keys) }
