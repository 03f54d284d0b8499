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
