package proxy

import (
	"bufio"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/time/rate"
)

// Users are the proxy's users with their bcrypt password hashes, as read
// from an htpasswd file (`htpasswd -B`, or `h2proxy passwd`).
type Users struct {
	hashes map[string][]byte
}

// LoadUsers reads an htpasswd file.
func LoadUsers(path string) (*Users, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	u, err := ParseUsers(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return u, nil
}

// ParseUsers parses htpasswd lines "user:hash". Only bcrypt hashes are
// accepted: the older htpasswd formats (MD5-crypt, SHA1, crypt) are too
// fast to resist offline guessing.
func ParseUsers(r io.Reader) (*Users, error) {
	u := &Users{hashes: map[string][]byte{}}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, hash, ok := strings.Cut(line, ":")
		if !ok || name == "" {
			return nil, fmt.Errorf("line %d: want user:bcrypt-hash", n)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("line %d (user %q): not a bcrypt hash; create entries with `h2proxy passwd` or `htpasswd -B`", n, name)
		}
		u.hashes[name] = []byte(hash)
	}
	return u, sc.Err()
}

// Len returns the number of users.
func (u *Users) Len() int { return len(u.hashes) }

// HashPassword returns an htpasswd line for user.
func HashPassword(user, password string) (string, error) {
	if user == "" || strings.ContainsAny(user, ":\r\n") {
		return "", fmt.Errorf("user name %q: must be non-empty without ':' or newlines", user)
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return "", err
	}
	return user + ":" + string(h), nil
}

// dummyHash is compared against when the user is unknown, so that a
// wrong user name takes as long as a wrong password.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("h2proxy dummy password"), bcrypt.DefaultCost)

// authenticator checks Proxy-Authorization (RFC 9110 §11.7.1, Basic per
// RFC 7617). bcrypt makes each check slow on purpose, so verified
// credentials are cached by their SHA-256 for a while; failures are rate
// limited per client address.
type authenticator struct {
	mu       sync.Mutex
	users    *Users
	verified map[[32]byte]verifiedEntry
	failures map[string]*rate.Limiter
}

type verifiedEntry struct {
	user    string
	expires time.Time
}

const (
	verifiedTTL   = 5 * time.Minute
	maxCached     = 10000
	failureBurst  = 10              // wrong guesses allowed at once
	failureRefill = 6 * time.Second // then one more every 6 s
)

func newAuthenticator() *authenticator {
	return &authenticator{verified: map[[32]byte]verifiedEntry{}, failures: map[string]*rate.Limiter{}}
}

// setUsers replaces the user set (nil turns authentication off) and
// forgets cached verifications, so a removed user or changed password
// takes effect at once.
func (a *authenticator) setUsers(u *Users) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.users = u
	clear(a.verified)
}

func (a *authenticator) enabled() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.users != nil
}

// authResult says why a request was not authenticated.
type authResult int

const (
	authOK authResult = iota
	authMissing
	authInvalid
	authThrottled
)

// check returns the authenticated user, or why there is none.
func (a *authenticator) check(r *http.Request) (string, authResult) {
	user, pass, ok := parseBasic(r.Header.Get("Proxy-Authorization"))
	if !ok {
		return "", authMissing
	}
	key := sha256.Sum256([]byte(user + "\x00" + pass))
	client := clientIP(r)

	a.mu.Lock()
	users := a.users
	if e, hit := a.verified[key]; hit && time.Now().Before(e.expires) {
		a.mu.Unlock()
		return e.user, authOK
	}
	lim := a.failures[client]
	if lim != nil && lim.Tokens() < 1 {
		a.mu.Unlock()
		return "", authThrottled
	}
	a.mu.Unlock()

	hash, known := users.hashes[user]
	if !known {
		hash = dummyHash
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(pass)) != nil || !known {
		a.recordFailure(client)
		return "", authInvalid
	}
	a.mu.Lock()
	if len(a.verified) >= maxCached {
		clear(a.verified)
	}
	a.verified[key] = verifiedEntry{user: user, expires: time.Now().Add(verifiedTTL)}
	a.mu.Unlock()
	return user, authOK
}

func (a *authenticator) recordFailure(client string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	lim := a.failures[client]
	if lim == nil {
		if len(a.failures) >= maxCached {
			a.pruneFailures()
		}
		lim = rate.NewLimiter(rate.Every(failureRefill), failureBurst)
		a.failures[client] = lim
	}
	lim.Allow()
}

// pruneFailures forgets clients whose budget has refilled.
func (a *authenticator) pruneFailures() {
	for ip, lim := range a.failures {
		if lim.Tokens() >= failureBurst {
			delete(a.failures, ip)
		}
	}
}

func parseBasic(h string) (user, pass string, ok bool) {
	scheme, cred, found := strings.Cut(h, " ")
	if !found || !strings.EqualFold(scheme, "Basic") {
		return "", "", false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
	if err != nil {
		return "", "", false
	}
	return strings.Cut(string(raw), ":")
}

// clientIP is the client's address without the port.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
