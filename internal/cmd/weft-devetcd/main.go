// Command weft-devetcd runs a single-member etcd for the demo and the
// integration tests. It binds only the client URLs it is given (no peer
// listener), prints "ready <endpoint>" on stdout once it serves, and exits
// on SIGTERM or SIGINT, removing its data dir if it made a temporary one.
// With --cert-file/--key-file it serves https, and with --trusted-ca-file it
// requires client certificates signed by that CA (etcd's flag names).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/weft-cni/weft/internal/etcdembed"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run serves until ctx is done and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("weft-devetcd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "", "etcd data directory (default: a temporary directory removed on exit)")
	listen := fs.String("listen-client-urls", "http://127.0.0.1:2379",
		`client URL to serve on, http://<ip>:<port>, or a comma-separated list of them ("" picks a free 127.0.0.1 port)`)
	var tlsFiles etcdembed.TLS
	fs.StringVar(&tlsFiles.CertFile, "cert-file", "", "server TLS certificate (the client URL is then https)")
	fs.StringVar(&tlsFiles.KeyFile, "key-file", "", "server TLS key")
	fs.StringVar(&tlsFiles.ClientCAFile, "trusted-ca-file", "", "CA that client certificates must be signed by (client certificates are then required)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "weft-devetcd: unexpected arguments %q\n", fs.Args())
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))

	srv, err := etcdembed.StartTLS(*dataDir, *listen, tlsFiles)
	if err != nil {
		logger.Error("starting etcd", "error", err)
		return 1
	}
	defer srv.Close()
	if _, err := fmt.Fprintf(stdout, "ready %s\n", strings.Join(srv.Endpoints(), ",")); err != nil {
		logger.Error("writing ready line", "error", err)
		return 1
	}
	select {
	case <-ctx.Done():
		logger.Info("stopping etcd")
		return 0
	case err := <-srv.Err():
		logger.Error("etcd failed", "error", err)
		return 1
	}
}
