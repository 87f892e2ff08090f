package auth

import (
	"encoding/base64"
	"strings"
	"testing"
)

func TestParseWebhookSecret(t *testing.T) {
	b24 := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef01234567"))
	b23 := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456"))
	tests := []struct {
		secret string
		ok     bool
	}{
		{"whsec_" + b24, true},
		{NewWebhookSecret(), true},
		{"whsec_" + strings.TrimRight(base64.StdEncoding.EncodeToString([]byte("0123456789abcdef012345678")), "="), true},
		{"whsec_" + b23, false},
		{b24, false},
		{"whsec_not base64!", false},
		{"", false},
	}
	for _, tc := range tests {
		key, err := ParseWebhookSecret(tc.secret)
		if (err == nil) != tc.ok || (tc.ok && len(key) < MinWebhookSecretBytes) {
			t.Errorf("%q: key %d bytes, err %v", tc.secret, len(key), err)
		}
	}
}

func TestKeysFileWebhookSecret(t *testing.T) {
	secret := NewWebhookSecret()
	file := `{"keys":[{"id":"a","sha256":"` + HashKey("k") + `","scopes":["jobs"],"webhook_secret":"` + secret + `"}]}`
	keys, err := ParseKeys([]byte(file))
	if err != nil || len(keys[0].WebhookSecret) != 32 {
		t.Fatalf("keys %+v err %v", keys, err)
	}
	bad := strings.Replace(file, secret, "whsec_short", 1)
	if _, err := ParseKeys([]byte(bad)); err == nil || !strings.Contains(err.Error(), `key "a": webhook_secret`) {
		t.Errorf("short secret: %v", err)
	}
}
