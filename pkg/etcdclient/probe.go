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
// tls: certificate required". It returns nil when TLS is not configured, an
// endpoint accepts the handshake, or no endpoint answers at all (down or
// out of reach: an outage, not a TLS problem).
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
		if !errors.Is(err, errNoAnswer) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// errNoAnswer marks an endpoint that took no TCP connection or did not
// finish a handshake in time: nothing is known about its TLS.
var errNoAnswer = errors.New("no answer")

func probe(ctx context.Context, endpoint string, base *tls.Config) error {
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "https" {
		return fmt.Errorf("etcd %s: TLS files are set but the endpoint is not https", endpoint)
	}
	conf := base.Clone()
	conf.ServerName = u.Hostname()
	conf.NextProtos = []string{"h2"}
	raw, err := (&net.Dialer{Timeout: DefaultDialTimeout}).DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return fmt.Errorf("etcd %s: %w: %w", endpoint, errNoAnswer, err)
	}
	conn := tls.Client(raw, conf)
	defer conn.Close()
	if err := conn.HandshakeContext(ctx); err != nil {
		var ne net.Error
		if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
			return fmt.Errorf("etcd %s: %w: TLS handshake: %w", endpoint, errNoAnswer, err)
		}
		return fmt.Errorf("etcd %s: TLS handshake: %w", endpoint, err)
	}
	conn.SetReadDeadline(time.Now().Add(probeRead))
	if _, err := conn.Read(make([]byte, 1)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("etcd %s refused the connection: %w", endpoint, err)
	}
	return nil
}
