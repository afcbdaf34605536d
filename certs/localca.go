package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// File names of the local CA inside the data directory.
const (
	CACertFile = "ca.pem"
	CAKeyFile  = "ca-key.pem"
)

// LocalCA is a certificate authority private to this installation. Its
// certificate must be trusted by clients (see SPKIHash for Chrome).
type LocalCA struct {
	Cert     *x509.Certificate
	CertPath string
	key      crypto.Signer

	mu     sync.Mutex
	leaf   *tls.Certificate
	names  []string
	expiry time.Time
}

// LoadOrCreateCA loads the CA from dir, creating dir and a new CA (ECDSA
// P-256, valid 10 years) on first use. The key file is readable only by
// the owner.
func LoadOrCreateCA(dir string) (*LocalCA, error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	switch {
	case err == nil:
		cert, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			return nil, fmt.Errorf("local CA %s: %w", certPath, err)
		}
		signer, ok := pair.PrivateKey.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("local CA key %s cannot sign", keyPath)
		}
		return &LocalCA{Cert: cert, CertPath: certPath, key: signer}, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("local CA in %s: %w (remove both %s and %s to make a new CA)", dir, err, CACertFile, CAKeyFile)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "h2proxy local CA " + host, Organization: []string{"h2proxy"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := writePEM(keyPath, "PRIVATE KEY", keyDER, 0o600); err != nil {
		return nil, err
	}
	if err := writePEM(certPath, "CERTIFICATE", der, 0o644); err != nil {
		return nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	return &LocalCA{Cert: cert, CertPath: certPath, key: key}, nil
}

// writePEM writes atomically: a crash never leaves half a key behind.
func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func randomSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

// PEM returns the CA certificate in PEM form.
func (ca *LocalCA) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// SPKIHash is the base64 SHA-256 of the CA's public key, the form Chrome's
// --ignore-certificate-errors-spki-list takes.
func (ca *LocalCA) SPKIHash() string {
	sum := sha256.Sum256(ca.Cert.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// TLSConfig serves a leaf certificate signed by the CA for names (host
// names or IP addresses). The leaf lives 30 days and is renewed in
// memory before it expires; the CA goes in the chain so that clients
// trusting only the CA's key (Chrome's SPKI list) accept it.
func (ca *LocalCA) TLSConfig(names []string) (*tls.Config, error) {
	if len(names) == 0 {
		return nil, errors.New("local CA: no names for the certificate")
	}
	ca.mu.Lock()
	ca.names = append([]string(nil), names...)
	ca.leaf = nil // the names changed: issue a new leaf
	ca.mu.Unlock()
	if _, err := ca.getLeaf(); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return ca.getLeaf()
		},
	}, nil
}

// Expiry maps each name of the current leaf to its NotAfter (empty before
// TLSConfig). The leaf is renewed in memory a week before that.
func (ca *LocalCA) Expiry() map[string]time.Time {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if ca.leaf == nil {
		return map[string]time.Time{}
	}
	return leafExpiry(ca.leaf.Leaf)
}

func (ca *LocalCA) getLeaf() (*tls.Certificate, error) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if ca.leaf != nil && time.Until(ca.expiry) > 7*24*time.Hour {
		return ca.leaf, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: ca.names[0], Organization: []string{"h2proxy"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(0, 0, 30),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range ca.names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	ca.leaf = &tls.Certificate{Certificate: [][]byte{der, ca.Cert.Raw}, PrivateKey: key, Leaf: leaf}
	ca.expiry = tmpl.NotAfter
	return ca.leaf, nil
}
