package main

import (
	"bytes"
	"strings"
	"testing"
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
