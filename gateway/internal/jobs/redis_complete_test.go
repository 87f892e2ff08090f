package jobs

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/redis/go-redis/v9"

	"trine/gateway/internal/redistest"
)

// TestRedisCompleteManyAfterScriptFlush: callbacks sent by script hash
// after Redis lost its scripts (a restart, SCRIPT FLUSH) are applied once
// the script is loaded again, in order, and answered as usual.
func TestRedisCompleteManyAfterScriptFlush(t *testing.T) {
	addr := redistest.Start(t)
	b := redisBackend(addr)(t)
	admin := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { admin.Close() })
	ctx := context.Background()
	first, second := enqueue(t, b.store, NewJob{}), enqueue(t, b.store, NewJob{})
	claims := map[string]claimed{}
	for range 2 {
		c := mustClaim(t, b, "w1", b.clock.Now())
		claims[c.ID] = c
	}
	if err := admin.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	items := []Completion{
		{ID: first.ID, Outcome: Outcome{LeaseToken: claims[first.ID].Token, Kind: OutcomeSucceeded, Result: json.RawMessage(`{"n":1}`)}},
		{ID: second.ID, Outcome: Outcome{LeaseToken: claims[second.ID].Token, Kind: OutcomeSucceeded, Result: json.RawMessage(`{"n":2}`)}},
	}
	res, err := b.store.CompleteMany(ctx, items)
	if err != nil || len(res) != 2 {
		t.Fatalf("%v %+v", err, res)
	}
	for i, r := range res {
		if r.Err != nil || !r.Applied || r.Job.ID != items[i].ID || r.Job.Status != StatusSucceeded {
			t.Errorf("entry %d: %+v", i, r)
		}
	}
	for _, c := range claims {
		if c.ack != nil {
			c.ack()
		}
	}
}
