// Command trine-gateway is trine's public entry point: it authenticates
// clients and relays their requests to the ML service and the sandbox.
//
// Usage:
//
//	trine-gateway [-config PATH]
//	trine-gateway hash-key < key.txt
//	trine-gateway keys create --keys-file F --id ID --scopes rag,ingest [--name N] [--rate R] [--burst B] [--max-in-flight M]
//
// SIGHUP reloads the keys file; an invalid file keeps the keys in use.
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
	if len(args) > 1 && args[0] == "keys" && args[1] == "create" {
		return createKey(args[2:], os.Stdout, os.Stderr)
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
	srv, err := server.New(cfg, log)
	if err != nil {
		log.Error("cannot start", "error", err.Error())
		return 1
	}
	go reloadOnHangup(ctx, srv)
	if err := srv.Run(ctx, ln); err != nil {
		log.Error("gateway stopped with an error", "error", err.Error())
		return 1
	}
	return 0
}

// reloadOnHangup reloads the keys file on every SIGHUP until ctx is done.
func reloadOnHangup(ctx context.Context, srv *server.Server) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			// The outcome, good or bad, is logged by ReloadKeys.
			_ = srv.ReloadKeys(ctx)
		}
	}
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
