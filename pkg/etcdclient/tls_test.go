package etcdclient

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/weft-cni/weft/internal/etcdembed"
	"github.com/weft-cni/weft/internal/testcerts"
)

// TestTLS: with client certificates required, a client with the right CA
// and certificate works; a wrong CA, an untrusted client certificate or
// none at all is refused.
func TestTLS(t *testing.T) {
	f, err := testcerts.Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := etcdembed.StartTLS(t.TempDir(), "", etcdembed.TLS{CertFile: f.ServerCert, KeyFile: f.ServerKey, ClientCAFile: f.CA})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	eps := srv.Endpoints()
	put := func(cfg Config, timeout time.Duration) error {
		cli, err := New(cfg, nil)
		if err != nil {
			return err
		}
		defer cli.Close()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		_, err = cli.Put(ctx, "/weft-test/tls", "x")
		return err
	}
	if err := put(Config{Endpoints: eps, CAFile: f.CA, CertFile: f.ClientCert, KeyFile: f.ClientKey}, 10*time.Second); err != nil {
		t.Fatalf("trusted client: %v", err)
	}
	good := Config{Endpoints: eps, CAFile: f.CA, CertFile: f.ClientCert, KeyFile: f.ClientKey}
	if err := Probe(context.Background(), good); err != nil {
		t.Fatalf("Probe of a working config: %v", err)
	}
	for _, tt := range []struct {
		name string
		cfg  Config
		want string // in the error of Probe (or of New)
	}{
		{"wrong CA", Config{Endpoints: eps, CAFile: f.RogueCA, CertFile: f.ClientCert, KeyFile: f.ClientKey}, "certificate signed by unknown authority"},
		{"untrusted client cert", Config{Endpoints: eps, CAFile: f.CA, CertFile: f.RogueClientCert, KeyFile: f.RogueClientKey}, "tls: "},
		{"no client cert", Config{Endpoints: eps, CAFile: f.CA}, "certificate required"},
		{"certificate without key", Config{Endpoints: eps, CAFile: f.CA, CertFile: f.ClientCert}, "must be given together"},
		{"key that is not the cert's", Config{Endpoints: eps, CAFile: f.CA, CertFile: f.ClientCert, KeyFile: f.RogueClientKey}, "private key does not match"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := put(tt.cfg, time.Second); err == nil {
				t.Fatal("accepted")
			}
			err := Probe(context.Background(), tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Probe: %v, want an error saying %q", err, tt.want)
			}
			t.Logf("refused: %v", err)
		})
	}
	if err := put(Config{Endpoints: []string{"http" + eps[0][len("https"):]}}, time.Second); err == nil {
		t.Error("plaintext client accepted by a TLS server")
	}
	// Nothing listening: an outage, about which TLS has nothing to say.
	down := Config{Endpoints: []string{"https://127.0.0.1:1"}, CAFile: f.CA, CertFile: f.ClientCert, KeyFile: f.ClientKey}
	if err := Probe(context.Background(), down); err != nil {
		t.Errorf("Probe of an endpoint that is down: %v, want nil (not a TLS failure)", err)
	}
	// One endpoint down, the other refusing the certificate: still a TLS failure.
	mixed := Config{Endpoints: []string{"https://127.0.0.1:1", eps[0]}, CAFile: f.RogueCA, CertFile: f.ClientCert, KeyFile: f.ClientKey}
	if err := Probe(context.Background(), mixed); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Errorf("Probe with one endpoint down and one refusing: %v, want the TLS failure", err)
	}
}
