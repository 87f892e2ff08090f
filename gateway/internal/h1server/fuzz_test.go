package h1server_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"trine/gateway/internal/h1server"
)

// fuzzHandler reads the body and answers in a framing chosen by the path, so
// that every way of ending a response body is exercised.
func fuzzHandler(w http.ResponseWriter, r *http.Request) {
	n, _ := io.Copy(io.Discard, r.Body)
	switch {
	case strings.HasPrefix(r.URL.Path, "/long"):
		io.WriteString(w, strings.Repeat("x", 5<<10))
	case strings.HasPrefix(r.URL.Path, "/flush"):
		io.WriteString(w, "a")
		w.(http.Flusher).Flush()
		io.WriteString(w, "b")
	case strings.HasPrefix(r.URL.Path, "/length"):
		w.Header().Set("Content-Length", "2")
		io.WriteString(w, "ok")
	case strings.HasPrefix(r.URL.Path, "/empty"):
		w.WriteHeader(http.StatusNoContent)
	default:
		w.Write(append([]byte(r.Method+" "), byte('0'+n%10)))
	}
}

// fuzzMaxInput keeps inputs below the server's header cap, where it answers
// a request it could not read with a GET-shaped 431 that this test's own
// parse of the input cannot predict.
const fuzzMaxInput = http.DefaultMaxHeaderBytes

func FuzzServeConn(f *testing.F) {
	seeds := []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /long HTTP/1.1\r\nHost: x\r\n\r\nHEAD /flush HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /length HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /empty HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /flush HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
		"GET /long HTTP/1.0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET / HTTP/1.1\r\n\r\n",
		"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
		"HEAD / HTTP/1.1\r\nHost: a<b\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nExpect: nope\r\nContent-Length: 1\r\n\r\na",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nshort",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"GARBAGE\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
		"",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	s := &h1server.Server{Handler: http.HandlerFunc(fuzzHandler)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	go s.Serve(ln)
	f.Cleanup(func() { s.Close() })
	addr := ln.Addr().String()

	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > fuzzMaxInput {
			t.Skip()
		}
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(time.Second))
		// Writing alongside the read keeps a server busy answering from
		// filling both directions' buffers; write errors only mean the
		// server stopped reading, which the answers will show.
		go func() {
			nc.Write(in)
			nc.(*net.TCPConn).CloseWrite()
		}()
		out, err := io.ReadAll(nc)
		if err != nil && !isReset(err) {
			t.Fatalf("reading answers: %v (after %d bytes)", err, len(out))
		}
		checkAnswers(t, in, out)
	})
}

// checkAnswers parses out as the answers to the requests in in, in order.
func checkAnswers(t *testing.T, in, out []byte) {
	methods := requestMethods(in)
	br := bufio.NewReader(bytes.NewReader(out))
	for i := 0; ; {
		if _, err := br.Peek(1); err == io.EOF {
			return
		}
		if i > len(methods) {
			t.Fatalf("more answers than requests (%d): %q", len(methods), out)
		}
		// A request the server could not read is answered as a GET.
		method := http.MethodGet
		if i < len(methods) {
			method = methods[i]
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("answer %d: %v\nanswers: %q", i, err, out)
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			t.Fatalf("answer %d body: %v\nanswers: %q", i, err, out)
		}
		if resp.StatusCode >= 200 {
			i++
		}
	}
}

// requestMethods returns the methods of the requests in, as far as they
// can be read, since the server reads them with the same parser.
func requestMethods(in []byte) []string {
	var methods []string
	br := bufio.NewReader(bytes.NewReader(in))
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return methods
		}
		methods = append(methods, req.Method)
		if _, err := io.Copy(io.Discard, req.Body); err != nil && !errors.Is(err, io.EOF) {
			return methods
		}
	}
}
