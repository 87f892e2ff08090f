package auth

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
)

// webhookSecretPrefix marks a Standard Webhooks signing secret.
const webhookSecretPrefix = "whsec_"

// MinWebhookSecretBytes is the shortest webhook secret accepted (api/jobs.md).
const MinWebhookSecretBytes = 24

// ParseWebhookSecret decodes a "whsec_" + base64 secret of at least
// MinWebhookSecretBytes bytes into the HMAC key it stands for.
func ParseWebhookSecret(s string) ([]byte, error) {
	errFormat := errors.New(`webhook_secret must be "whsec_" followed by the base64 of at least 24 random bytes (use ` +
		"`trine-gateway keys create`)")
	b64, ok := strings.CutPrefix(s, webhookSecretPrefix)
	if !ok {
		return nil, errFormat
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		key, err = base64.RawStdEncoding.DecodeString(b64)
	}
	if err != nil || len(key) < MinWebhookSecretBytes {
		return nil, errFormat
	}
	return key, nil
}

// NewWebhookSecret returns a fresh random webhook secret of 32 bytes.
func NewWebhookSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // never fails; aborts the program instead
	return webhookSecretPrefix + base64.StdEncoding.EncodeToString(b[:])
}

// KeyByID returns the key with the given id from the keys in use.
func (s *Store) KeyByID(id string) (Key, bool) {
	return s.current.Load().ByID(id)
}

// ByID returns the key with the given id. Ids are not secret, so a plain
// search is fine.
func (kr *Keyring) ByID(id string) (Key, bool) {
	for _, k := range kr.keys {
		if k.ID == id {
			return k, true
		}
	}
	return Key{}, false
}
