package h1client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// countingClient returns a client whose dials are counted.
func countingClient(t *testing.T) (*Client, *atomic.Int64) {
	t.Helper()
	var dials atomic.Int64
	d := &net.Dialer{}
	c := New(func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return d.DialContext(ctx, network, addr)
	}, 4, time.Minute)
	t.Cleanup(c.CloseIdle)
	return c, &dials
}

func post(t *testing.T, ctx context.Context, url string, body []byte) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// roundTrip sends one request and reads the whole answer.
func roundTrip(t *testing.T, c *Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return resp, string(data)
}

func TestFramingAndReuse(t *testing.T) {
	cases := []struct {
		name      string
		handler   http.HandlerFunc
		want      string
		wantDials int64 // after three requests
	}{
		{"content length", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "5")
			_, _ = io.WriteString(w, "hello")
		}, "hello", 1},
		{"chunked with trailer", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "X-Sum")
			_, _ = io.WriteString(w, "part one, ")
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, "part two")
			w.Header().Set("X-Sum", "ok")
		}, "part one, part two", 1},
		{"no content", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusNoContent)
		}, "", 1},
		{"connection close", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "close")
			_, _ = io.WriteString(w, "bye")
		}, "bye", 3},
		{"request body echoed", func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(w, r.Body)
		}, "ping", 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			c, dials := countingClient(t)
			for range 3 {
				resp, got := roundTrip(t, c, post(t, context.Background(), srv.URL+"/x", []byte("ping")))
				if got != tc.want {
					t.Fatalf("body %q, want %q", got, tc.want)
				}
				if tc.name == "chunked with trailer" && resp.Trailer.Get("X-Sum") != "ok" {
					t.Fatalf("trailer %q, want ok", resp.Trailer.Get("X-Sum"))
				}
			}
			if n := dials.Load(); n != tc.wantDials {
				t.Fatalf("%d dials, want %d", n, tc.wantDials)
			}
		})
	}
}

func TestLargeBodies(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		_, _ = io.Copy(h, r.Body)
		w.Header().Set("X-Sha256", hex.EncodeToString(h.Sum(nil)))
		// An answer far larger than any socket buffer, without a length.
		for i := range 4 << 10 {
			_, _ = w.Write(bytes.Repeat([]byte{byte(i)}, 1<<10))
		}
	}))
	defer srv.Close()
	c, dials := countingClient(t)
	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<19) // 8 MiB
	want := sha256.Sum256(body)
	for range 2 {
		resp, got := roundTrip(t, c, post(t, context.Background(), srv.URL, body))
		if resp.Header.Get("X-Sha256") != hex.EncodeToString(want[:]) {
			t.Fatal("upstream received a different request body")
		}
		if len(got) != 4<<20 || got[len(got)-1] != 0xff {
			t.Fatalf("answer of %d bytes, want %d", len(got), 4<<20)
		}
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d dials, want 1", n)
	}
}

// TestStreamingReadsArriveUnbuffered checks that each chunk the upstream
// flushes can be read before it sends the next one.
func TestStreamingReadsArriveUnbuffered(t *testing.T) {
	next := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			_, _ = io.WriteString(w, "data: "+string(rune('a'+i))+"\n\n")
			w.(http.Flusher).Flush()
			<-next
		}
	}))
	defer srv.Close()
	c, _ := countingClient(t)
	resp, err := c.RoundTrip(post(t, context.Background(), srv.URL, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 1024)
	for i := range 3 {
		n, err := resp.Body.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if want := "data: " + string(rune('a'+i)) + "\n\n"; string(buf[:n]) != want {
			t.Fatalf("read %q, want %q", buf[:n], want)
		}
		next <- struct{}{}
	}
}

func TestCancellation(t *testing.T) {
	t.Run("waiting for headers", func(t *testing.T) {
		gone := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
			close(gone)
		}))
		defer srv.Close()
		c, _ := countingClient(t)
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(20*time.Millisecond, cancel)
		_, err := c.RoundTrip(post(t, ctx, srv.URL, nil))
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v, want context.Canceled", err)
		}
		<-gone // the upstream saw the connection close
	})
	t.Run("reading the body", func(t *testing.T) {
		gone := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "first")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			close(gone)
		}))
		defer srv.Close()
		c, _ := countingClient(t)
		ctx, cancel := context.WithCancel(context.Background())
		resp, err := c.RoundTrip(post(t, ctx, srv.URL, nil))
		if err != nil {
			t.Fatal(err)
		}
		cancel()
		_, err = io.ReadAll(resp.Body)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v, want context.Canceled", err)
		}
		<-gone
	})
	t.Run("deadline", func(t *testing.T) {
		release := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			<-release
		}))
		defer srv.Close()
		defer close(release)
		c, _ := countingClient(t)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		_, err := c.RoundTrip(post(t, ctx, srv.URL, nil))
		var ne net.Error
		if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("error %v, want a deadline exceeded timeout", err)
		}
	})
	t.Run("close before the end", func(t *testing.T) {
		gone := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/next" {
				return
			}
			_, _ = io.WriteString(w, "first")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			close(gone)
		}))
		defer srv.Close()
		c, dials := countingClient(t)
		resp, err := c.RoundTrip(post(t, context.Background(), srv.URL, nil))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		<-gone // closed, not drained: the upstream stops at once
		if _, err := resp.Body.Read(make([]byte, 1)); !errors.Is(err, errBodyClosed) {
			t.Fatalf("read after close: %v, want errBodyClosed", err)
		}
		roundTrip(t, c, post(t, context.Background(), srv.URL+"/next", nil))
		if n := dials.Load(); n != 2 {
			t.Fatalf("%d dials, want 2: a half-read connection must not be reused", n)
		}
	})
}

func TestDialErrorIsReturnedAsIs(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c, _ := countingClient(t)
	_, err = c.RoundTrip(post(t, context.Background(), "http://"+addr, nil))
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		t.Fatalf("error %v, want a dial *net.OpError", err)
	}
}

func TestUnsupportedScheme(t *testing.T) {
	c, dials := countingClient(t)
	if _, err := c.RoundTrip(post(t, context.Background(), "https://127.0.0.1:1", nil)); err == nil {
		t.Fatal("https request accepted")
	}
	if dials.Load() != 0 {
		t.Fatal("dialled for an unsupported scheme")
	}
}

func TestIdleTimeoutDropsOldConnections(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	var dials atomic.Int64
	c := New(func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}, 4, 0)
	defer c.CloseIdle()
	roundTrip(t, c, post(t, context.Background(), srv.URL, nil))
	roundTrip(t, c, post(t, context.Background(), srv.URL, nil))
	if n := dials.Load(); n != 2 {
		t.Fatalf("%d dials, want 2 with a zero idle timeout", n)
	}
}

func TestHeaderLimit(t *testing.T) {
	srv := rawServer(t, func(int) string {
		return "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", MaxHeaderBytes) + "\r\nContent-Length: 0\r\n\r\n"
	}, false)
	c, _ := countingClient(t)
	if _, err := c.RoundTrip(post(t, context.Background(), srv, nil)); !errors.Is(err, errHeaderTooLarge) {
		t.Fatalf("error %v, want errHeaderTooLarge", err)
	}
}
