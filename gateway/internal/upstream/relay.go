package upstream

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"trine/gateway/internal/httperr"
)

// relayedHeaders are the upstream answer's headers passed to the client, in
// canonical form.
var relayedHeaders = []string{"Content-Type", "Cache-Control"}

// relayBuffers recycles copy buffers: one per request would be most of the
// gateway's garbage.
var relayBuffers = sync.Pool{New: func() any {
	b := make([]byte, 32<<10)
	return &b
}}

// Relay sends a 2xx answer to the client as it arrives, flushing after every
// read so that event streams reach the client frame by frame. Any other
// answer becomes an error for the client. It settles the exchange.
func (ex *Exchange) Relay(w http.ResponseWriter, r *http.Request) error {
	ctx, resp, t := r.Context(), ex.Resp, ex.Target
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		he := upstreamFailure(t, resp)
		ex.finish(ctx, nil)
		return he
	}
	// Both header maps hold canonical keys, so the values are moved by
	// direct map access, without canonicalising names on every request.
	h := w.Header()
	for _, k := range relayedHeaders {
		if vs := resp.Header[k]; len(vs) > 0 && vs[0] != "" {
			h[k] = []string{vs[0]}
		}
	}
	// With the upstream's length declared, the flush after the last read
	// sends the whole answer and ends it: no chunked framing, whose closing
	// chunk would go out in another write only after the handler returns,
	// behind the access log and metrics.
	if resp.ContentLength >= 0 && bodyAllowed(resp.StatusCode) {
		h["Content-Length"] = []string{strconv.FormatInt(resp.ContentLength, 10)}
	}
	if timing := TimingFrom(ctx); timing != nil {
		// The upstream's time so far is its time to first byte.
		h["Server-Timing"] = []string{serverTiming(timing, ex)}
	}
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	bufp := relayBuffers.Get().(*[]byte)
	defer relayBuffers.Put(bufp)
	buf := *bufp
	for {
		n, readErr := resp.Body.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				ex.settle(ctx, NoVerdict)
				return httperr.ClientClosed(err)
			}
			// Not every writer can flush (ErrNotSupported); the data then
			// goes out when the handler returns, which is still correct.
			_ = rc.Flush()
		}
		if readErr == io.EOF {
			ex.finish(ctx, nil)
			return nil
		}
		if readErr != nil {
			ex.finish(ctx, readErr)
			he := classify(ctx, t, readErr)
			if he.Code == httperr.StatusClientClosedRequest {
				return he
			}
			// The status line is gone, so no error envelope can follow.
			// Aborting the connection tells the client the body is
			// incomplete instead of letting it pass as a whole answer.
			ex.p.log.WarnContext(ctx, "upstream failed mid-response, aborting", "upstream", t.Name,
				"status", he.Code, "type", he.Type, "cause", readErr.Error())
			panic(http.ErrAbortHandler)
		}
	}
}

// bodyAllowed reports whether a 2xx status may carry a body, and so a
// Content-Length.
func bodyAllowed(code int) bool {
	return code != http.StatusNoContent
}

// serverTiming formats the Server-Timing header of a relayed answer: the
// gateway's own time so far and the upstream's time to first byte, in ms.
func serverTiming(timing *Timing, ex *Exchange) string {
	now := time.Now()
	upstream := timing.Upstream() + now.Sub(ex.Start)
	gw := now.Sub(timing.Start) - upstream
	return "gw;dur=" + Millis(gw) + ", upstream;dur=" + Millis(upstream)
}

// Millis formats d in milliseconds with microsecond precision, as
// Server-Timing durations are written.
func Millis(d time.Duration) string {
	return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 3, 64)
}

// ReadAll reads a whole 2xx answer of at most limit bytes and settles the
// exchange. Any other answer, or a failure while reading, is returned as an
// *httperr.Error, as Relay would have sent it.
func (ex *Exchange) ReadAll(clientCtx context.Context, limit int64) ([]byte, error) {
	resp := ex.Resp
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		he := upstreamFailure(ex.Target, resp)
		ex.finish(clientCtx, nil)
		return nil, he
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err == nil && int64(len(data)) > limit {
		err = fmt.Errorf("answer larger than %d bytes", limit)
	}
	ex.finish(clientCtx, err)
	if err != nil {
		return nil, classify(clientCtx, ex.Target, err)
	}
	return data, nil
}
