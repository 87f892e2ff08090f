package server

import (
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// FuzzDocumentPath checks that whatever a client puts in a collection name
// or document id, the upstream path is either refused or stays exactly
// four segments under /collections with the id unchanged once unescaped.
func FuzzDocumentPath(f *testing.F) {
	f.Add("docs", "a/b c")
	f.Add("docs", "..")
	f.Add("Docs", "x")
	f.Add("d", "%2e%2e")
	f.Fuzz(func(t *testing.T, name, id string) {
		r := httptest.NewRequest("DELETE", "/", nil)
		r.SetPathValue("name", name)
		r.SetPathValue("id", id)
		p, err := documentPath(r)
		if err != nil {
			return
		}
		segs := strings.Split(p, "/")
		if len(segs) != 5 || segs[1] != "collections" || segs[2] != name || segs[3] != "documents" {
			t.Fatalf("name %q id %q gave path %q", name, id, p)
		}
		if got, err := url.PathUnescape(segs[4]); err != nil || got != id || got == "." || got == ".." {
			t.Fatalf("id %q became %q (%v)", id, got, err)
		}
	})
}
