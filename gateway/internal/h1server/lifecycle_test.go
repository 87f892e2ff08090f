package h1server_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"trine/gateway/internal/h1server"
)

func TestRejects(t *testing.T) {
	tests := []struct {
		name   string
		raw    string
		status int
	}{
		{"malformed request line", "GARBAGE\r\n\r\n", http.StatusBadRequest},
		{"headers too large", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 16<<10) + "\r\n\r\n", http.StatusRequestHeaderFieldsTooLarge},
		{"missing host", "GET / HTTP/1.1\r\n\r\n", http.StatusBadRequest},
		{"malformed host", "GET / HTTP/1.1\r\nHost: a<b\r\n\r\n", http.StatusBadRequest},
		{"HTTP/2.0", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", http.StatusHTTPVersionNotSupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, hook := range []bool{true, false} {
				var mu sync.Mutex
				var got []int
				s := &h1server.Server{
					Handler:        http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { t.Error("handler called") }),
					MaxHeaderBytes: 256,
				}
				if hook {
					s.Reject = func(w http.ResponseWriter, status int, msg string) {
						mu.Lock()
						got = append(got, status)
						mu.Unlock()
						w.WriteHeader(status)
						io.WriteString(w, "rejected by hook")
					}
				}
				c := dial(t, serve(t, s).addr)
				c.send(tt.raw + get("/"))
				resp, body := c.read("GET")
				if resp.StatusCode != tt.status {
					t.Fatalf("hook %v: status %d, want %d", hook, resp.StatusCode, tt.status)
				}
				if hook && body != "rejected by hook" {
					t.Fatalf("hook not used: body %q", body)
				}
				if !hook && (body == "" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain")) {
					t.Fatalf("default answer: Content-Type %q, body %q", resp.Header.Get("Content-Type"), body)
				}
				c.closed()
				mu.Lock()
				if hook && (len(got) != 1 || got[0] != tt.status) {
					t.Errorf("Reject called with %v", got)
				}
				mu.Unlock()
			}
		})
	}
}

func TestReadHeaderTimeout(t *testing.T) {
	sv := serve(t, &h1server.Server{Handler: http.HandlerFunc(echoPath), ReadHeaderTimeout: 100 * time.Millisecond})
	// A request line cut short reaches the parser as a whole (malformed)
	// line once the read fails, so it may be answered with a 400 before
	// the close, as net/http answers it.
	c := dial(t, sv.addr)
	c.send("GET /half")
	rest, err := io.ReadAll(c.br)
	if err != nil && !isReset(err) {
		t.Fatalf("waiting for the connection to close: %v", err)
	}
	if len(rest) > 0 && !strings.HasPrefix(string(rest), "HTTP/1.1 400 ") {
		t.Fatalf("unexpected answer: %q", rest)
	}

	c = dial(t, sv.addr)
	c.send("GET / HTTP/1.1\r\nHost: x\r\n")
	c.closed()
}

func TestIdleTimeout(t *testing.T) {
	sv := serve(t, &h1server.Server{Handler: http.HandlerFunc(echoPath), IdleTimeout: 100 * time.Millisecond})
	c := dial(t, sv.addr)
	c.send(get("/"))
	c.read("GET")
	c.closed()
}

// syncBuffer is a log destination that handlers write to while the test
// reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestPanics(t *testing.T) {
	var logs syncBuffer
	s := &h1server.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/abort":
				io.WriteString(w, "partial")
				panic(http.ErrAbortHandler)
			case "/boom":
				panic("boom")
			}
			io.WriteString(w, "fine")
		}),
		Log: slog.New(slog.NewTextHandler(&logs, nil)),
	}
	sv := serve(t, s)
	c := dial(t, sv.addr)
	c.send(get("/abort") + get("/"))
	c.closed()
	if logs.String() != "" {
		t.Fatalf("http.ErrAbortHandler logged: %s", logs.String())
	}

	c = dial(t, sv.addr)
	c.send(get("/boom") + get("/"))
	c.closed()
	if out := logs.String(); !strings.Contains(out, "boom") || !strings.Contains(out, "stack") {
		t.Fatalf("panic not logged with its stack: %s", out)
	}

	c = dial(t, sv.addr)
	c.send(get("/"))
	if _, body := c.read("GET"); body != "fine" {
		t.Fatalf("after panics: body %q", body)
	}
}

func TestClientGoneCancelsContext(t *testing.T) {
	entered := make(chan struct{})
	cause := make(chan error, 1)
	sv := serveFunc(t, func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		close(entered)
		<-r.Context().Done()
		cause <- context.Cause(r.Context())
	})
	c := dial(t, sv.addr)
	c.send(post("/", "hello", ""))
	<-entered
	c.nc.Close()
	select {
	case err := <-cause:
		if err == nil || errors.Is(err, context.Canceled) {
			t.Fatalf("context cause %v, want the client's departure", err)
		}
	case <-time.After(hangGuard):
		t.Fatal("handler's context not cancelled after the client left")
	}
}

// TestLongRequestKeepsConnection runs requests long enough to be watched and
// checks that the watcher hands the connection back intact.
func TestLongRequestKeepsConnection(t *testing.T) {
	sv := serveFunc(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/slow" {
			time.Sleep(5 * h1server.WatchAfter)
		}
		if r.Context().Err() != nil {
			t.Errorf("%s: context ended: %v", r.URL.Path, context.Cause(r.Context()))
		}
		w.Write(append([]byte(r.URL.Path), b...))
	})
	c := dial(t, sv.addr)
	for range 3 {
		c.send(post("/slow", "-a", ""))
		if _, body := c.read("POST"); body != "/slow-a" {
			t.Fatalf("slow request: body %q", body)
		}
		c.send(get("/next"))
		if _, body := c.read("GET"); body != "/next" {
			t.Fatalf("request after a slow one: body %q", body)
		}
	}
}

// TestPipelinedDuringWatch sends the next request while a watched request
// runs: the byte the watcher reads must reach the next request.
func TestPipelinedDuringWatch(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	sv := serveFunc(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(entered)
			<-release
		}
		io.WriteString(w, r.URL.Path)
	})
	c := dial(t, sv.addr)
	c.send(get("/slow"))
	<-entered
	// Long enough for the sweeps to start a watcher, which then reads the
	// first byte of what follows.
	time.Sleep(5 * h1server.WatchAfter)
	c.send(get("/second"))
	// Give the watcher the chance to take that byte before the handler
	// returns; if it does not, the test is merely weaker.
	time.Sleep(2 * h1server.WatchAfter)
	close(release)
	for _, want := range []string{"/slow", "/second"} {
		if _, body := c.read("GET"); body != want {
			t.Fatalf("body %q, want %q", body, want)
		}
	}
}

func TestShutdown(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	s := &h1server.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			close(entered)
			<-release
		}
		io.WriteString(w, r.URL.Path)
	})}
	sv := serve(t, s)
	idle := dial(t, sv.addr)
	idle.send(get("/idle"))
	idle.read("GET")
	busy := dial(t, sv.addr)
	busy.send(get("/block"))
	<-entered

	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	idle.closed()
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	default:
	}
	close(release)
	resp, body := busy.read("GET")
	if body != "/block" || !resp.Close {
		t.Fatalf("in-flight answer: body %q, Connection %q", body, resp.Header.Get("Connection"))
	}
	busy.closed()
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := sv.wait(); !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
}

func TestShutdownExpiredThenClose(t *testing.T) {
	entered := make(chan struct{})
	cause := make(chan error, 1)
	s := &h1server.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done()
		cause <- r.Context().Err()
	})}
	sv := serve(t, s)
	c := dial(t, sv.addr)
	c.send(get("/"))
	<-entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown: %v, want context.Canceled", err)
	}
	select {
	case err := <-cause:
		t.Fatalf("request context ended by Shutdown: %v", err)
	default:
	}
	s.Close()
	if err := <-cause; err == nil {
		t.Fatal("request context not ended by Close")
	}
	c.ends()
}

func TestCloseCancelsRequests(t *testing.T) {
	var entered sync.WaitGroup
	entered.Add(2)
	cause := make(chan error, 2)
	s := &h1server.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered.Done()
		<-r.Context().Done()
		cause <- r.Context().Err()
	})}
	sv := serve(t, s)
	a, b := dial(t, sv.addr), dial(t, sv.addr)
	a.send(get("/"))
	b.send(post("/", "body", ""))
	entered.Wait()
	s.Close()
	for range 2 {
		if err := <-cause; err == nil {
			t.Fatal("request context not ended")
		}
	}
	a.ends()
	b.ends()
	if err := sv.wait(); !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
}
