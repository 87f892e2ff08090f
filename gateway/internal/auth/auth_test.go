package auth

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"trine/gateway/internal/httperr"
)

func keysJSON(entries ...string) []byte {
	return []byte(`{"keys":[` + strings.Join(entries, ",") + `]}`)
}

func entry(id, hash string, scopes ...string) string {
	s, _ := json.Marshal(scopes)
	return `{"id":"` + id + `","sha256":"` + hash + `","scopes":` + string(s) + `}`
}

func TestHashKey(t *testing.T) {
	// Known answer from sha256sum, so a broken HashKey cannot agree with itself.
	if got := HashKey("secret-key-123"); got != "dc87f94e8f44b5018e54a588eebeaae61eebdb6c256f8f2f61b7c6ba347bca63" {
		t.Errorf("HashKey = %s", got)
	}
}

func TestParseKeys(t *testing.T) {
	h1, h2 := HashKey("one"), HashKey("two")
	tests := []struct {
		name    string
		data    []byte
		wantErr string // "" means valid
	}{
		{"valid", keysJSON(entry("a", h1, "rag"), entry("b", h2, "sandbox", "admin")), ""},
		{"uppercase hex", keysJSON(entry("a", strings.ToUpper(h1), "rag")), ""},
		{"not JSON", []byte(`{"keys":`), "not valid JSON"},
		{"no keys", []byte(`{"keys":[]}`), "no keys"},
		{"unknown field", []byte(`{"keys":[{"id":"a","sha256":"` + h1 + `","scope":["rag"]}]}`), "unknown field"},
		{"trailing data", append(keysJSON(entry("a", h1, "rag")), []byte(` {}`)...), "trailing data"},
		{"empty id", keysJSON(entry("", h1, "rag")), "id must be"},
		{"id with space", keysJSON(entry("a b", h1, "rag")), "id must be"},
		{"short hash", keysJSON(entry("a", h1[:10], "rag")), "64 hexadecimal"},
		{"not hex", keysJSON(entry("a", strings.Repeat("zz", 32), "rag")), "64 hexadecimal"},
		{"raw key instead of hash", keysJSON(entry("a", "my-secret", "rag")), "64 hexadecimal"},
		{"no scopes", keysJSON(entry("a", h1)), "scopes is empty"},
		{"unknown scope", keysJSON(entry("a", h1, "root")), `unknown scope "root"`},
		{"duplicate id", keysJSON(entry("a", h1, "rag"), entry("a", h2, "rag")), "duplicate id"},
		{"duplicate hash", keysJSON(entry("a", h1, "rag"), entry("b", h1, "rag")), "same sha256"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			keys, err := ParseKeys(tc.data)
			if tc.wantErr == "" {
				if err != nil || len(keys) == 0 {
					t.Fatalf("ParseKeys: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %v, want it to mention %q", err, tc.wantErr)
			}
		})
	}
}

func TestParseKeysReportsEveryProblem(t *testing.T) {
	_, err := ParseKeys(keysJSON(entry("", HashKey("x"), "rag"), entry("b", "short", "rag"), entry("c", HashKey("y"), "bogus")))
	if err == nil || strings.Count(err.Error(), "\n") != 2 {
		t.Errorf("want three problems, got %v", err)
	}
}

func FuzzParseKeys(f *testing.F) {
	f.Add(keysJSON(entry("dev", HashKey("k"), "rag", "admin")))
	f.Add([]byte(`{"keys":[{"id":"a","sha256":"00","scopes":[]}]}`))
	f.Add([]byte(`{"keys":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, err := ParseKeys(data)
		if err != nil {
			if keys != nil {
				t.Fatal("keys returned alongside an error")
			}
			return
		}
		ids := map[string]bool{}
		for _, k := range keys {
			if !validKeyID(k.ID) || ids[k.ID] || len(k.Scopes) == 0 {
				t.Fatalf("accepted an invalid key %+v", k)
			}
			ids[k.ID] = true
			for _, s := range k.Scopes {
				if !k.HasScope(s) {
					t.Fatalf("scope %q lost", s)
				}
			}
		}
	})
}

func TestAuthorize(t *testing.T) {
	keys, err := ParseKeys(keysJSON(
		entry("all", HashKey("k-all"), "rag", "sandbox"),
		entry("rag", HashKey("k-rag"), "rag"),
	))
	if err != nil {
		t.Fatal(err)
	}
	kr := NewKeyring(keys)
	tests := []struct {
		name, header, scope string
		wantID              string
		wantCode            int // 0 means allowed
	}{
		{"first key", "Bearer k-all", ScopeSandbox, "all", 0},
		{"second key", "Bearer k-rag", ScopeRAG, "rag", 0},
		{"extra spaces", "Bearer   k-rag  ", ScopeRAG, "rag", 0},
		{"missing", "", ScopeRAG, "", 401},
		{"unknown", "Bearer k-none", ScopeRAG, "", 401},
		{"prefix of a key", "Bearer k-al", ScopeRAG, "", 401},
		{"token scheme", "Token k-all", ScopeRAG, "", 401},
		{"no scope", "Bearer k-rag", ScopeSandbox, "rag", 403},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/", nil)
			if tc.header != "" {
				r.Header.Set("Authorization", tc.header)
			}
			key, err := kr.Authorize(r, tc.scope)
			if key.ID != tc.wantID {
				t.Errorf("key %q, want %q", key.ID, tc.wantID)
			}
			code := 0
			if err != nil {
				code = httperr.As(err).Code
				if strings.Contains(err.Error(), "k-") {
					t.Errorf("error reveals the key: %v", err)
				}
			}
			if code != tc.wantCode {
				t.Errorf("code %d, want %d (%v)", code, tc.wantCode, err)
			}
		})
	}
}
