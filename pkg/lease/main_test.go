package lease

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/weft-cni/weft/internal/etcdembed"
	"github.com/weft-cni/weft/pkg/netconf"
)

// endpoints of the etcd shared by every test of the package.
var endpoints []string

func TestMain(m *testing.M) {
	srv, err := etcdembed.Start("", "")
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting embedded etcd:", err)
		os.Exit(1)
	}
	endpoints = srv.Endpoints()
	code := m.Run()
	srv.Close()
	os.Exit(code)
}

func newClient(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

var (
	runSeq   atomic.Int64
	prefixes sync.Map // testing.TB -> string
)

// testPrefix gives each test, and each run of it (go test -count), its own
// etcd prefix; all stores of one test share it.
func testPrefix(t testing.TB) string {
	name := strings.ReplaceAll(t.Name(), "/", "_")
	p, loaded := prefixes.LoadOrStore(t, fmt.Sprintf("/weft-test/%s/%d", name, runSeq.Add(1)))
	if !loaded {
		t.Cleanup(func() { prefixes.Delete(t) })
	}
	return p.(string)
}

func newStore(t testing.TB) *Store {
	t.Helper()
	return NewStore(newClient(t), testPrefix(t), WithLogger(slog.New(slog.NewTextHandler(t.Output(), nil))))
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// putConfig writes raw as the network config of s and returns it parsed.
func putConfig(t testing.TB, s *Store, raw string) *netconf.Config {
	t.Helper()
	ctx := testCtx(t)
	if err := s.PutNetworkConfig(ctx, []byte(raw)); err != nil {
		t.Fatalf("PutNetworkConfig: %v", err)
	}
	cfg, err := s.NetworkConfig(ctx)
	if err != nil {
		t.Fatalf("NetworkConfig: %v", err)
	}
	return cfg
}

const seedConfig = `{"Network":"172.7.0.0/16","Backend":{"Type":"host-gw"}}`

func hostGW(ip string) Attrs {
	return Attrs{PublicIP: netip.MustParseAddr(ip), BackendType: "host-gw"}
}
