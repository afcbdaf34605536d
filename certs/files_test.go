package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// writePair writes a self-signed certificate with the given serial and
// its key; it returns the key PEM so a test can pair it with another cert.
func writePair(t *testing.T, certFile, keyFile string, serial int64) []byte {
	t.Helper()
	certPEM, keyPEM := makePair(t, serial)
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return keyPEM
}

func makePair(t *testing.T, serial int64) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "proxy.h2proxy.test"},
		DNSNames:     []string{"proxy.h2proxy.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Duration(serial) * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

func servedSerial(t *testing.T, addr string) int64 {
	t.Helper()
	return handshake(t, addr, "proxy.h2proxy.test")[0].SerialNumber.Int64()
}

// waitSerial handshakes until the server presents want, for up to 5 s.
func waitSerial(t *testing.T, addr string, want int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := servedSerial(t, addr)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("served serial %d, want %d", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestFileSourceReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writePair(t, certFile, keyFile, 1001)

	src, err := NewFileSource(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	src.CheckInterval = 10 * time.Millisecond
	var mu sync.Mutex
	var reloaded []int64
	var errs []error
	src.OnReload = func(leaf *x509.Certificate) {
		mu.Lock()
		reloaded = append(reloaded, leaf.SerialNumber.Int64())
		mu.Unlock()
	}
	src.OnError = func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	ln := listenLoopback(t)
	serveTLS(t, ln, src.TLSConfig())
	addr := ln.Addr().String()

	if got := servedSerial(t, addr); got != 1001 {
		t.Fatalf("served serial %d, want 1001", got)
	}

	// Overwrite in place, as certbot's deploy hooks and cp do: new
	// handshakes on the same listener get the new certificate.
	writePair(t, certFile, keyFile, 1002)
	waitSerial(t, addr, 1002)
	mu.Lock()
	if len(reloaded) == 0 || reloaded[len(reloaded)-1] != 1002 {
		t.Errorf("OnReload saw %v, want it to end with 1002", reloaded)
	}
	errs = nil
	mu.Unlock()
	if exp := src.Expiry()["proxy.h2proxy.test"]; !exp.Equal(src.Leaf().NotAfter) || exp.IsZero() {
		t.Errorf("Expiry = %v, want the leaf's NotAfter %v", exp, src.Leaf().NotAfter)
	}

	// A broken certificate file is rejected; handshakes keep B.
	if err := os.WriteFile(certFile, []byte("-----BEGIN CERTIFICATE-----\nbroken\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if got := servedSerial(t, addr); got != 1002 {
			t.Fatalf("after a broken file: served serial %d, want 1002", got)
		}
		time.Sleep(15 * time.Millisecond)
	}
	if err := src.Reload(); err == nil {
		t.Fatal("Reload of a broken file: no error")
	}
	mu.Lock()
	if len(errs) != 1 {
		t.Errorf("OnError called %d times for one broken file, want 1: %v", len(errs), errs)
	}
	mu.Unlock()
	if got := servedSerial(t, addr); got != 1002 {
		t.Fatalf("after Reload failed: served serial %d, want 1002", got)
	}

	// A certificate whose key is not the one in the key file: rejected too.
	certC, _ := makePair(t, 1003)
	if err := os.WriteFile(certFile, certC, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := src.Reload(); err == nil || !strings.Contains(err.Error(), "private key does not match") {
		t.Fatalf("Reload with a mismatched key: %v, want a mismatch error", err)
	}
	if got := servedSerial(t, addr); got != 1002 {
		t.Fatalf("after a mismatched key: served serial %d, want 1002", got)
	}

	// A good pair through Reload (SIGHUP) is served at once.
	writePair(t, certFile, keyFile, 1004)
	if err := src.Reload(); err != nil {
		t.Fatalf("Reload of a good pair: %v", err)
	}
	if got := servedSerial(t, addr); got != 1004 {
		t.Fatalf("after Reload: served serial %d, want 1004", got)
	}
}

func TestFileSourceMissingFiles(t *testing.T) {
	dir := t.TempDir()
	if _, err := NewFileSource(filepath.Join(dir, "no.pem"), filepath.Join(dir, "no-key.pem")); err == nil {
		t.Fatal("NewFileSource with missing files: no error")
	}
	if _, err := Files(filepath.Join(dir, "no.pem"), filepath.Join(dir, "no-key.pem")); err == nil || !strings.Contains(err.Error(), "--cert") {
		t.Fatalf("Files with missing files: %v, want an error naming --cert", err)
	}

	// A file that disappears (mid-replacement) keeps the old certificate,
	// and is reported once.
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writePair(t, certFile, keyFile, 7)
	cfg, err := Files(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln := listenLoopback(t)
	serveTLS(t, ln, cfg)
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // one DefaultCheckInterval
	if got := servedSerial(t, ln.Addr().String()); got != 7 {
		t.Fatalf("served serial %d after the key vanished, want 7", got)
	}
}

// TestFileSourceConcurrent has handshakes race with file replacements:
// each gets a whole certificate (an old or a new one), never an error, and
// the last files written win.
func TestFileSourceConcurrent(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writePair(t, certFile, keyFile, 1)
	src, err := NewFileSource(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	src.CheckInterval = time.Millisecond
	get := src.TLSConfig().GetCertificate

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := get(&tls.ClientHelloInfo{ServerName: "proxy.h2proxy.test"})
				if err != nil || c == nil || c.Leaf == nil {
					t.Errorf("GetCertificate: %v, %v", c, err)
					return
				}
			}
		}()
	}
	for serial := int64(2); serial <= 20; serial++ {
		writePair(t, certFile, keyFile, serial)
		time.Sleep(2 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, _ := get(&tls.ClientHelloInfo{})
		if c.Leaf.SerialNumber.Int64() == 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("serial %v, want 20", c.Leaf.SerialNumber)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
