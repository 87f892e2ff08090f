package h1client

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// serveRaw runs handle on every connection to a new listener and returns
// its URL. Tests use it to send answers no well-behaved server would.
func serveRaw(t testing.TB, handle func(c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, ln, handle)
	return "http://" + ln.Addr().String()
}

// serveOn runs handle on every connection accepted from ln until the test
// ends.
func serveOn(t testing.TB, ln net.Listener, handle func(c net.Conn, br *bufio.Reader)) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c, bufio.NewReader(c))
			}()
		}
	}()
}

// readRequest reads one request and its body from br.
func readRequest(br *bufio.Reader) error {
	req, err := http.ReadRequest(br)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, req.Body)
	return err
}

// rawServer answers each request with answer(i), i counting requests over
// all connections, closing the connection after each answer if once is set.
func rawServer(t testing.TB, answer func(i int) string, once bool) string {
	var n atomic.Int64
	return serveRaw(t, func(c net.Conn, br *bufio.Reader) {
		for readRequest(br) == nil {
			if _, err := io.WriteString(c, answer(int(n.Add(1)-1))); err != nil || once {
				return
			}
		}
	})
}

const okAnswer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

func TestRawAnswers(t *testing.T) {
	cases := []struct {
		name      string
		answer    string
		wantErr   bool
		wantDials int64 // after two requests
	}{
		{"interim responses skipped", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + okAnswer, false, 1},
		{"switching protocols refused", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", true, 2},
		{"bytes after the answer", okAnswer + "HTTP/1.1 200 OK\r\n", false, 2},
		{"HTTP/1.0 without keep-alive", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", false, 2},
		{"malformed status line", "HTTP/1.1 2000 OK\r\n\r\n", true, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			url := rawServer(t, func(int) string { return tc.answer }, false)
			c, dials := countingClient(t)
			for range 2 {
				resp, err := c.RoundTrip(post(t, context.Background(), url, nil))
				if tc.wantErr {
					if err == nil {
						t.Fatalf("status %d accepted", resp.StatusCode)
					}
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				if data, err := io.ReadAll(resp.Body); err != nil || string(data) != "ok" || resp.StatusCode != 200 {
					t.Fatalf("status %d body %q err %v, want 200 ok", resp.StatusCode, data, err)
				}
			}
			if n := dials.Load(); n != tc.wantDials {
				t.Fatalf("%d dials, want %d", n, tc.wantDials)
			}
		})
	}
}

// TestRetryWhenKeptAliveConnectionCloses: the upstream closes a kept-alive
// connection after reading a request, without answering, as a server whose
// keep-alive timeout fires at that moment does. The request goes out once
// more on a new connection.
func TestRetryWhenKeptAliveConnectionCloses(t *testing.T) {
	var seen atomic.Int64
	url := serveRaw(t, func(c net.Conn, br *bufio.Reader) {
		for i := 0; readRequest(br) == nil; i++ {
			seen.Add(1)
			if i > 0 {
				return
			}
			_, _ = io.WriteString(c, okAnswer)
		}
	})
	c, dials := countingClient(t)
	for range 2 {
		if _, body := roundTrip(t, c, post(t, context.Background(), url, []byte("{}"))); body != "ok" {
			t.Fatalf("body %q, want ok", body)
		}
	}
	if d, s := dials.Load(), seen.Load(); d != 2 || s != 3 {
		t.Fatalf("%d dials and %d requests seen, want 2 and 3", d, s)
	}
}

func TestNoRetryOnNewConnection(t *testing.T) {
	url := serveRaw(t, func(c net.Conn, br *bufio.Reader) { _ = readRequest(br) })
	c, dials := countingClient(t)
	_, err := c.RoundTrip(post(t, context.Background(), url, []byte("{}")))
	var closed *idleClosedError
	if err == nil || errors.As(err, &closed) {
		t.Fatalf("error %v, want a plain failure", err)
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d dials, want 1: a request on a new connection is not retried", n)
	}
}

func TestPeerOpen(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dial := func(t *testing.T) (client, server net.Conn) {
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		server, err = ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { client.Close(); server.Close() })
		return client, server
	}
	// Segments travel asynchronously, even on loopback: each case waits
	// for peerOpen to notice, and fails by the test's timeout if it never
	// does.
	waitClosed := func(c net.Conn) {
		for peerOpen(c) {
			runtime.Gosched()
		}
	}

	client, _ := dial(t)
	if !peerOpen(client) {
		t.Fatal("idle connection reported closed")
	}

	client, server := dial(t)
	_, _ = server.Write([]byte("x"))
	waitClosed(client)
	if n, err := client.Read(make([]byte, 1)); n != 1 || err != nil {
		t.Fatalf("stray byte not readable after peerOpen (n=%d, %v): it must only peek", n, err)
	}
	if !peerOpen(client) {
		t.Fatal("connection reported closed once the stray byte was read")
	}

	client, server = dial(t)
	server.Close()
	waitClosed(client)
}

// FuzzExchange sends arbitrary bytes as an upstream's first answer. Parsing
// is net/http's; what is checked is what the client does around it: the
// answer read through the client matches the same bytes read directly,
// and the connection is reused only when the answer ended exactly where
// the next one starts, so the next request always gets its own answer.
func FuzzExchange(f *testing.F) {
	for _, seed := range []string{
		okAnswer,
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
		"HTTP/1.1 200 OK\r\n\r\nuntil close",
		"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\n" + okAnswer,
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nokay",
		"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
		"garbage",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, answer []byte) {
		wantStatus, wantBody, wantOK, keep := oracle(answer)
		// A Unix socket: TCP would run out of ports at fuzzing rates, each
		// run leaving connections in TIME_WAIT.
		dir, err := os.MkdirTemp("", "h1")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		sock := filepath.Join(dir, "s")
		ln, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		var n atomic.Int64
		serveOn(t, ln, func(c net.Conn, br *bufio.Reader) {
			for readRequest(br) == nil {
				if n.Add(1) > 1 {
					_, _ = io.WriteString(c, okAnswer)
					continue
				}
				if _, err := c.Write(answer); err != nil || !keep {
					return
				}
			}
		})
		c := New(func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}, 4, time.Minute)
		defer c.CloseIdle()
		const url = "http://upstream"
		resp, err := c.RoundTrip(post(t, context.Background(), url, []byte("{}")))
		var body []byte
		if err == nil {
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if gotOK := err == nil; gotOK != wantOK {
			t.Fatalf("client error %v, direct read ok=%v", err, wantOK)
		}
		if wantOK && (resp.StatusCode != wantStatus || !bytes.Equal(body, wantBody)) {
			t.Fatalf("client got %d %q, direct read %d %q", resp.StatusCode, body, wantStatus, wantBody)
		}
		if _, second := roundTrip(t, c, post(t, context.Background(), url, nil)); second != "ok" {
			t.Fatalf("next request got %q, want ok", second)
		}
	})
}

// oracle reads answer as one final response from a buffer and reports
// what the client must see, and whether a server may keep the connection
// open for another request after sending it (a complete answer that does
// not end with the connection).
func oracle(answer []byte) (status int, body []byte, ok, keep bool) {
	req, _ := http.NewRequest(http.MethodPost, "http://upstream/", nil)
	br := bufio.NewReader(bytes.NewReader(answer))
	resp, err := readFinal(br, req)
	if err != nil {
		return 0, nil, false, false
	}
	body, err = io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, false, false
	}
	return resp.StatusCode, body, true, !resp.Close
}
