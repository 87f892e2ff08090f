package auth

import (
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
)

// Store is the keyring in use, replaced as a whole when the keys file is
// reloaded. Requests read it without locking, so a reload never blocks or
// drops a request: each request sees either the old keys or the new ones.
type Store struct {
	path    string
	current atomic.Pointer[Keyring]
	mu      sync.Mutex // serialises Reload, so the last file read wins
}

// NewStore returns a store serving keys, reloadable from path.
func NewStore(path string, keys []Key) *Store {
	s := &Store{path: path}
	s.current.Store(NewKeyring(keys))
	return s
}

// Reload reads and validates the keys file and, only if it is valid,
// replaces the keys in use; an invalid file leaves them unchanged. It
// returns the number of keys now in use.
func (s *Store) Reload() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, err := os.ReadFile(s.path)
	if err != nil {
		return s.current.Load().Len(), fmt.Errorf("keys file: %w", err)
	}
	keys, err := ParseKeys(data)
	if err != nil {
		return s.current.Load().Len(), fmt.Errorf("keys file %s: %w", s.path, err)
	}
	s.current.Store(NewKeyring(keys))
	return len(keys), nil
}

// Authorize checks the request's key against the keys in use; see
// Keyring.Authorize.
func (s *Store) Authorize(r *http.Request, scope string) (Key, error) {
	return s.current.Load().Authorize(r, scope)
}
