package auth

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseKeysOptionalFields(t *testing.T) {
	h := HashKey("one")
	tests := []struct {
		name, entry string
		want        Key
		wantErr     string
	}{
		{"all set", `{"id":"a","name":"CI bot","sha256":"` + h + `","scopes":["rag"],"rate_per_second":2.5,"burst":5,"max_in_flight":3}`,
			Key{ID: "a", Name: "CI bot", Limits: Limits{RatePerSecond: 2.5, Burst: 5, MaxInFlight: 3}}, ""},
		{"absent", `{"id":"a","sha256":"` + h + `","scopes":["rag"]}`, Key{ID: "a"}, ""},
		{"negative rate", `{"id":"a","sha256":"` + h + `","scopes":["rag"],"rate_per_second":-1}`, Key{}, "must be positive"},
		{"negative burst", `{"id":"a","sha256":"` + h + `","scopes":["rag"],"burst":-1}`, Key{}, "must be positive"},
		{"fractional burst", `{"id":"a","sha256":"` + h + `","scopes":["rag"],"burst":1.5}`, Key{}, "not valid JSON"},
		{"control character in name", `{"id":"a","name":"x\ny","sha256":"` + h + `","scopes":["rag"]}`, Key{}, "printable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			keys, err := ParseKeys(keysJSON(tc.entry))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if k := keys[0]; k.ID != tc.want.ID || k.Name != tc.want.Name || k.Limits != tc.want.Limits {
				t.Errorf("got %+v, want %+v", k, tc.want)
			}
		})
	}
}

func TestCreateKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	// A file as the Python tooling writes it must stay readable and intact.
	orig := `{"keys": [{"id": "dev", "sha256": "` + HashKey("dev-key") + `", "scopes": ["rag"]}]}`
	if err := os.WriteFile(path, []byte(orig), 0o600); err != nil {
		t.Fatal(err)
	}
	raw, secret, err := CreateKey(path, NewKeySpec{ID: "ci", Name: "CI", Scopes: []string{"rag", "ingest"},
		Limits: Limits{RatePerSecond: 5, Burst: 10}})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if strings.Contains(string(data), raw) {
		t.Fatal("the raw key was stored")
	}
	keys, err := ParseKeys(data)
	if err != nil || len(keys) != 2 {
		t.Fatalf("keys %v, err %v", keys, err)
	}
	kr := NewKeyring(keys)
	for presented, wantID := range map[string]string{raw: "ci", "dev-key": "dev"} {
		if k, ok := kr.Lookup(presented); !ok || k.ID != wantID {
			t.Errorf("key for %s not found after create", wantID)
		}
	}
	if k, _ := kr.Lookup(raw); k.Name != "CI" || k.Limits.Burst != 10 || !k.HasScope("ingest") {
		t.Errorf("created key %+v", k)
	}
	want, err := ParseWebhookSecret(secret)
	if k, _ := kr.ByID("ci"); err != nil || len(want) != 32 || string(k.WebhookSecret) != string(want) {
		t.Errorf("webhook secret %q (%v) not stored with the key", secret, err)
	}
	if k, _ := kr.ByID("dev"); k.WebhookSecret != nil {
		t.Error("an existing key got a webhook secret")
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode().Perm())
	}
	if _, _, err := CreateKey(path, NewKeySpec{ID: "ci", Scopes: []string{"rag"}}); err == nil || !strings.Contains(err.Error(), "duplicate id") {
		t.Errorf("duplicate id accepted: %v", err)
	}
	if _, _, err := CreateKey(path, NewKeySpec{ID: "x", Scopes: []string{"root"}}); err == nil {
		t.Error("unknown scope accepted")
	}
	if after, _ := os.ReadFile(path); string(after) != string(data) {
		t.Error("a refused create changed the file")
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}

func TestCreateKeyNewFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new.json")
	raw, _, err := CreateKey(path, NewKeySpec{ID: "first", Scopes: []string{"sandbox"}})
	if err != nil || !strings.HasPrefix(raw, "trn_") || len(raw) != 47 {
		t.Fatalf("raw %q err %v", raw, err)
	}
}

func TestStoreReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(string(keysJSON(entry("old", HashKey("old-key"), "rag"))))
	data, _ := os.ReadFile(path)
	keys, _ := ParseKeys(data)
	st := NewStore(path, keys)
	authorized := func(key string) bool {
		r := httptest.NewRequest("POST", "/", nil)
		r.Header.Set("Authorization", "Bearer "+key)
		_, err := st.Authorize(r, ScopeRAG)
		return err == nil
	}

	write(string(keysJSON(entry("new", HashKey("new-key"), "rag"))))
	if n, err := st.Reload(); err != nil || n != 1 {
		t.Fatalf("reload: %d %v", n, err)
	}
	if authorized("old-key") || !authorized("new-key") {
		t.Error("reload did not replace the keys")
	}

	write(`{"keys":[{"id":"broken"`)
	if _, err := st.Reload(); err == nil {
		t.Fatal("a broken file was accepted")
	}
	if !authorized("new-key") {
		t.Error("a broken file dropped the keys in use")
	}
	os.Remove(path)
	if _, err := st.Reload(); err == nil || !authorized("new-key") {
		t.Error("a missing file dropped the keys in use")
	}
}
