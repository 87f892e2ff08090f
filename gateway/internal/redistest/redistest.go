// Package redistest starts a private redis-server for tests that need a
// real Redis. Such tests run only when TRINE_TEST_REDIS=1 (make test sets it
// when redis-server is installed; CI installs it) and are skipped otherwise.
package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Start runs redis-server on a free loopback port, without persistence,
// until the test ends, and returns its address. It skips the test unless
// TRINE_TEST_REDIS=1, and fails it when redis-server is missing.
func Start(t testing.TB) string {
	t.Helper()
	if os.Getenv("TRINE_TEST_REDIS") != "1" {
		t.Skip("set TRINE_TEST_REDIS=1 to run the tests that need a real redis-server")
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("TRINE_TEST_REDIS=1 but redis-server is not on PATH: install it (apt-get install redis-server)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(bin, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); c.Ping(context.Background()).Err() != nil; {
		if time.Now().After(deadline) {
			t.Fatal("redis-server did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return addr
}
