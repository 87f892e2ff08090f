// Command trine-launch is the entry point of trine's container images.
//
//	trine-launch exec -- PROGRAM [ARG...]   read secrets from files into the environment, then
//	                                        replace this process with PROGRAM
//	trine-launch health [URL]               GET URL (default $TRINE_HEALTHCHECK_URL); exit 0 on 2xx
//
// The services read their secrets from environment variables only, while Docker and Compose
// hand secrets over as files under /run/secrets. For each variable NAME in secretVariables,
// exec sets NAME from the file named by NAME_FILE (one trailing newline removed) unless NAME
// is already set. health exists because the minimal runtime images carry no curl or wget.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// secretVariables are the settings that may carry a credential; only these get a NAME_FILE
// form, so that file-path settings such as TRINE_KEYS_FILE keep their meaning.
var secretVariables = []string{
	"TRINE_INTERNAL_TOKEN",
	"ANTHROPIC_API_KEY",
	"TRINE_OPENAI_API_KEY",
	"REDIS_URL",
	"DATABASE_URL",
}

const usage = `usage: trine-launch exec -- PROGRAM [ARG...]
       trine-launch health [URL]`

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	switch args[0] {
	case "exec":
		rest := args[1:]
		if len(rest) > 0 && rest[0] == "--" {
			rest = rest[1:]
		}
		if len(rest) == 0 {
			fmt.Fprintln(stderr, usage)
			return 2
		}
		if err := loadSecretFiles(os.LookupEnv, os.Setenv, os.ReadFile); err != nil {
			fmt.Fprintf(stderr, "trine-launch: %v\n", err)
			return 2
		}
		program, err := exec.LookPath(rest[0])
		if err != nil {
			fmt.Fprintf(stderr, "trine-launch: %v\n", err)
			return 127
		}
		// Exec keeps the process ID, so the service itself receives SIGTERM and SIGHUP.
		err = syscall.Exec(program, rest, os.Environ())
		fmt.Fprintf(stderr, "trine-launch: exec %s: %v\n", program, err)
		return 126
	case "health":
		url := os.Getenv("TRINE_HEALTHCHECK_URL")
		if len(args) > 1 {
			url = args[1]
		}
		if url == "" {
			fmt.Fprintln(stderr, "trine-launch: health needs a URL or TRINE_HEALTHCHECK_URL")
			return 2
		}
		if err := probe(url, 3*time.Second); err != nil {
			fmt.Fprintf(stderr, "trine-launch: %v\n", err)
			return 1
		}
		return 0
	default:
		fmt.Fprintln(stderr, usage)
		return 2
	}
}

// loadSecretFiles sets each secret variable from its NAME_FILE when NAME itself is unset.
func loadSecretFiles(
	lookup func(string) (string, bool),
	set func(string, string) error,
	read func(string) ([]byte, error),
) error {
	for _, name := range secretVariables {
		path, ok := lookup(name + "_FILE")
		if !ok || path == "" {
			continue
		}
		if value, set := lookup(name); set && value != "" {
			return fmt.Errorf("both %s and %s_FILE are set; keep one", name, name)
		}
		data, err := read(path)
		if err != nil {
			return fmt.Errorf("%s_FILE: %w", name, err)
		}
		value := strings.TrimSuffix(strings.TrimSuffix(string(data), "\n"), "\r")
		if value == "" {
			return fmt.Errorf("%s_FILE: %s is empty", name, path)
		}
		if err := set(name, value); err != nil {
			return err
		}
	}
	return nil
}

// probe answers nil when a GET of url returns a 2xx status within timeout.
func probe(url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "trine-launch-health")
	client := &http.Client{Transport: &http.Transport{Proxy: nil}}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return errors.New("GET " + url + " answered " + resp.Status)
	}
	return nil
}
