package server_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestRunDrainsInFlightRequestsOnShutdown(t *testing.T) {
	arrived := make(chan struct{})
	release := make(chan struct{})
	ml := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-release
		echo("ml-0")(w, r)
	})
	sandbox := newFake(t, echo("sandbox"))
	cfg := testConfig(t, options{}, nil, mustURL(t, sandbox.URL))
	cfg.MLURLs = append(cfg.MLURLs, mustURL(t, ml.URL))
	logs := &syncBuffer{}
	srv := newServer(t, cfg, slog.New(slog.NewJSONHandler(logs, nil)))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(ctx, ln) }()
	waitFor(t, "the listening line", func() bool {
		return strings.Contains(logs.String(), `"msg":"listening","addr":"`+addr+`"`)
	})

	type result struct {
		code int
		body string
		err  error
	}
	answered := make(chan result, 1)
	go func() {
		r, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/rag/query", strings.NewReader(`{"query":"q"}`))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", "Bearer "+fullKey)
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			answered <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		answered <- result{resp.StatusCode, string(b), err}
	}()
	<-arrived
	stop() // as SIGTERM would

	select {
	case err := <-ran:
		t.Fatalf("Run returned (%v) while a request was in flight", err)
	case <-time.After(200 * time.Millisecond):
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("still accepting connections while draining")
	}
	close(release)
	if got := <-answered; got.err != nil || got.code != 200 || got.body != `{"replica":"ml-0"}` {
		t.Errorf("in-flight request: %+v", got)
	}
	select {
	case err := <-ran:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the drain")
	}
}
