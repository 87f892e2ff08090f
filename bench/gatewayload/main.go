// Command gatewayload measures an HTTP hop for the gateway benchmark
// (bench/gateway_overhead.py). It has three modes:
//
//	gatewayload echo -addr 127.0.0.1:0        a minimal upstream: /healthz, and any POST echoed as a small JSON answer
//	gatewayload relay -upstream URL           a bare relay to URL (same path), to price a second HTTP hop alone
//	gatewayload load -url U [-key K] ...       drive U and print latency percentiles and throughput as JSON
//	                                          (-expect 202 for routes that answer 202;
//	                                          -header "Name: value", repeatable, adds a header)
//
// Load is either open-model (-rate R: requests start at a constant rate
// whatever the latency, so queueing shows up in the percentiles) or
// closed-loop (-concurrency C: C workers each send the next request when the
// last one is answered, which finds the maximum throughput).
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: gatewayload echo|relay|load [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "echo":
		echo(os.Args[2:])
	case "relay":
		relay(os.Args[2:])
	case "load":
		load(os.Args[2:])
	default:
		fmt.Fprintln(os.Stderr, "usage: gatewayload echo|relay|load [flags]")
		os.Exit(2)
	}
}

// answer is what the echo upstream sends: the size of a short RAG answer.
var answer = []byte(`{"answer":"Paris is the capital of France [1].","sources":[0],"passages":[],"provider":"extractive","model":"echo","usage":{"input_tokens":0,"output_tokens":0}}`)

func echo(args []string) {
	fs := flag.NewFlagSet("echo", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	_ = fs.Parse(args)
	serve(*addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			_, _ = w.Write([]byte(`{"status":"ok"}`))
			return
		}
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(answer)
	}))
}

// serve listens on addr, prints the bound address as the first line of
// output (the orchestrator reads it) and serves h until it fails.
func serve(addr string, h http.Handler) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().String())
	err = http.Serve(ln, h)
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

// headerList collects repeated -header flags.
type headerList []struct{ name, value string }

func (h *headerList) String() string { return fmt.Sprint(len(*h), " headers") }

func (h *headerList) Set(s string) error {
	name, value, ok := strings.Cut(s, ":")
	if !ok || strings.TrimSpace(name) == "" {
		return fmt.Errorf("header %q: want \"Name: value\"", s)
	}
	*h = append(*h, struct{ name, value string }{strings.TrimSpace(name), strings.TrimSpace(value)})
	return nil
}

type result struct {
	Requests int     `json:"requests"`
	Errors   int     `json:"errors"`
	Seconds  float64 `json:"seconds"`
	RPS      float64 `json:"rps"`
	P50US    float64 `json:"p50_us"`
	P99US    float64 `json:"p99_us"`
}

func load(args []string) {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	url := fs.String("url", "", "URL to POST to")
	key := fs.String("key", "", "API key (Authorization: Bearer)")
	body := fs.String("body", `{"query":"Which city is the capital of France?","documents":["Paris is the capital of France."]}`, "request body")
	rate := fs.Float64("rate", 0, "open model: requests per second (0: closed loop)")
	conc := fs.Int("concurrency", 1, "closed loop: concurrent workers")
	dur := fs.Duration("duration", 3*time.Second, "measurement time")
	warm := fs.Int("warmup", 200, "requests sent before measuring")
	expect := fs.Int("expect", http.StatusOK, "status code counted as a success")
	var headers headerList
	fs.Var(&headers, "header", `extra request header "Name: value" (repeatable)`)
	_ = fs.Parse(args)

	client := &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: 1024, MaxConnsPerHost: 0, DisableCompression: true,
	}, Timeout: 10 * time.Second}
	send := func() (time.Duration, bool) {
		req, _ := http.NewRequest(http.MethodPost, *url, bytes.NewReader([]byte(*body)))
		req.Header.Set("Content-Type", "application/json")
		if *key != "" {
			req.Header.Set("Authorization", "Bearer "+*key)
		}
		for _, h := range headers {
			req.Header.Set(h.name, h.value)
		}
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return 0, false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return time.Since(start), resp.StatusCode == *expect
	}
	for range *warm {
		send()
	}

	var mu sync.Mutex
	var lat []time.Duration
	errors := 0
	record := func(d time.Duration, ok bool) {
		mu.Lock()
		defer mu.Unlock()
		if ok {
			lat = append(lat, d)
		} else {
			errors++
		}
	}
	var wg sync.WaitGroup
	start := time.Now()
	if *rate > 0 {
		interval := time.Duration(float64(time.Second) / *rate)
		for next := start; time.Since(start) < *dur; next = next.Add(interval) {
			time.Sleep(time.Until(next))
			wg.Add(1)
			go func() {
				defer wg.Done()
				record(send())
			}()
		}
	} else {
		for range *conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Since(start) < *dur {
					record(send())
				}
			}()
		}
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Nanoseconds()) / 1000
	}
	out := result{Requests: len(lat), Errors: errors, Seconds: elapsed, RPS: float64(len(lat)) / elapsed,
		P50US: pct(0.50), P99US: pct(0.99)}
	_ = json.NewEncoder(os.Stdout).Encode(out)
}
