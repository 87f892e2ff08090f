package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"trine/gateway/internal/auth"
)

// createKey implements `trine-gateway keys create`: it adds a new random
// key, with a webhook secret, to the keys file and prints the raw key, once,
// on stdout and the webhook secret on stderr. Running gateways pick
// it up on SIGHUP.
func createKey(args []string, out, errOut io.Writer) int {
	fs := flag.NewFlagSet("trine-gateway keys create", flag.ContinueOnError)
	fs.SetOutput(errOut)
	file := fs.String("keys-file", "", "keys file to add the key to (created if missing)")
	id := fs.String("id", "", "key id, 1-64 characters from [A-Za-z0-9._-]")
	name := fs.String("name", "", "optional description of who uses the key")
	scopes := fs.String("scopes", "", "comma-separated scopes: rag, ingest, sandbox, jobs, admin")
	var lim auth.Limits
	fs.Float64Var(&lim.RatePerSecond, "rate", 0, "requests per second (default: the gateway's)")
	fs.IntVar(&lim.Burst, "burst", 0, "burst above the rate (default: the gateway's)")
	fs.IntVar(&lim.MaxInFlight, "max-in-flight", 0, "concurrent requests per gateway (default: the gateway's)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *file == "" || *id == "" || *scopes == "" || fs.NArg() > 0 {
		fmt.Fprintln(errOut, "trine-gateway keys create: --keys-file, --id and --scopes are required")
		return 2
	}
	raw, secret, err := auth.CreateKey(*file, auth.NewKeySpec{
		ID: *id, Name: *name, Scopes: strings.Split(*scopes, ","), Limits: lim,
	})
	if err != nil {
		fmt.Fprintf(errOut, "trine-gateway keys create: %v\n", err)
		return 1
	}
	fmt.Fprintln(out, raw)
	fmt.Fprintf(errOut, "key %q added to %s; it is shown only this once. Send SIGHUP to running gateways to load it.\n", *id, *file)
	// The secret is stored in the keys file (the gateway signs with it);
	// it goes to stderr so that stdout stays the key alone, for scripts.
	fmt.Fprintf(errOut, "webhook secret (verifies this key's job webhooks; also in the keys file): %s\n", secret)
	return 0
}
