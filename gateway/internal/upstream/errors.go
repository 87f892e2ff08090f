package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"trine/gateway/internal/httperr"
)

// maxErrorBody caps how much of an upstream error answer is read: enough
// for any envelope, small enough that a broken upstream cannot make the
// gateway buffer megabytes.
const maxErrorBody = 64 << 10

// maxPassedMessage caps an upstream message passed on to the client.
const maxPassedMessage = 1024

// classify maps a failed exchange with an upstream to what the client gets.
// It is the single place that decides, after Caddy: the client went away →
// 499 (nothing written); the route's deadline or another timeout → 504;
// anything else → 502. Internal error text goes to the log only.
func classify(clientCtx context.Context, t *Target, err error) *httperr.Error {
	var ne net.Error
	switch {
	case clientCtx.Err() != nil:
		return httperr.ClientClosed(err)
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return httperr.Wrap(http.StatusGatewayTimeout, httperr.TypeUpstreamTimeout,
			"the upstream service did not answer in time", fmt.Errorf("%s: %w", t.Name, err))
	default:
		return httperr.Wrap(http.StatusBadGateway, httperr.TypeUpstreamError,
			"the upstream service failed", fmt.Errorf("%s: %w", t.Name, err))
	}
}

type upstreamEnvelope struct {
	Error *struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
}

// upstreamFailure turns a non-2xx upstream answer into the client's error.
// Internal services speak the public envelope, so a well-formed 4xx is the
// client's own mistake and passes through (the adapter re-stamps the request
// ID). 401 and 403 are the exception: they mean the gateway's internal token
// was refused, which is a gateway misconfiguration, not a client error.
func upstreamFailure(t *Target, resp *http.Response) *httperr.Error {
	raw, readErr := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	typ, msg, wellFormed := parseEnvelope(raw)
	detail := fmt.Errorf("%s answered %d: %q", t.Name, resp.StatusCode, snippet(raw))
	if readErr != nil {
		detail = fmt.Errorf("%w (reading body: %v)", detail, readErr)
	}
	code := resp.StatusCode
	switch {
	case code == http.StatusServiceUnavailable:
		if !wellFormed {
			msg = "the upstream service is temporarily unavailable"
		}
		return httperr.Unavailable(msg, retryAfter(resp.Header.Get("Retry-After")), detail)
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return httperr.Wrap(http.StatusBadGateway, httperr.TypeUpstreamError, "the upstream service failed",
			fmt.Errorf("internal token refused (check TRINE_INTERNAL_TOKEN on both sides): %w", detail))
	case code >= 400 && code <= 499 && wellFormed:
		he := httperr.Wrap(code, typ, msg, detail)
		if ra := resp.Header.Get("Retry-After"); ra != "" {
			he.WithHeader("Retry-After", strconv.Itoa(int(retryAfter(ra)/time.Second)))
		}
		return he
	default:
		return httperr.Wrap(http.StatusBadGateway, httperr.TypeUpstreamError, "the upstream service failed", detail)
	}
}

// parseEnvelope extracts type and message from an error envelope. The type
// must look like one of ours (lowercase letters and underscores) so that
// arbitrary upstream text is never promoted to an error type.
func parseEnvelope(raw []byte) (typ, msg string, ok bool) {
	var env upstreamEnvelope
	if err := json.Unmarshal(raw, &env); err != nil || env.Error == nil {
		return "", "", false
	}
	typ, msg = env.Error.Type, env.Error.Message
	if typ == "" || len(typ) > 64 || msg == "" {
		return "", "", false
	}
	for i := 0; i < len(typ); i++ {
		if c := typ[i]; (c < 'a' || c > 'z') && c != '_' {
			return "", "", false
		}
	}
	if len(msg) > maxPassedMessage {
		// Cutting may split a UTF-8 sequence; drop the broken tail.
		msg = strings.ToValidUTF8(msg[:maxPassedMessage], "")
	}
	return typ, msg, true
}

// retryAfter reads a Retry-After given in seconds, defaulting to one second
// for anything absent, unparsable or unreasonable.
func retryAfter(v string) time.Duration {
	secs, err := strconv.Atoi(v)
	if err != nil || secs < 1 || secs > 3600 {
		return time.Second
	}
	return time.Duration(secs) * time.Second
}

func snippet(b []byte) string {
	const max = 512
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}
