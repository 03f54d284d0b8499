package etcdembed

import (
	"context"
	"os"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func TestStartFreePort(t *testing.T) {
	srv, err := Start(t.TempDir(), "")
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer srv.Close()

	eps := srv.Endpoints()
	if len(eps) != 1 {
		t.Fatalf("Endpoints() = %v, want one", eps)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	defer cli.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "/k", "v"); err != nil {
		t.Fatalf("Put: %v", err)
	}
	resp, err := cli.Get(ctx, "/k")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("Get = %v, want v", resp.Kvs)
	}
	srv.Close()
	srv.Close() // idempotent
}

// TestStartSeveralURLs: a member started with a comma-separated list serves
// clients on each URL, one data set behind them all.
func TestStartSeveralURLs(t *testing.T) {
	var (
		a, b string
		srv  *Server
		err  error
	)
	for range 5 { // a free port may be taken before etcd binds it
		if a, err = freeLocalURL(); err != nil {
			t.Fatal(err)
		}
		if b, err = freeLocalURL(); err != nil {
			t.Fatal(err)
		}
		if srv, err = Start(t.TempDir(), a+","+b); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("Start on two URLs: %v", err)
	}
	defer srv.Close()
	if eps := srv.Endpoints(); len(eps) != 2 || eps[0] != a || eps[1] != b {
		t.Fatalf("Endpoints() = %v, want [%s %s]", eps, a, b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i, ep := range []string{a, b} {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatalf("client of %s: %v", ep, err)
		}
		defer cli.Close()
		if i == 0 {
			if _, err := cli.Put(ctx, "/k", "v"); err != nil {
				t.Fatalf("Put through %s: %v", ep, err)
			}
		}
		resp, err := cli.Get(ctx, "/k")
		if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
			t.Fatalf("Get through %s = %v, %v; want v", ep, resp, err)
		}
	}
}

func TestStartTempDirRemoved(t *testing.T) {
	srv, err := Start("", "")
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	dir := srv.removeDir
	if dir == "" {
		t.Fatal("Start with empty dataDir made no temporary dir")
	}
	srv.Close()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("data dir %s still there after Close: %v", dir, err)
	}
}

func TestStartBadURL(t *testing.T) {
	for _, u := range []string{"://", "https://127.0.0.1:1", "http://127.0.0.1"} {
		if srv, err := Start(t.TempDir(), u); err == nil {
			srv.Close()
			t.Errorf("Start(%q) succeeded, want error", u)
		}
	}
}
