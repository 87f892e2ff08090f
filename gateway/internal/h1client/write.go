package h1client

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
)

// defaultUserAgent is what Request.Write sends when the request sets none.
const defaultUserAgent = "Go-http-client/1.1"

// writeRequest writes req as Request.Write would, and closes its body.
//
// A relayed request (a body held in memory, or none, with its length known,
// to a plain host) is written directly: Request.Write formats with fmt,
// sorts the header names and runs every value through a replacer, which
// make up most of the client's own work per request. Every other request,
// and any request whose header would need cleaning, goes to Request.Write.
func writeRequest(w *bufio.Writer, req *http.Request) error {
	host, uri, ok := plainRequest(req)
	if !ok {
		return req.Write(w)
	}
	if req.Body != nil {
		defer req.Body.Close()
	}
	w.WriteString(req.Method)
	w.WriteByte(' ')
	w.WriteString(uri)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(host)
	w.WriteString("\r\n")
	ua := defaultUserAgent
	if vs, ok := req.Header["User-Agent"]; ok {
		ua = ""
		if len(vs) > 0 {
			ua = vs[0]
		}
	}
	if ua != "" {
		writeField(w, "User-Agent", ua)
	}
	// Request.Write's rule: a positive length always, and an empty body
	// declared on the methods that usually carry one.
	switch {
	case req.ContentLength > 0:
		writeField(w, "Content-Length", strconv.FormatInt(req.ContentLength, 10))
	case req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch:
		writeField(w, "Content-Length", "0")
	}
	for k, vs := range req.Header {
		if excludedField(k) {
			continue
		}
		for _, v := range vs {
			writeField(w, k, v)
		}
	}
	w.WriteString("\r\n")
	if req.ContentLength == 0 {
		return nil
	}
	n, err := io.CopyN(w, req.Body, req.ContentLength)
	if err == io.EOF || (err == nil && n == req.ContentLength && !atEOF(req.Body)) {
		err = fmt.Errorf("http: ContentLength=%d with Body length %d", req.ContentLength, n)
	}
	return err
}

// plainRequest reports whether req can be written directly, and the Host
// header and request target to send.
func plainRequest(req *http.Request) (host, uri string, ok bool) {
	if req.URL == nil || req.Method == "" || req.Method == http.MethodConnect || req.Close ||
		len(req.TransferEncoding) > 0 || len(req.Trailer) > 0 {
		return "", "", false
	}
	switch {
	case req.ContentLength == 0:
		if req.Body != nil && req.Body != http.NoBody {
			return "", "", false
		}
	case req.ContentLength < 0, req.Body == nil, req.Body == http.NoBody, req.GetBody == nil:
		return "", "", false
	}
	if httptrace.ContextClientTrace(req.Context()) != nil {
		return "", "", false
	}
	host = req.Host
	if host == "" {
		host = req.URL.Host
	}
	uri = req.URL.RequestURI()
	if !plainHost(host) || !noControl(uri) {
		return "", "", false
	}
	for k, vs := range req.Header {
		if !validName(k) {
			return "", "", false
		}
		for _, v := range vs {
			if !plainValue(v) || (v != "" && (isSpace(v[0]) || isSpace(v[len(v)-1]))) {
				return "", "", false
			}
		}
	}
	return host, uri, true
}

func writeField(w *bufio.Writer, name, value string) {
	w.WriteString(name)
	w.WriteString(": ")
	w.WriteString(value)
	w.WriteString("\r\n")
}

// excludedField reports whether Request.Write leaves a header of the map
// out, writing it from the request's fields instead.
func excludedField(k string) bool {
	switch k {
	case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
		return true
	}
	return false
}

// atEOF reports whether r has nothing left, as Request.Write checks that a
// body is no longer than its declared length.
func atEOF(r io.Reader) bool {
	var b [1]byte
	n, _ := r.Read(b[:])
	return n == 0
}

// plainHost accepts host names, IPv4 and bracketed IPv6 addresses with a
// port: nothing Request.Write would convert (Unicode names) or strip (IPv6
// zones).
func plainHost(h string) bool {
	if h == "" {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '.' || c == '-' || c == ':' || c == '[' || c == ']') {
			return false
		}
	}
	return true
}

// noControl reports whether s holds no control characters, which
// Request.Write refuses in a request target.
func noControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// plainValue reports whether a header value holds no control characters
// but tabs: Request.Write would replace line breaks.
func plainValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' }

// validName reports whether k is an HTTP token (RFC 9110, section 5.6.2).
func validName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
