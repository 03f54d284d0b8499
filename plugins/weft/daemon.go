package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-iptables/iptables"

	"github.com/weft-cni/weft/pkg/daemon"
	"github.com/weft-cni/weft/pkg/lease"
	"github.com/weft-cni/weft/pkg/nodelease"
	"github.com/weft-cni/weft/pkg/route"
)

// Exit codes of the operator subcommands.
const (
	exitOK       = 0
	exitProblem  = 1 // the daemon failed, or status found a problem
	exitBadUsage = 2
)

// parseFlags reads a subcommand's flags; ok false means exit with code.
func parseFlags(name string, args []string) (cfg *daemon.Config, code int, ok bool) {
	cfg, err := daemon.ParseFlags(name, args, os.LookupEnv)
	if errors.Is(err, flag.ErrHelp) {
		daemon.Usage(os.Stdout, name)
		return nil, exitOK, false
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\nRun '%s -h' for the flags.\n", name, err, name)
		return nil, exitBadUsage, false
	}
	return cfg, 0, true
}

// runDaemon runs the node agent until SIGTERM, SIGINT or SIGQUIT.
func runDaemon(args []string) int {
	cfg, code, ok := parseFlags("weft daemon", args)
	if !ok {
		return code
	}
	logger := daemon.NewLogger(os.Stdout, cfg.LogFormat, cfg.LogLevel)
	store, err := daemon.NewEtcdStore(cfg, lease.WithLogger(logger))
	if err != nil {
		logger.Error("etcd client", "error", err)
		return exitBadUsage
	}
	defer store.Close()
	ipt, err := iptables.New()
	if err != nil {
		logger.Error("iptables", "error", err)
		return exitProblem
	}
	d, err := daemon.New(cfg, daemon.Deps{
		Store: store, Routes: route.Netlink{}, IPT: ipt, Node: daemon.LinuxNode{Bridge: cfg.Bridge, Log: logger}, Lock: daemon.NodeLock(cfg),
		Identity:  func() (nodelease.Identity, error) { return daemon.ResolveIdentity(cfg) },
		HoldsAddr: daemon.HoldsAddr,
		Log:       logger,
	})
	if err != nil {
		logger.Error("starting", "error", err)
		return exitProblem
	}
	// supervisord stops flanneld with stopsignal=QUIT; all three stop cleanly.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT)
	defer stop()
	if err := d.Run(ctx); err != nil {
		logger.Error("weft daemon failed", "error", err)
		return exitProblem
	}
	return exitOK
}

// runStatus prints the node's state and exits 0 only when all is well.
func runStatus(args []string) int {
	cfg, code, ok := parseFlags("weft status", args)
	if !ok {
		return code
	}
	store, err := daemon.NewEtcdStore(cfg, lease.WithLogger(daemon.NewLogger(io.Discard, "text", 0)))
	if err != nil {
		fmt.Fprintf(os.Stderr, "weft status: %v\n", err)
		return exitBadUsage
	}
	defer store.Close()
	deps := daemon.StatusDeps{
		Store: store, Routes: route.Netlink{},
		Identity: func() (nodelease.Identity, error) { return daemon.ResolveIdentity(cfg) },
		Bridge:   daemon.LinuxNode{Bridge: cfg.Bridge}.Inspect,
		Overlay:  daemon.LinuxOverlayPlan,
		IPAM:     daemon.IPAMUsage(cfg),
		Now:      time.Now(),
	}
	if ipt, err := iptables.New(); err == nil {
		deps.IPT = ipt
	}
	if cfg.HealthzPort != 0 {
		deps.Readyz = readyz(cfg)
	}
	report := daemon.Status(context.Background(), cfg, deps)
	if _, err := report.WriteTo(os.Stdout); err != nil {
		return exitProblem
	}
	if !report.OK() {
		return exitProblem
	}
	return exitOK
}

// readyz asks the local daemon's /readyz.
func readyz(cfg *daemon.Config) func(context.Context) (bool, string, error) {
	host := cfg.HealthzIP
	if host.IsUnspecified() {
		host = netip.MustParseAddr("127.0.0.1")
	}
	url := "http://" + netip.AddrPortFrom(host, uint16(cfg.HealthzPort)).String() + "/readyz"
	return func(ctx context.Context) (bool, string, error) {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, "", err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, "", fmt.Errorf("daemon not reachable: %w", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return resp.StatusCode == http.StatusOK, fmt.Sprintf("%s: %d %s", url, resp.StatusCode, strings.TrimSpace(string(body))), nil
	}
}
