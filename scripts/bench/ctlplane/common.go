package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weft-cni/weft/pkg/netconf"
	"github.com/weft-cni/weft/scripts/bench/internal/stats"
)

// etcdFlag registers the -etcd flag, the etcd endpoint every command
// talks to, on fs, storing it in p.
func etcdFlag(fs *flag.FlagSet, p *string) {
	fs.StringVar(p, "etcd", "http://10.4.7.12:2379", "etcd endpoint")
}

// client opens an etcd client on endpoint and warms its connection up with
// a first Get, so that later calls do not pay for the dial.
func client(endpoint string) (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Get(ctx, "/warm-up"); err != nil { // a warm connection
		cli.Close()
		return nil, fmt.Errorf("etcd at %s: %w", endpoint, err)
	}
	return cli, nil
}

// session opens a warm etcd client (see client) and the context a command
// runs in: cancelled after timeout, or only by done when timeout is 0. done
// cancels the context, then closes the client.
func session(endpoint string, timeout time.Duration) (*clientv3.Client, context.Context, func(), error) {
	cli, err := client(endpoint)
	if err != nil {
		return nil, nil, nil, err
	}
	var ctx context.Context
	var cancel context.CancelFunc
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(context.Background(), timeout)
	} else {
		ctx, cancel = context.WithCancel(context.Background())
	}
	done := func() {
		cancel()
		cli.Close()
	}
	return cli, ctx, done, nil
}

// grantDay grants the etcd lease, a day long, that the subnet keys a
// command writes are bound to, so that they go away with it.
func grantDay(ctx context.Context, cli *clientv3.Client) (clientv3.LeaseID, error) {
	grant, err := cli.Grant(ctx, 24*3600)
	if err != nil {
		return 0, err
	}
	return grant.ID, nil
}

// hostGWConfig returns the JSON network config of a host-gw network (with
// a SubnetLen when subnetLen is not 0) and that config parsed.
func hostGWConfig(network string, subnetLen int) (string, *netconf.Config, error) {
	raw := fmt.Sprintf(`{"Network": %q, "Backend": {"Type": "host-gw"}}`, network)
	if subnetLen != 0 {
		raw = fmt.Sprintf(`{"Network": %q, "SubnetLen": %d, "Backend": {"Type": "host-gw"}}`, network, subnetLen)
	}
	cfg, err := netconf.Parse([]byte(raw))
	if err != nil {
		return "", nil, err
	}
	return raw, cfg, nil
}

// putConfig writes raw as the network config under prefix, where the
// daemon and lease.Store read it.
func putConfig(ctx context.Context, cli *clientv3.Client, prefix, raw string) error {
	_, err := cli.Put(ctx, prefix+"/config", raw)
	return err
}

// routesIn lists the IPv4 routes of the namespace at path as the kernel
// has them now.
func routesIn(path string) ([]netlink.Route, error) {
	h, err := netns.GetFromPath(path)
	if err != nil {
		return nil, err
	}
	nh, err := netlink.NewHandleAt(h)
	h.Close()
	if err != nil {
		return nil, err
	}
	defer nh.Close()
	return nh.RouteList(nil, netlink.FAMILY_V4)
}

// quantileCells formats the p50, p90, p99 and max of xs as four markdown
// table cells ("%.2f | %.2f | %.2f | %.2f").
func quantileCells(xs []float64) string {
	return fmt.Sprintf("%.2f | %.2f | %.2f | %.2f", stats.Percentile(xs, 50), stats.Percentile(xs, 90), stats.Percentile(xs, 99), stats.Percentile(xs, 100))
}
