// Command weft is a CNI plugin for a flannel-style flat pod network: a bridge
// per node, a veth per pod, addresses from the node's leased subnet, host-gw
// routes to the other nodes and a masquerade rule that spares pod-to-pod
// traffic.
package main

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"
)

// callTimeout bounds one CNI call (lock waits, etcd on first use).
const callTimeout = 30 * time.Second

func init() { runtime.LockOSThread() }

// The plugin never logs to stdout: stdout is its result.
var log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

func main() {
	// Operator subcommands share the binary, as the reference dhcp plugin's
	// daemon does; a CNI runtime never passes arguments.
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "daemon":
			os.Exit(runDaemon(os.Args[2:]))
		case "status":
			os.Exit(runStatus(os.Args[2:]))
		}
	}
	skel.PluginMainFuncs(skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck, GC: cmdGC, Status: cmdStatus},
		version.All, "weft: flannel-compatible host-gw pod network")
}

func callContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), callTimeout)
}
