package h2

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/h2proxy/h2proxy/tunnel"
)

// selfSigned returns a TLS certificate for 127.0.0.1 and localhost.
func selfSigned(t testing.TB) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "h2 test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tlsServer serves h over TLS with ALPN h2 on a loopback port using the
// native engine; it is stopped when the test ends.
type tlsServer struct {
	ln   net.Listener
	srv  *Server
	wg   sync.WaitGroup
	addr string
}

func startTLSServer(t testing.TB, cfg Config, h http.Handler) *tlsServer {
	t.Helper()
	tc := &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}, NextProtos: []string{"h2"}}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// As the proxy's listener does: TLS over a BatchConn, so that the
	// engine batches its records (and writes DATA in place) here too.
	ln := tls.NewListener(batchListener{inner}, tc)
	ts := &tlsServer{ln: ln, srv: NewServer(cfg), addr: ln.Addr().String()}
	ts.wg.Add(1)
	go func() {
		defer ts.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ts.wg.Add(1)
			go func() {
				defer ts.wg.Done()
				tc := c.(*tls.Conn)
				if err := tc.HandshakeContext(context.Background()); err != nil {
					_ = c.Close()
					return
				}
				_ = ts.srv.ServeConn(tc, h)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = ts.srv.Shutdown(ctx)
		ts.wg.Wait()
	})
	return ts
}

type batchListener struct{ net.Listener }

func (l batchListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return tunnel.NewBatchConn(c), nil
}

// specHandler answers like a plain web server: what h2spec expects.
func specHandler(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "text/plain")
	_, _ = io.WriteString(w, "hello from h2proxy\n")
}

func h2specPath() string {
	if p, err := exec.LookPath("h2spec"); err == nil {
		return p
	}
	out, err := exec.Command("go", "env", "GOPATH").Output()
	if err != nil {
		return ""
	}
	for _, dir := range filepath.SplitList(string(regexp.MustCompile(`\s+$`).ReplaceAll(out, nil))) {
		p := filepath.Join(dir, "bin", "h2spec")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

var h2specSummary = regexp.MustCompile(`(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed`)

func runH2spec(t *testing.T, bin string, strict bool) (total, passed int) {
	ts := startTLSServer(t, Config{}, http.HandlerFunc(specHandler))
	_, port, _ := net.SplitHostPort(ts.addr)
	args := []string{"-t", "-k", "-h", "127.0.0.1", "-p", port, "-o", "3"}
	if strict {
		args = append(args, "-S")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("h2spec: %v", err)
	}
	if dir := os.Getenv("H2SPEC_LOG_DIR"); dir != "" {
		_ = os.WriteFile(filepath.Join(dir, "h2spec-"+strconv.FormatBool(strict)+".log"), out, 0o644)
	}
	m := h2specSummary.FindSubmatch(out)
	if m == nil {
		t.Fatalf("no h2spec summary in output:\n%s", out)
	}
	total, _ = strconv.Atoi(string(m[1]))
	passed, _ = strconv.Atoi(string(m[2]))
	if failed, _ := strconv.Atoi(string(m[4])); failed > 0 || testing.Verbose() {
		t.Logf("h2spec output:\n%s", failureLines(out))
	}
	return total, passed
}

// failureLines keeps h2spec's failure section (after "Failures:").
func failureLines(out []byte) string {
	if i := regexp.MustCompile(`(?m)^Failures:`).FindIndex(out); i != nil {
		return string(out[i[0]:])
	}
	return fmt.Sprintf("%.2000s", out)
}

func TestH2spec(t *testing.T) {
	bin := h2specPath()
	if bin == "" {
		t.Skip("h2spec not found on PATH or in $(go env GOPATH)/bin; install with: go install github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible")
	}
	for _, tc := range []struct {
		name   string
		strict bool
		want   int
	}{{"normal", false, 145}, {"strict", true, 146}} {
		t.Run(tc.name, func(t *testing.T) {
			total, passed := runH2spec(t, bin, tc.strict)
			t.Logf("h2spec %s: %d/%d passed", tc.name, passed, total)
			if total != tc.want || passed != tc.want {
				t.Errorf("h2spec %s: %d/%d passed, want %d/%d", tc.name, passed, total, tc.want, tc.want)
			}
		})
	}
}
