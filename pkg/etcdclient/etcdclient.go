// Package etcdclient builds an etcd v3 client from the endpoints and TLS
// files an operator configures (flanneld's --etcd-* flags, or the netconf).
package etcdclient

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// DefaultDialTimeout bounds how long a client waits for etcd to answer.
const DefaultDialTimeout = 2 * time.Second

// Config says how to reach etcd.
type Config struct {
	Endpoints []string
	CAFile    string
	CertFile  string
	KeyFile   string
}

// MaxReconnectDelay caps gRPC's wait between attempts to reconnect to an
// etcd that went away (its default grows to 2 minutes), so that a long-lived
// client (the daemon's watch and keep-alive) resumes within seconds of etcd
// coming back.
const MaxReconnectDelay = 5 * time.Second

// KeepAliveTime and KeepAliveTimeout: a connection quiet for KeepAliveTime
// is pinged, and dropped when the ping goes unanswered for KeepAliveTimeout.
// Without them a member that vanished without a TCP reset (power loss, a
// partition) holds the daemon's watch for as long as TCP retransmits, about
// 15 minutes, before the client moves to another endpoint. etcd refuses
// pings more often than every 5 s (--grpc-keepalive-min-time).
const (
	KeepAliveTime    = 10 * time.Second
	KeepAliveTimeout = 5 * time.Second
)

// ErrNoEndpoints is returned when no etcd endpoint is configured.
var ErrNoEndpoints = errors.New("no etcd endpoints configured")

// New connects to etcd. The connection is lazy: an unreachable etcd shows up
// as an error on the first request, bounded by the request's context.
func New(cfg Config, log *slog.Logger) (*clientv3.Client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, ErrNoEndpoints
	}
	tlsConfig, err := cfg.tls()
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          DefaultDialTimeout,
		DialKeepAliveTime:    KeepAliveTime,
		DialKeepAliveTimeout: KeepAliveTimeout,
		TLS:                  tlsConfig,
		Logger:               zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: time.Second, Multiplier: 1.6, Jitter: 0.2, MaxDelay: MaxReconnectDelay},
			MinConnectTimeout: MaxReconnectDelay,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("connecting to etcd %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	if log != nil {
		log.Debug("etcd client", "endpoints", cfg.Endpoints, "tls", tlsConfig != nil)
	}
	return cli, nil
}

// tls builds the client TLS config; nil when no TLS file is set.
func (cfg Config) tls() (*tls.Config, error) {
	if cfg.CAFile == "" && cfg.CertFile == "" && cfg.KeyFile == "" {
		return nil, nil
	}
	out := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := readFile("etcd CA file", cfg.CAFile)
		if err != nil {
			return nil, err
		}
		out.RootCAs = x509.NewCertPool()
		if !out.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcd CA file %s: no PEM certificate in it", cfg.CAFile)
		}
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, errors.New("etcd client certificate and key must be given together")
	}
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("etcd client certificate %s / key %s: %w", cfg.CertFile, cfg.KeyFile, err)
		}
		out.Certificates = []tls.Certificate{cert}
	}
	return out, nil
}

func readFile(what, path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	return data, nil
}
