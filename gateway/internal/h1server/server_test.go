package h1server_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"trine/gateway/internal/h1server"
)

// hangGuard bounds every blocking step so that a broken server fails a test
// instead of hanging it; it is never a measure of speed.
const hangGuard = 10 * time.Second

type served struct {
	addr string
	done chan struct{}
	err  error
}

// wait returns what Serve returned.
func (s *served) wait() error {
	select {
	case <-s.done:
		return s.err
	case <-time.After(hangGuard):
		return errors.New("Serve did not return")
	}
}

// serve runs s on a loopback listener until the test ends.
func serve(t *testing.T, s *h1server.Server) *served {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sv := &served{addr: ln.Addr().String(), done: make(chan struct{})}
	go func() {
		sv.err = s.Serve(ln)
		close(sv.done)
	}()
	t.Cleanup(func() {
		s.Close()
		if err := sv.wait(); !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
		}
	})
	return sv
}

func serveFunc(t *testing.T, h http.HandlerFunc) *served {
	return serve(t, &h1server.Server{Handler: h})
}

type client struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.SetDeadline(time.Now().Add(hangGuard))
	t.Cleanup(func() { nc.Close() })
	return &client{t: t, nc: nc, br: bufio.NewReader(nc)}
}

func (c *client) send(raw string) {
	c.t.Helper()
	if _, err := io.WriteString(c.nc, raw); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// head reads the next response's status line and headers, leaving the body.
func (c *client) head(method string) *http.Response {
	c.t.Helper()
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		c.t.Fatalf("reading response: %v", err)
	}
	return resp
}

// read reads the next response in full.
func (c *client) read(method string) (*http.Response, string) {
	c.t.Helper()
	resp := c.head(method)
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("reading body: %v", err)
	}
	return resp, string(b)
}

// closed asserts that the server closes the connection with nothing more
// to read.
func (c *client) closed() {
	c.t.Helper()
	rest, err := io.ReadAll(c.br)
	if err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		c.t.Fatalf("waiting for the connection to close: %v", err)
	}
	if len(rest) > 0 {
		c.t.Fatalf("unexpected bytes before close: %q", rest)
	}
}

// ends waits for the server to close the connection, whatever it sends
// first: a handler cancelled by Close may still get its answer out before
// Close reaches the connection.
func (c *client) ends() {
	c.t.Helper()
	if _, err := io.ReadAll(c.br); err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		c.t.Fatalf("waiting for the connection to close: %v", err)
	}
}

func isReset(err error) bool {
	return strings.Contains(err.Error(), "connection reset")
}

func get(path string) string { return "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n" }

func echoPath(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.URL.Path) }

func TestKeepAlive(t *testing.T) {
	sv := serveFunc(t, echoPath)
	c := dial(t, sv.addr)
	for i := range 3 {
		c.send(get(fmt.Sprint("/seq", i)))
		if _, body := c.read("GET"); body != fmt.Sprint("/seq", i) {
			t.Fatalf("request %d: body %q", i, body)
		}
	}
	c.send(get("/p0") + get("/p1") + get("/p2"))
	for i := range 3 {
		if _, body := c.read("GET"); body != fmt.Sprint("/p", i) {
			t.Fatalf("pipelined request %d: body %q", i, body)
		}
	}
}

func TestFraming(t *testing.T) {
	long := strings.Repeat("0123456789abcdef", 320) // 5 KiB
	tests := []struct {
		name    string
		h       http.HandlerFunc
		chunked bool
		length  int64
		body    string
	}{
		{"declared", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "hello")
		}, false, 5, "hello"},
		{"short", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "he")
			io.WriteString(w, "llo")
		}, false, 5, "hello"},
		{"empty", func(w http.ResponseWriter, r *http.Request) {}, false, 0, ""},
		{"long one write", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, long)
		}, true, -1, long},
		{"long many writes", func(w http.ResponseWriter, r *http.Request) {
			for i := 0; i < len(long); i += 1000 {
				io.WriteString(w, long[i:min(i+1000, len(long))])
			}
		}, true, -1, long},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, serveFunc(t, tt.h).addr)
			// A second request shows the framing ended the body where it
			// should.
			c.send(get("/") + get("/"))
			for range 2 {
				resp, body := c.read("GET")
				chunked := len(resp.TransferEncoding) > 0 && resp.TransferEncoding[0] == "chunked"
				if chunked != tt.chunked || resp.ContentLength != tt.length || body != tt.body {
					t.Fatalf("chunked %v, length %d, body %d bytes; want %v, %d, %d bytes",
						chunked, resp.ContentLength, len(body), tt.chunked, tt.length, len(tt.body))
				}
			}
		})
	}
}

func TestFlushSendsFirstChunk(t *testing.T) {
	release := make(chan struct{})
	sv := serveFunc(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
		io.WriteString(w, "second")
	})
	c := dial(t, sv.addr)
	c.send(get("/"))
	resp := c.head("GET")
	if len(resp.TransferEncoding) == 0 || resp.TransferEncoding[0] != "chunked" {
		t.Fatalf("Transfer-Encoding %q, want chunked", resp.TransferEncoding)
	}
	first := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "first" {
		t.Fatalf("first chunk %q, %v", first, err)
	}
	close(release)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "second" {
		t.Fatalf("rest %q, %v", rest, err)
	}
}

func TestHeadHasNoBody(t *testing.T) {
	sv := serveFunc(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	})
	c := dial(t, sv.addr)
	c.send("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n" + get("/"))
	resp, _ := c.read("HEAD")
	if resp.StatusCode != 200 {
		t.Fatalf("HEAD status %d", resp.StatusCode)
	}
	// Had the HEAD answer carried a body, this would read it as a status line.
	if _, body := c.read("GET"); body != "hello" {
		t.Fatalf("GET after HEAD: body %q", body)
	}
}

func TestNoBodyStatuses(t *testing.T) {
	for _, code := range []int{http.StatusNoContent, http.StatusNotModified} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			werr := make(chan error, 1)
			sv := serveFunc(t, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/next" {
					io.WriteString(w, "next")
					return
				}
				w.WriteHeader(code)
				_, err := io.WriteString(w, "body")
				werr <- err
			})
			c := dial(t, sv.addr)
			c.send(get("/") + get("/next"))
			resp := c.head("GET")
			if resp.StatusCode != code || resp.Header.Get("Content-Length") != "" {
				t.Fatalf("status %d, Content-Length %q", resp.StatusCode, resp.Header.Get("Content-Length"))
			}
			if err := <-werr; !errors.Is(err, http.ErrBodyNotAllowed) {
				t.Errorf("Write: %v, want http.ErrBodyNotAllowed", err)
			}
			if _, body := c.read("GET"); body != "next" {
				t.Fatalf("next body %q", body)
			}
		})
	}
}

func TestHTTP10Closes(t *testing.T) {
	sv := serveFunc(t, echoPath)
	c := dial(t, sv.addr)
	c.send("GET /old HTTP/1.0\r\n\r\n")
	resp, body := c.read("GET")
	if body != "/old" || !resp.Close {
		t.Fatalf("body %q, Connection %q", body, resp.Header.Get("Connection"))
	}
	c.closed()
}

func TestClientConnectionClose(t *testing.T) {
	sv := serveFunc(t, echoPath)
	c := dial(t, sv.addr)
	c.send("GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + get("/b"))
	resp, body := c.read("GET")
	if body != "/a" || !resp.Close {
		t.Fatalf("body %q, Connection %q", body, resp.Header.Get("Connection"))
	}
	c.closed()
}

func TestShortDeclaredBodyCloses(t *testing.T) {
	sv := serveFunc(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10")
		io.WriteString(w, "hello")
	})
	c := dial(t, sv.addr)
	c.send(get("/") + get("/"))
	resp := c.head("GET")
	body, err := io.ReadAll(resp.Body)
	if string(body) != "hello" || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("body %q, %v; want hello and io.ErrUnexpectedEOF", body, err)
	}
	c.closed()
}

func TestWriteBeyondDeclaredLength(t *testing.T) {
	werr := make(chan error, 1)
	sv := serveFunc(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "3")
		_, err := io.WriteString(w, "hello")
		werr <- err
		io.WriteString(w, "abc")
	})
	c := dial(t, sv.addr)
	c.send(get("/") + get("/"))
	for i := range 2 {
		if err := <-werr; !errors.Is(err, http.ErrContentLength) {
			t.Fatalf("Write: %v, want http.ErrContentLength", err)
		}
		if _, body := c.read("GET"); body != "abc" {
			t.Fatalf("request %d: body %q", i, body)
		}
	}
}

func post(path string, body string, extra string) string {
	return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n%s", path, len(body), extra, body)
}

func TestUnreadBodyDrained(t *testing.T) {
	sv := serveFunc(t, echoPath)
	c := dial(t, sv.addr)
	c.send(post("/one", strings.Repeat("x", 10000), "") + get("/two"))
	for _, want := range []string{"/one", "/two"} {
		if _, body := c.read("GET"); body != want {
			t.Fatalf("body %q, want %q", body, want)
		}
	}
}

func TestLargeUnreadBodyCloses(t *testing.T) {
	sv := serveFunc(t, echoPath)
	c := dial(t, sv.addr)
	// The server may stop reading before the body is written, so the
	// write cannot be waited for inline.
	go io.WriteString(c.nc, post("/big", strings.Repeat("x", 300<<10), "")+get("/two"))
	if _, body := c.read("POST"); body != "/big" {
		t.Fatalf("body %q", body)
	}
	c.closed()
}

func TestExpectContinue(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	sv := serveFunc(t, func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	})
	c := dial(t, sv.addr)
	c.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	<-entered
	// Nothing may arrive while the handler has not asked for the body; a
	// short wait can only miss an early 100, never invent one.
	_ = c.nc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := c.br.Peek(1); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read before the handler read the body: %v", err)
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(hangGuard))
	close(release)
	if line, err := c.br.ReadString('\n'); err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("interim line %q, %v", line, err)
	}
	if line, _ := c.br.ReadString('\n'); line != "\r\n" {
		t.Fatalf("interim answer not ended: %q", line)
	}
	c.send("hello")
	if resp, body := c.read("POST"); resp.StatusCode != 200 || body != "hello" {
		t.Fatalf("status %d, body %q", resp.StatusCode, body)
	}
}

func TestUnknownExpect(t *testing.T) {
	called := make(chan struct{}, 1)
	sv := serveFunc(t, func(w http.ResponseWriter, r *http.Request) { called <- struct{}{} })
	c := dial(t, sv.addr)
	c.send(post("/", "hello", "Expect: something-else\r\n"))
	if resp, _ := c.read("POST"); resp.StatusCode != http.StatusExpectationFailed {
		t.Fatalf("status %d, want 417", resp.StatusCode)
	}
	c.closed()
	select {
	case <-called:
		t.Fatal("handler called")
	default:
	}
}
