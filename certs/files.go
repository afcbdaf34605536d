package certs

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultCheckInterval is how often, at most, a handshake on a FileSource
// looks at the files for changes.
const DefaultCheckInterval = time.Second

// FileSource serves a certificate chain and key from PEM files and picks
// up new files without a restart: tools such as certbot, cert-manager or
// a Kubernetes secret volume replace the files in place, and the proxy
// must not need a restart (and so a drain) to serve the new certificate.
//
// Changes are noticed on handshakes, at most once per CheckInterval, by
// comparing the files' content with what was loaded. Polling on the
// handshake path needs no goroutine and no Close; an idle proxy has no
// handshake that needs the new certificate anyway. Reload forces a
// reload (for SIGHUP).
//
// Files that do not load (half written, a key that does not match the
// certificate) are rejected and the previous certificate stays in use.
type FileSource struct {
	// CheckInterval is how often a handshake may read the files.
	// Zero means DefaultCheckInterval; negative disables polling
	// (only Reload then picks up new files). Set it before the first
	// handshake.
	CheckInterval time.Duration

	// OnReload, if set, is called after new files were picked up by
	// polling (not by Reload, whose caller learns it from the result).
	OnReload func(leaf *x509.Certificate)

	// OnError, if set, is called when polling found changed files that
	// do not load; the previous certificate stays in use. It is called
	// once per distinct failure, not on every check.
	OnError func(err error)

	certFile, keyFile string

	cur       atomic.Pointer[loadedPair]
	nextCheck atomic.Int64 // unix nanoseconds of the next allowed check

	mu      sync.Mutex // serializes loads; guards failed and lastErr
	failed  pairStamp  // content last rejected, so that it is not re-parsed and re-reported
	lastErr string     // last read error reported, so that a missing file is reported once
}

type loadedPair struct {
	cert  *tls.Certificate
	stamp pairStamp
}

// pairStamp identifies one version of the certificate and key files by
// their content. File metadata is not enough: Linux file times tick every
// few milliseconds, an in-place rewrite keeps the inode, and two ECDSA
// certificates often have the same size. Reading two small files at most
// once per interval costs nothing next to a handshake.
type pairStamp [sha256.Size]byte

// NewFileSource loads certFile (the chain, leaf first) and keyFile. It
// fails if they do not load, so that a bad configuration stops the start.
func NewFileSource(certFile, keyFile string) (*FileSource, error) {
	s := &FileSource{certFile: certFile, keyFile: keyFile}
	l, err := s.load()
	if err != nil {
		return nil, err
	}
	s.cur.Store(l)
	return s, nil
}

// Files serves the certificate chain and key from PEM files, reloading
// them when they change (see FileSource). Use NewFileSource to be told
// about reloads and to reload on SIGHUP.
func Files(certFile, keyFile string) (*tls.Config, error) {
	s, err := NewFileSource(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("--cert %s / --key %s: %w", certFile, keyFile, err)
	}
	return s.TLSConfig(), nil
}

// TLSConfig returns a config whose GetCertificate serves the current
// certificate. Callers may Clone it and add NextProtos.
func (s *FileSource) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			s.poll()
			return s.cur.Load().cert, nil
		},
	}
}

// Certificate is the certificate new handshakes get.
func (s *FileSource) Certificate() *tls.Certificate { return s.cur.Load().cert }

// Leaf is the parsed leaf of Certificate.
func (s *FileSource) Leaf() *x509.Certificate { return s.cur.Load().cert.Leaf }

// Expiry maps each name of the current leaf to its NotAfter (the shape
// ACMEManager.Expiry and LocalCA.Expiry share, for one metrics gauge).
func (s *FileSource) Expiry() map[string]time.Time {
	return leafExpiry(s.Leaf())
}

// Reload loads the files now. On error the previous certificate stays in
// use and the error says why the new files were rejected.
func (s *FileSource) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, err := s.load()
	if err != nil {
		return err
	}
	s.cur.Store(l)
	s.failed, s.lastErr = pairStamp{}, ""
	return nil
}

func (s *FileSource) interval() time.Duration {
	if s.CheckInterval == 0 {
		return DefaultCheckInterval
	}
	return s.CheckInterval
}

// poll reloads changed files. Only one handshake per interval reads the
// files (the CompareAndSwap), and none waits for a load in progress (the
// TryLock): handshakes keep the current certificate meanwhile.
func (s *FileSource) poll() {
	iv := s.interval()
	if iv < 0 {
		return
	}
	now := time.Now().UnixNano()
	next := s.nextCheck.Load()
	if now < next || !s.nextCheck.CompareAndSwap(next, now+int64(iv)) {
		return
	}
	if !s.mu.TryLock() {
		return
	}
	leaf, err := s.pollLocked()
	s.mu.Unlock()
	// Callbacks run unlocked so that they may call Reload or Leaf.
	switch {
	case err != nil && s.OnError != nil:
		s.OnError(err)
	case leaf != nil && s.OnReload != nil:
		s.OnReload(leaf)
	}
}

// pollLocked returns the new leaf after a reload, or an error that has
// not been reported yet, or neither.
func (s *FileSource) pollLocked() (*x509.Certificate, error) {
	certPEM, keyPEM, st, err := s.read()
	if err != nil {
		// A file missing halfway through a replacement: report it once,
		// not every interval.
		if err.Error() == s.lastErr {
			return nil, nil
		}
		s.lastErr = err.Error()
		return nil, fmt.Errorf("keeping the previous certificate: %w", err)
	}
	s.lastErr = ""
	if st == s.cur.Load().stamp || st == s.failed {
		return nil, nil // unchanged, or already rejected and reported
	}
	l, err := parsePair(s.certFile, s.keyFile, certPEM, keyPEM, st)
	if err != nil {
		s.failed = st
		return nil, fmt.Errorf("keeping the previous certificate: %w", err)
	}
	s.cur.Store(l)
	s.failed = pairStamp{}
	return l.cert.Leaf, nil
}

// read returns both files and their stamp.
func (s *FileSource) read() (certPEM, keyPEM []byte, st pairStamp, err error) {
	if certPEM, err = os.ReadFile(s.certFile); err != nil {
		return nil, nil, st, err
	}
	if keyPEM, err = os.ReadFile(s.keyFile); err != nil {
		return nil, nil, st, err
	}
	h := sha256.New()
	// The length prefix keeps "ab"+"c" and "a"+"bc" apart.
	fmt.Fprintf(h, "%d\n", len(certPEM))
	h.Write(certPEM)
	h.Write(keyPEM)
	h.Sum(st[:0])
	return certPEM, keyPEM, st, nil
}

func (s *FileSource) load() (*loadedPair, error) {
	certPEM, keyPEM, st, err := s.read()
	if err != nil {
		return nil, err
	}
	return parsePair(s.certFile, s.keyFile, certPEM, keyPEM, st)
}

func parsePair(certFile, keyFile string, certPEM, keyPEM []byte, st pairStamp) (*loadedPair, error) {
	// X509KeyPair rejects a key that does not match the leaf, which is
	// the usual state halfway through replacing both files.
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s / %s: %w", certFile, keyFile, err)
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%s: %w", certFile, err)
		}
	}
	return &loadedPair{cert: &pair, stamp: st}, nil
}

// leafExpiry maps the leaf's DNS names and IP addresses (or, lacking
// both, its common name) to its NotAfter.
func leafExpiry(leaf *x509.Certificate) map[string]time.Time {
	m := make(map[string]time.Time)
	if leaf == nil {
		return m
	}
	for _, n := range leaf.DNSNames {
		m[n] = leaf.NotAfter
	}
	for _, ip := range leaf.IPAddresses {
		m[ip.String()] = leaf.NotAfter
	}
	if len(m) == 0 {
		m[leaf.Subject.CommonName] = leaf.NotAfter
	}
	return m
}
