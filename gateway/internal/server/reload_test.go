package server_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"trine/gateway/internal/auth"
)

func TestReloadKeysWhileServing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	h := newHarness(t, options{keysFile: path})
	write := func(entries string) {
		if err := os.WriteFile(path, []byte(`{"keys":[`+entries+`]}`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	full := `{"id":"full","sha256":"` + auth.HashKey(fullKey) + `","scopes":["rag"]}`
	extra := `{"id":"extra","sha256":"` + auth.HashKey("extra-key") + `","scopes":["rag"]}`
	write(full)

	// Requests keep flowing while the file is reloaded over and over.
	var wg sync.WaitGroup
	var failed atomic.Int64
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := h.gw.Client().Do(h.newRequest(t, context.Background(), rag()))
				if err != nil || resp.StatusCode != 200 {
					failed.Add(1)
				}
				if err == nil {
					resp.Body.Close()
				}
			}
		}()
	}
	for i := range 50 {
		if i%2 == 0 {
			write(full + "," + extra)
		} else {
			write(full)
		}
		if err := h.srv.ReloadKeys(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d requests failed during reloads", n)
	}

	withExtra := rag()
	withExtra.key = "extra-key"
	if resp := h.do(t, withExtra); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("removed key: status %d", resp.StatusCode)
	}
	write(full + "," + extra)
	if err := h.srv.ReloadKeys(context.Background()); err != nil {
		t.Fatal(err)
	}
	if resp := h.do(t, withExtra); resp.StatusCode != 200 {
		t.Errorf("added key: status %d", resp.StatusCode)
	}
	// A broken file keeps the keys in use and says why in the log.
	write(`{"id":"broken"`)
	if err := h.srv.ReloadKeys(context.Background()); err == nil {
		t.Fatal("broken file accepted")
	}
	if resp := h.do(t, withExtra); resp.StatusCode != 200 {
		t.Errorf("after a broken file: status %d", resp.StatusCode)
	}
	if !strings.Contains(h.logs.String(), "keys file not reloaded, keeping the previous keys") {
		t.Error("the refused reload was not logged")
	}
}
