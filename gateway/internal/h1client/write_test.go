package h1client

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptrace"
	"slices"
	"strings"
	"testing"
)

// TestWriteRequestMatchesRequestWrite: whichever way a request is written,
// directly or by Request.Write, the bytes are Request.Write's, up to the
// order of header lines.
func TestWriteRequestMatchesRequestWrite(t *testing.T) {
	type build func() *http.Request
	newReq := func(method, url string, body []byte, header map[string][]string) build {
		return func() *http.Request {
			var r io.Reader
			if body != nil {
				r = bytes.NewReader(body)
			}
			req, err := http.NewRequest(method, url, r)
			if err != nil {
				t.Fatal(err)
			}
			for k, vs := range header {
				req.Header[k] = vs
			}
			return req
		}
	}
	relayed := map[string][]string{
		"Content-Type": {"application/json"}, "Accept": {"a", "b"}, "X-Request-Id": {"id-1"},
		"User-Agent": {"trine-gateway"}, "X-Empty": {""}, "X-Tab": {"a\tb"},
	}
	cases := map[string]struct {
		req    build
		direct bool
	}{
		"relayed POST":             {newReq("POST", "http://127.0.0.1:8081/rag/query", []byte(`{"q":1}`), relayed), true},
		"escaped path and query":   {newReq("GET", "http://up:80/c/a%2Fb/..%2F?x=1&y=%20", nil, nil), true},
		"POST without body":        {newReq("POST", "http://up/run", nil, nil), true},
		"DELETE without body":      {newReq("DELETE", "http://up/d", nil, nil), true},
		"IPv6 host":                {newReq("PUT", "http://[::1]:9/p", []byte("x"), nil), true},
		"empty User-Agent":         {newReq("GET", "http://up/", nil, map[string][]string{"User-Agent": {""}}), true},
		"User-Agent without value": {newReq("GET", "http://up/", nil, map[string][]string{"User-Agent": {}}), true},
		"excluded fields": {newReq("POST", "http://up/", []byte("ab"), map[string][]string{
			"Content-Length": {"99"}, "Host": {"evil"}, "Transfer-Encoding": {"chunked"}, "Trailer": {"X"}}), true},
		"value to trim": {newReq("GET", "http://up/", nil, map[string][]string{"X-A": {" padded "}}), false},
		"line break":    {newReq("GET", "http://up/", nil, map[string][]string{"X-A": {"a\r\nX-B: b"}}), false},
		"invalid name":  {newReq("GET", "http://up/", nil, map[string][]string{"X A": {"v"}}), false},
		"Unicode host":  {newReq("GET", "http://bücher.example/", nil, nil), false},
		"zone":          {newReq("GET", "http://[fe80::1%25eth0]:80/", nil, nil), false},
		"unknown length": {func() *http.Request {
			req := newReq("POST", "http://up/", nil, nil)()
			req.Body, req.ContentLength = io.NopCloser(strings.NewReader("streamed")), -1
			return req
		}, false},
		"close": {func() *http.Request {
			req := newReq("GET", "http://up/", nil, nil)()
			req.Close = true
			return req
		}, false},
		"traced": {func() *http.Request {
			req := newReq("GET", "http://up/", nil, nil)()
			return req.WithContext(httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{}))
		}, false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if _, _, ok := plainRequest(tc.req()); ok != tc.direct {
				t.Fatalf("written directly: %v, want %v", ok, tc.direct)
			}
			var got, want bytes.Buffer
			gw := bufio.NewWriter(&got)
			if err := writeRequest(gw, tc.req()); err != nil {
				t.Fatal(err)
			}
			_ = gw.Flush()
			if err := tc.req().Write(&want); err != nil {
				t.Fatal(err)
			}
			if g, w := normalize(got.String()), normalize(want.String()); g != w {
				t.Fatalf("wrote\n%q\nRequest.Write writes\n%q", got.String(), want.String())
			}
		})
	}
}

// normalize sorts the header lines of a request, which the map gives in
// any order.
func normalize(s string) string {
	head, body, _ := strings.Cut(s, "\r\n\r\n")
	lines := strings.Split(head, "\r\n")
	slices.Sort(lines[1:])
	return strings.Join(lines, "\r\n") + "\r\n\r\n" + body
}

func TestWriteRequestBodyLengthMismatch(t *testing.T) {
	for name, n := range map[string]int64{"shorter": 10, "longer": 2} {
		t.Run(name, func(t *testing.T) {
			req, err := http.NewRequest("POST", "http://up/", bytes.NewReader([]byte("abcd")))
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = n
			if err := writeRequest(bufio.NewWriter(io.Discard), req); err == nil {
				t.Fatal("no error for a body whose length differs from ContentLength")
			}
		})
	}
}
