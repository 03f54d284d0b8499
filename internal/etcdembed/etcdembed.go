// Package etcdembed runs a single-member etcd inside the current process, for
// unit tests and the demo. It is not meant for production clusters.
package etcdembed

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.uber.org/zap"
)

// ReadyTimeout bounds how long Start waits for the server to serve clients.
const ReadyTimeout = 60 * time.Second

// memberName names the only member of the cluster.
const memberName = "weft-devetcd"

// advertisedPeerURL is announced as the member's peer address but never
// listened on: a single-member cluster never dials its own peer URL, so the
// server binds only its client URL (which may be in a namespace where even
// the loopback interface is down).
const advertisedPeerURL = "http://127.0.0.1:2380"

// ErrNotReady is wrapped when the server does not become ready in time.
var ErrNotReady = errors.New("etcd did not become ready")

// Server is a running embedded etcd.
type Server struct {
	etcd      *embed.Etcd
	endpoints []string
	level     zap.AtomicLevel // raised on Close: etcd logs a normal stop as errors
	removeDir string          // temporary data dir to remove on Close, if any
	closeOnce sync.Once
}

// Start starts a single-member etcd keeping its data in dataDir and serving
// clients on clientURL (e.g. "http://10.4.7.12:2379"; a comma-separated
// list serves on each, as a member reached at several addresses). An empty
// dataDir means a temporary directory removed by Close. An empty clientURL
// means a free port on 127.0.0.1. Start returns once the server is ready to
// serve.
func Start(dataDir, clientURL string) (*Server, error) {
	return StartTLS(dataDir, clientURL, TLS{})
}

// TLS is the server side of TLS to clients: the server's certificate and
// key, and the CA that client certificates must be signed by. With CertFile
// set the client URL must be https (an empty one picks a free 127.0.0.1
// port with https); with ClientCAFile set too, clients without a
// certificate from that CA are refused.
type TLS struct {
	CertFile, KeyFile, ClientCAFile string
}

func (t TLS) enabled() bool { return t.CertFile != "" || t.KeyFile != "" || t.ClientCAFile != "" }

// StartTLS is Start serving clients over TLS as t says; a zero t is Start.
func StartTLS(dataDir, clientURL string, t TLS) (*Server, error) {
	if t.enabled() && (t.CertFile == "" || t.KeyFile == "") {
		return nil, errors.New("etcd TLS: a server certificate and key are both needed")
	}
	removeDir := ""
	if dataDir == "" {
		dir, err := os.MkdirTemp("", "weft-etcd-")
		if err != nil {
			return nil, fmt.Errorf("creating etcd data dir: %w", err)
		}
		dataDir, removeDir = dir, dir
	}
	srv, err := startRetrying(dataDir, clientURL, t)
	if err != nil {
		if removeDir != "" {
			err = errors.Join(err, os.RemoveAll(removeDir))
		}
		return nil, err
	}
	srv.removeDir = removeDir
	return srv, nil
}

// startRetrying starts etcd; with an automatic client URL it retries a few
// times with other ports, as a free port may be taken before etcd binds it.
func startRetrying(dataDir, clientURL string, t TLS) (*Server, error) {
	if clientURL != "" {
		return start(dataDir, clientURL, t)
	}
	var errs []error
	for range 5 {
		u, err := freeLocalURL()
		if err != nil {
			return nil, err
		}
		if t.enabled() {
			u = "https" + strings.TrimPrefix(u, "http")
		}
		srv, err := start(dataDir, u, t)
		if err == nil {
			return srv, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("starting etcd on a free 127.0.0.1 port: %w", errors.Join(errs...))
}

func start(dataDir, clientURL string, t TLS) (*Server, error) {
	level := zap.NewAtomicLevelAt(zap.ErrorLevel)
	cfg, err := config(dataDir, clientURL, level, t)
	if err != nil {
		return nil, err
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("starting etcd on %s: %w", clientURL, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("starting etcd on %s: %w", clientURL, err)
	case <-time.After(ReadyTimeout):
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("starting etcd on %s: %w after %s", clientURL, ErrNotReady, ReadyTimeout)
	}
	return &Server{etcd: e, endpoints: strings.Split(clientURL, ","), level: level}, nil
}

func config(dataDir, clientURL string, level zap.AtomicLevel, t TLS) (*embed.Config, error) {
	scheme := "http"
	if t.enabled() {
		scheme = "https"
	}
	var clients []url.URL
	for _, raw := range strings.Split(clientURL, ",") {
		client, err := url.Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("parsing client URL %q: %w", raw, err)
		}
		if client.Scheme != scheme || client.Port() == "" {
			return nil, fmt.Errorf("client URL %q: want %s://<ip>:<port>", raw, scheme)
		}
		clients = append(clients, *client)
	}
	peer, err := url.Parse(advertisedPeerURL)
	if err != nil {
		return nil, fmt.Errorf("parsing peer URL: %w", err)
	}
	cfg := embed.NewConfig()
	cfg.Name = memberName
	cfg.Dir = dataDir
	lg, err := logger(level)
	if err != nil {
		return nil, err
	}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg)
	cfg.ListenClientUrls = clients
	cfg.AdvertiseClientUrls = clients
	cfg.ListenPeerUrls = nil
	cfg.AdvertisePeerUrls = []url.URL{*peer}
	cfg.InitialCluster = memberName + "=" + advertisedPeerURL
	cfg.EnableGRPCGateway = false
	if t.enabled() {
		cfg.ClientTLSInfo = transport.TLSInfo{CertFile: t.CertFile, KeyFile: t.KeyFile,
			TrustedCAFile: t.ClientCAFile, ClientCertAuth: t.ClientCAFile != ""}
	}
	return cfg, nil
}

// logger logs etcd's errors as JSON lines on stderr.
func logger(level zap.AtomicLevel) (*zap.Logger, error) {
	zc := zap.NewProductionConfig()
	zc.Level = level
	zc.Sampling = nil
	zc.DisableStacktrace = true
	zc.OutputPaths = []string{"stderr"}
	zc.ErrorOutputPaths = []string{"stderr"}
	lg, err := zc.Build()
	if err != nil {
		return nil, fmt.Errorf("building etcd logger: %w", err)
	}
	return lg, nil
}

// freeLocalURL returns an http URL on a 127.0.0.1 port that was free a moment ago.
func freeLocalURL() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return "", fmt.Errorf("finding a free port: %w", err)
	}
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}

// Endpoints returns the client URLs to give to clientv3.
func (s *Server) Endpoints() []string {
	return append([]string(nil), s.endpoints...)
}

// Client returns an in-process client: it reaches the server without the
// network, so it works from any namespace (the server may listen in a
// namespace the caller's threads are not in). Close it when done.
func (s *Server) Client() *clientv3.Client {
	return v3client.New(s.etcd.Server)
}

// Err delivers an error if the server fails while serving.
func (s *Server) Err() <-chan error {
	return s.etcd.Err()
}

// Close stops the server and removes its data dir if Start created it.
// It is safe to call more than once.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.level.SetLevel(zap.FatalLevel)
		s.etcd.Close()
		if s.removeDir == "" {
			return
		}
		if err := os.RemoveAll(s.removeDir); err != nil {
			slog.Warn("removing etcd data dir", "dir", s.removeDir, "error", err)
		}
	})
}
