package server

import (
	"net/http"
	"net/url"
	"regexp"

	"trine/gateway/internal/auth"
	"trine/gateway/internal/httperr"
)

// collectionName is the public rule for collection names (docs/public-api.md).
// Checking it here keeps malformed names from ever reaching the ML service.
var collectionName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// maxDocumentIDLen bounds a document id taken from the path.
const maxDocumentIDLen = 512

// registerCollections adds the collection routes, each relayed to any
// healthy ML replica at the same path without the /v1 prefix.
func (s *Server) registerCollections() {
	rel := func(method, scope string, withBody bool, path func(*http.Request) (string, error)) func(http.ResponseWriter, *http.Request) error {
		return s.proxyRoute(proxySpec{
			scope: scope, pool: s.ml, method: method, timeout: s.cfg.RAGTimeout,
			readBody: withBody, path: path,
		})
	}
	s.handle("GET /v1/collections", rel(http.MethodGet, auth.ScopeRAG, false, fixedPath("/collections")))
	s.handle("GET /v1/collections/{name}", rel(http.MethodGet, auth.ScopeRAG, false, collectionPath("")))
	s.handle("DELETE /v1/collections/{name}", rel(http.MethodDelete, auth.ScopeIngest, false, collectionPath("")))
	s.handle("POST /v1/collections/{name}/documents", rel(http.MethodPost, auth.ScopeIngest, true, collectionPath("/documents")))
	s.handle("DELETE /v1/collections/{name}/documents/{id}", rel(http.MethodDelete, auth.ScopeIngest, false, documentPath))
}

// fixedPath returns a path builder for a route without parameters.
func fixedPath(p string) func(*http.Request) (string, error) {
	return func(*http.Request) (string, error) { return p, nil }
}

// collectionPath returns a builder of /collections/{name}<suffix>.
func collectionPath(suffix string) func(*http.Request) (string, error) {
	return func(r *http.Request) (string, error) {
		name, err := validCollection(r.PathValue("name"))
		if err != nil {
			return "", err
		}
		return "/collections/" + name + suffix, nil
	}
}

// documentPath builds /collections/{name}/documents/{id}, escaping the id
// so that whatever a client put in it stays one path segment upstream.
func documentPath(r *http.Request) (string, error) {
	name, err := validCollection(r.PathValue("name"))
	if err != nil {
		return "", err
	}
	id := r.PathValue("id")
	// "." and ".." would name the collection or its parent once any
	// server on the way normalises the path.
	if id == "" || id == "." || id == ".." || len(id) > maxDocumentIDLen {
		return "", httperr.New(http.StatusBadRequest, httperr.TypeInvalidRequest, "invalid document id")
	}
	return "/collections/" + name + "/documents/" + url.PathEscape(id), nil
}

func validCollection(name string) (string, error) {
	if !collectionName.MatchString(name) {
		return "", httperr.New(http.StatusBadRequest, httperr.TypeInvalidRequest,
			"invalid collection name: use 1-63 characters from [a-z0-9_-], starting with a letter or digit")
	}
	return name, nil
}
