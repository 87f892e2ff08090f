package jobs

import (
	"os"
	"testing"
)

// TestSchemaIsTheContract fails when the embedded schema drifts from
// api/jobs.sql, which the workers apply too.
func TestSchemaIsTheContract(t *testing.T) {
	contract, err := os.ReadFile("../../../api/jobs.sql")
	if err != nil {
		t.Fatal(err)
	}
	if string(contract) != schema {
		t.Fatal("internal/jobs/schema.sql differs from api/jobs.sql: copy api/jobs.sql over it")
	}
}

func TestIDs(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := NewID()
		if !ValidID(id) || len(id) != 30 || seen[id] {
			t.Fatalf("bad or repeated id %q", id)
		}
		seen[id] = true
	}
	for _, bad := range []string{"", "job_", "job_ABCDEFGHIJKLMNOPQRSTUVWXYZ", "msg_abcdefghijklmnopqrstuvwxyz", "job_abcdefghijklmnopqrstuvwxy1"} {
		if ValidID(bad) {
			t.Errorf("ValidID(%q) = true", bad)
		}
	}
	if got := DeliveryID("job_abc"); got != "msg_abc" {
		t.Errorf("DeliveryID = %q", got)
	}
}

func TestRetryDelay(t *testing.T) {
	tests := []struct {
		attempts int
		jitter   float64
		want     int64
	}{
		{1, 0, 2000}, {3, 0, 8000}, {1, 0.2, 2400}, {1, -0.2, 1600}, {9, 0, 300000}, {60, 0.1, 330000},
	}
	for _, tc := range tests {
		if got := retryDelayMS(tc.attempts, tc.jitter); got != tc.want {
			t.Errorf("retryDelayMS(%d, %v) = %d, want %d", tc.attempts, tc.jitter, got, tc.want)
		}
	}
}
