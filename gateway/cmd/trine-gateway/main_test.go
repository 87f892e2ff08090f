package main

import (
	"bytes"
	"crypto/sha256"
	"os"
	"strings"
	"testing"

	"trine/gateway/internal/auth"
)

func TestHashKey(t *testing.T) {
	tests := []struct {
		name, in, want string
		code           int
	}{
		// Expected digests computed independently with sha256sum.
		{"with newline", "secret-key-123\n", "dc87f94e8f44b5018e54a588eebeaae61eebdb6c256f8f2f61b7c6ba347bca63\n", 0},
		{"without newline", "secret-key-123", "dc87f94e8f44b5018e54a588eebeaae61eebdb6c256f8f2f61b7c6ba347bca63\n", 0},
		{"empty", "\n", "", 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			if code := hashKey(strings.NewReader(tc.in), &out); code != tc.code || out.String() != tc.want {
				t.Errorf("code %d output %q", code, out.String())
			}
		})
	}
}

func TestInvalidArgumentsExitTwo(t *testing.T) {
	if code := run([]string{"-no-such-flag"}); code != 2 {
		t.Errorf("exit code %d, want 2", code)
	}
}

func TestKeysCreate(t *testing.T) {
	path := t.TempDir() + "/keys.json"
	var out, errOut bytes.Buffer
	code := createKey([]string{"--keys-file", path, "--id", "ci", "--scopes", "rag,ingest", "--rate", "5"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	raw := strings.TrimSpace(out.String())
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := auth.ParseKeys(data)
	if err != nil || len(keys) != 1 || keys[0].Hash != sha256.Sum256([]byte(raw)) || keys[0].Limits.RatePerSecond != 5 {
		t.Fatalf("keys file %s (err %v) does not hold the printed key", data, err)
	}
	_, secret, _ := strings.Cut(errOut.String(), "keys file): ")
	if key, err := auth.ParseWebhookSecret(strings.TrimSpace(secret)); err != nil || string(key) != string(keys[0].WebhookSecret) {
		t.Errorf("printed webhook secret %q (%v) is not the stored one", secret, err)
	}
	if code := createKey([]string{"--keys-file", path, "--id", "x"}, &out, &errOut); code != 2 {
		t.Errorf("missing --scopes: exit %d, want 2", code)
	}
}
