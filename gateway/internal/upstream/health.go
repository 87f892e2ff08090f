package upstream

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// maxCheckTimeout caps one health probe: a replica that needs longer than
// this to say it is alive should not get traffic.
const maxCheckTimeout = time.Second

// Checker actively probes GET {url}/healthz on every target.
type Checker struct {
	targets  []*Target
	interval time.Duration
	client   *http.Client
	log      *slog.Logger
}

// NewChecker returns a checker probing targets every interval.
func NewChecker(targets []*Target, interval time.Duration, log *slog.Logger) *Checker {
	timeout := min(interval, maxCheckTimeout)
	return &Checker{
		targets:  targets,
		interval: interval,
		log:      log,
		client: &http.Client{
			Timeout: timeout,
			// A separate transport keeps probes from queueing behind
			// proxied traffic for idle connections.
			Transport: &http.Transport{
				Proxy:               nil,
				DialContext:         (&net.Dialer{Timeout: timeout}).DialContext,
				MaxIdleConnsPerHost: 1,
				IdleConnTimeout:     3 * interval,
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// Run probes all targets every interval until ctx is done.
func (c *Checker) Run(ctx context.Context) {
	tick := time.NewTicker(c.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			c.CheckAll(ctx)
		}
	}
}

// CheckAll probes every target once, in parallel so that one slow target
// does not delay the verdict on the others, and returns when all are done.
func (c *Checker) CheckAll(ctx context.Context) {
	var wg sync.WaitGroup
	for _, t := range c.targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := c.probe(ctx, t)
			if ctx.Err() != nil {
				return // shutting down: the probe says nothing about the target
			}
			if t.setHealth(err) {
				if err != nil {
					c.log.WarnContext(ctx, "upstream unhealthy", "upstream", t.Name, "url", t.URL.String(), "error", err.Error())
				} else {
					c.log.InfoContext(ctx, "upstream healthy", "upstream", t.Name, "url", t.URL.String())
				}
			}
		}()
	}
	wg.Wait()
}

func (c *Checker) probe(ctx context.Context, t *Target) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.URL.JoinPath("healthz").String(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "trine-gateway-health")
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	// Draining a little lets the connection be reused for the next probe.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /healthz answered %d", resp.StatusCode)
	}
	return nil
}
