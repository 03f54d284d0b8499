// Package testcerts makes throwaway certificates for tests of TLS to etcd:
// a CA with a server and a client certificate, and a second, untrusted CA
// with a client certificate of its own. Nothing here is for production.
package testcerts

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Files are the paths Write created.
type Files struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string
	// RogueCA signed RogueClientCert; the server does not trust it.
	RogueCA, RogueClientCert, RogueClientKey string
}

type issuer struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// Write creates the certificates in dir; the server certificate is valid
// for serverIPs and localhost.
func Write(dir string, serverIPs ...net.IP) (Files, error) {
	f := Files{
		CA: filepath.Join(dir, "ca.pem"), ServerCert: filepath.Join(dir, "server.pem"), ServerKey: filepath.Join(dir, "server-key.pem"),
		ClientCert: filepath.Join(dir, "client.pem"), ClientKey: filepath.Join(dir, "client-key.pem"),
		RogueCA: filepath.Join(dir, "rogue-ca.pem"), RogueClientCert: filepath.Join(dir, "rogue-client.pem"), RogueClientKey: filepath.Join(dir, "rogue-client-key.pem"),
	}
	ca, err := newCA("weft test CA", f.CA)
	if err != nil {
		return f, err
	}
	rogue, err := newCA("rogue CA", f.RogueCA)
	if err != nil {
		return f, err
	}
	server := &x509.Certificate{Subject: pkix.Name{CommonName: "etcd"}, DNSNames: []string{"localhost"},
		IPAddresses: append([]net.IP{net.IPv4(127, 0, 0, 1)}, serverIPs...),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	client := &x509.Certificate{Subject: pkix.Name{CommonName: "weft-node"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	for _, c := range []struct {
		by                issuer
		tmpl              *x509.Certificate
		certPath, keyPath string
	}{
		{ca, server, f.ServerCert, f.ServerKey},
		{ca, client, f.ClientCert, f.ClientKey},
		{rogue, &x509.Certificate{Subject: client.Subject, ExtKeyUsage: client.ExtKeyUsage}, f.RogueClientCert, f.RogueClientKey},
	} {
		if _, err := issue(c.by, c.tmpl, c.certPath, c.keyPath); err != nil {
			return f, err
		}
	}
	return f, nil
}

func newCA(name, path string) (issuer, error) {
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	return issue(issuer{}, tmpl, path, "")
}

// issue signs tmpl by the issuer (itself when by is zero) and writes the
// certificate, and the key when keyPath is set.
func issue(by issuer, tmpl *x509.Certificate, certPath, keyPath string) (issuer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return issuer{}, err
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return issuer{}, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	if tmpl.KeyUsage == 0 {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	}
	parent, signer := tmpl, key
	if by.cert != nil {
		parent, signer = by.cert, by.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return issuer{}, fmt.Errorf("signing %s: %w", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return issuer{}, err
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return issuer{}, err
	}
	if keyPath != "" {
		kder, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return issuer{}, err
		}
		if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
			return issuer{}, err
		}
	}
	return issuer{cert: cert, key: key}, nil
}
