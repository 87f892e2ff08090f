// Command trine-gateway is trine's public entry point: it authenticates
// clients and relays their requests to the ML service and the sandbox.
//
// Usage:
//
//	trine-gateway [-config PATH]
//	trine-gateway hash-key < key.txt
//
// Settings come from defaults, an optional JSON file and TRINE_* environment
// variables; run with -h for the list. Invalid settings exit with status 2.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"trine/gateway/internal/auth"
	"trine/gateway/internal/config"
	"trine/gateway/internal/requestid"
	"trine/gateway/internal/server"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) > 0 && args[0] == "hash-key" {
		return hashKey(os.Stdin, os.Stdout)
	}
	cfg, err := config.LoadFromOS(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(os.Stderr, config.Usage)
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "trine-gateway: invalid configuration:\n  %s\n",
			strings.ReplaceAll(err.Error(), "\n", "\n  "))
		return 2
	}

	log := slog.New(requestid.NewLogHandler(slog.NewJSONHandler(os.Stderr,
		&slog.HandlerOptions{Level: cfg.LogLevel})))
	slog.SetDefault(log)
	log.Info("configuration loaded", "config", cfg)

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		log.Error("cannot listen", "addr", cfg.Addr, "error", err.Error())
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := server.New(cfg, log).Run(ctx, ln); err != nil {
		log.Error("gateway stopped with an error", "error", err.Error())
		return 1
	}
	return 0
}

// hashKey prints the SHA-256 of the key read from in, for the keys file.
// Surrounding whitespace is ignored because a key cannot carry it through an
// Authorization header anyway.
func hashKey(in io.Reader, out io.Writer) int {
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		fmt.Fprintf(os.Stderr, "trine-gateway hash-key: %v\n", err)
		return 1
	}
	key := strings.TrimSpace(line)
	if key == "" {
		fmt.Fprintln(os.Stderr, "trine-gateway hash-key: no key on stdin")
		return 2
	}
	fmt.Fprintln(out, auth.HashKey(key))
	return 0
}
