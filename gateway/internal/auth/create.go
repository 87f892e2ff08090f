package auth

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// NewKeySpec describes a key to add to a keys file.
type NewKeySpec struct {
	// ID, Name and Scopes are as in Key.
	ID     string
	Name   string
	Scopes []string
	// Limits are optional per-key limits; zero fields keep the defaults.
	Limits Limits
}

// NewRawKey returns a fresh random API key in the form the Python tooling
// also produces ("trn_" and 43 URL-safe base64 characters).
func NewRawKey() string {
	var b [32]byte
	// crypto/rand.Read aborts the program rather than return an error.
	_, _ = rand.Read(b[:])
	return "trn_" + base64.RawURLEncoding.EncodeToString(b[:])
}

// CreateKey adds a new random key, with a new webhook secret, to the keys
// file at path (creating the file if it does not exist) and returns the raw
// key, which is stored nowhere (only its hash goes into the file), and the
// webhook secret, which is stored as-is since the gateway signs with it. The file is replaced
// atomically, so a gateway reloading it never reads half of it. The whole
// resulting file is validated before it is written.
func CreateKey(path string, spec NewKeySpec) (raw, webhookSecret string, err error) {
	var f keysFile
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return "", "", err
	default:
		if f, err = decodeFile(data); err != nil {
			return "", "", err
		}
	}
	raw, webhookSecret = NewRawKey(), NewWebhookSecret()
	f.Keys = append(f.Keys, keyEntry{
		ID: spec.ID, Name: spec.Name, SHA256: HashKey(raw), Scopes: spec.Scopes,
		RatePerSecond: spec.Limits.RatePerSecond, Burst: spec.Limits.Burst, MaxInFlight: spec.Limits.MaxInFlight,
		WebhookSecret: webhookSecret,
	})
	out, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return "", "", err
	}
	out = append(out, '\n')
	if _, err := ParseKeys(out); err != nil {
		return "", "", err
	}
	if err := writeFileAtomic(path, out); err != nil {
		return "", "", err
	}
	return raw, webhookSecret, nil
}

// writeFileAtomic writes data to a private temporary file next to path and
// renames it over path, so readers see the old file or the new one, whole.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	// CreateTemp already makes the file 0600: hashes are not secrets, but
	// the file decides who gets in, so only its owner should change it.
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
