package etcdclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"time"
)

// probeRead is how long Probe waits for the server's first bytes (or its
// refusal of the client certificate, which TLS 1.3 sends after the
// handshake).
const probeRead = time.Second

// Probe explains a failure to reach etcd over TLS. gRPC reports a bad CA or
// a refused client certificate only as a deadline; Probe does the TLS
// handshake itself with each https endpoint and returns what went wrong,
// e.g. "x509: certificate signed by unknown authority" or "remote error:
// tls: certificate required". It returns nil when TLS is not configured or
// an endpoint accepts the handshake.
func Probe(ctx context.Context, cfg Config) error {
	tlsConfig, err := cfg.tls()
	if err != nil || tlsConfig == nil {
		return err
	}
	var errs []error
	for _, ep := range cfg.Endpoints {
		err := probe(ctx, ep, tlsConfig)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func probe(ctx context.Context, endpoint string, base *tls.Config) error {
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "https" {
		return fmt.Errorf("etcd %s: TLS files are set but the endpoint is not https", endpoint)
	}
	conf := base.Clone()
	conf.ServerName = u.Hostname()
	conf.NextProtos = []string{"h2"}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: DefaultDialTimeout}, Config: conf}
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return fmt.Errorf("etcd %s: TLS handshake: %w", endpoint, err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(probeRead))
	if _, err := conn.Read(make([]byte, 1)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("etcd %s refused the connection: %w", endpoint, err)
	}
	return nil
}
