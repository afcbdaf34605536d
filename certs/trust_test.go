package certs

import (
	"crypto/x509"
	"path/filepath"
	"strings"
	"testing"
)

func TestTrustInstructions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data dir") // a space, to see the quoting
	ca, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := TrustInstructions(ca)
	sh := "'" + ca.CertPath + "'"
	for _, want := range []string{
		`certutil -d sql:$HOME/.pki/nssdb -A -t "C,," -n 'h2proxy local CA' -i ` + sh,
		"update-ca-certificates",
		"security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain " + sh,
		`certutil -addstore -f ROOT "` + ca.CertPath + `"`,
		"Import-Certificate",
		"Firefox",
		"--ignore-certificate-errors-spki-list=" + ca.SPKIHash(),
		ca.CertPath,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("instructions lack %q:\n%s", want, out)
		}
	}
}

func TestShQuote(t *testing.T) {
	for in, want := range map[string]string{
		"/var/lib/h2proxy/ca.pem": "/var/lib/h2proxy/ca.pem",
		"/tmp/a b/ca.pem":         "'/tmp/a b/ca.pem'",
		"/tmp/it's":               `'/tmp/it'\''s'`,
		"$HOME/x":                 "'$HOME/x'",
	} {
		if got := shQuote(in); got != want {
			t.Errorf("shQuote(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLocalCAServesLeaf(t *testing.T) {
	ca, err := LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if len(ca.Expiry()) != 0 {
		t.Errorf("Expiry before TLSConfig = %v, want empty", ca.Expiry())
	}
	cfg, err := ca.TLSConfig([]string{"localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	ln := listenLoopback(t)
	serveTLS(t, ln, cfg)
	chain := handshake(t, ln.Addr().String(), "localhost")
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	if _, err := chain[0].Verify(x509.VerifyOptions{DNSName: "localhost", Roots: roots}); err != nil {
		t.Fatalf("leaf does not verify against the local CA: %v", err)
	}
	exp := ca.Expiry()
	if !exp["localhost"].Equal(chain[0].NotAfter) || !exp["127.0.0.1"].Equal(chain[0].NotAfter) {
		t.Errorf("Expiry = %v, want both names at %v", exp, chain[0].NotAfter)
	}
	if _, err := ca.TLSConfig(nil); err == nil {
		t.Error("TLSConfig(nil): no error")
	}
}
