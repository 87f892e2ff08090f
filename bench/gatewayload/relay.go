package main

import (
	"bytes"
	"flag"
	"io"
	"net/http"
	"strings"
)

// relay serves a bare second hop: every request is read, sent to the same
// path on the upstream and the answer copied back, with nothing else (no
// auth, limits, metrics or logs). Beside the gateway's figures it shows
// what the hop itself costs on the machine, and so what the gateway adds on
// top of it.
func relay(args []string) {
	fs := flag.NewFlagSet("relay", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	upstream := fs.String("upstream", "", "base URL of the upstream, e.g. http://127.0.0.1:8081")
	_ = fs.Parse(args)
	base := strings.TrimSuffix(*upstream, "/")
	client := &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: 1024, DisableCompression: true,
	}}
	serve(*addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Read whole, as the gateway does, so both hops send the body the
		// same way: in one write with its length declared.
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		req, err := http.NewRequestWithContext(r.Context(), r.Method, base+r.URL.RequestURI(), bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		req.Header.Set("Content-Type", r.Header.Get("Content-Type"))
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		h := w.Header()
		h.Set("Content-Type", resp.Header.Get("Content-Type"))
		if resp.ContentLength >= 0 {
			h.Set("Content-Length", resp.Header.Get("Content-Length"))
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}))
}
