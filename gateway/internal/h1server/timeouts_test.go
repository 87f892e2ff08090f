package h1server_test

import (
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"trine/gateway/internal/h1server"
)

// TestHeaderTimeoutSparesTheBody: once the headers are in, only
// ReadTimeout bounds the body, and without one the body may take its time.
func TestHeaderTimeoutSparesTheBody(t *testing.T) {
	sv := serve(t, &h1server.Server{ReadHeaderTimeout: 100 * time.Millisecond,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, err := io.ReadAll(r.Body)
			if err != nil {
				t.Errorf("reading the body: %v", err)
			}
			w.Write(b)
		})})
	c := dial(t, sv.addr)
	c.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")
	time.Sleep(300 * time.Millisecond) // three header timeouts
	c.send("world")
	if _, body := c.read("POST"); body != "helloworld" {
		t.Fatalf("body %q, want helloworld", body)
	}
}

// TestReadTimeoutBoundsHeaders: without a header timeout, ReadTimeout
// bounds the headers too, as in net/http.
func TestReadTimeoutBoundsHeaders(t *testing.T) {
	sv := serve(t, &h1server.Server{Handler: http.HandlerFunc(echoPath), ReadTimeout: 100 * time.Millisecond})
	c := dial(t, sv.addr)
	c.send("GET / HTTP/1.1\r\nHost: x\r\n")
	c.closed()
}

// TestNewConnectionWithoutRequest: a client that connects and sends
// nothing is held only for the header timeout, not the idle one.
func TestNewConnectionWithoutRequest(t *testing.T) {
	sv := serve(t, &h1server.Server{Handler: http.HandlerFunc(echoPath),
		ReadHeaderTimeout: 100 * time.Millisecond, IdleTimeout: time.Hour})
	c := dial(t, sv.addr)
	c.closed()
}

// TestHalfClosedClientGetsItsAnswer: a client that shuts its sending side
// after the request still reads the answer, even from a handler that ran
// long enough to be watched; the connection then ends.
func TestHalfClosedClientGetsItsAnswer(t *testing.T) {
	sv := serveFunc(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(5 * h1server.WatchAfter)
		io.WriteString(w, "ok")
	})
	c := dial(t, sv.addr)
	c.send(get("/"))
	if err := c.nc.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if resp, body := c.read("GET"); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("status %d body %q, want 200 ok", resp.StatusCode, body)
	}
	c.closed()
}
