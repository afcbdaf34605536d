package integration

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// Proxy authentication (RFC 9110 §11.7.1, §15.5.8; Basic, RFC 7617):
// 407 flows over HTTP/1.1 and HTTP/2, good credentials, credentials never
// forwarded or logged, brute-force throttling per client address, reloads,
// and probe resistance.

// want407 asserts a proxy authentication challenge: 407 with a Basic
// challenge (RFC 9110 §11.7.1) and a Proxy-Status naming the refusal
// (RFC 9209 §2.3.2); on HTTP/1.1 the connection closes, so bytes a
// client pipelined behind the CONNECT are never read as requests.
func want407(t *testing.T, what, kind string, resp *http.Response) {
	t.Helper()
	wantRefusal(t, what, resp, http.StatusProxyAuthRequired, "http_request_denied")
	if got, want := resp.Header.Get("Proxy-Authenticate"), `Basic realm="h2proxy", charset="UTF-8"`; got != want {
		t.Errorf("%s: Proxy-Authenticate %q, want %q", what, got, want)
	}
	if kind == kindH1Connect && !resp.Close {
		t.Errorf("%s: a refused CONNECT must close the connection (Connection: close)", what)
	}
}

type authRig struct {
	p      *Proxy
	file   string
	target *tcpTarget
	origin *recordingOrigin
}

const (
	alicePass = "correct horse battery staple"
	bobPass   = "tr0ub4dor&3"
)

func startAuthRig(t *testing.T, flags ...string) *authRig {
	t.Helper()
	rig := &authRig{
		file:   writeHtpasswd(t, map[string]string{"alice": alicePass, "bob": bobPass}),
		target: startTarget(t, echoConn),
		origin: startRecordingOrigin(t),
	}
	rig.p = StartProxy(t, append([]string{"--auth-file", rig.file, "--allow-private"}, flags...)...)
	return rig
}

// authority is the target a kind of request goes to.
func (rig *authRig) authority(kind string) string {
	if kind == kindH1Connect || kind == kindH2Connect {
		return rig.target.Addr()
	}
	return rig.origin.Addr
}

// TestSecurityAuthRequired: without valid credentials every kind of proxy
// request gets the 407 challenge, and nothing reaches the destination.
// Each credential case comes from its own client address so that the
// failures it counts do not throttle the next case.
func TestSecurityAuthRequired(t *testing.T) {
	rig := startAuthRig(t)
	creds := []struct{ name, auth string }{
		{"none", ""},
		{"wrong password", basicAuth("alice", "guess")},
		{"unknown user", basicAuth("mallory", alicePass)},
		{"empty password", basicAuth("alice", "")},
		{"not base64", "Basic !!!"},
		{"no colon", "Basic " + base64.StdEncoding.EncodeToString([]byte("alice"))},
		{"other scheme", "Bearer " + alicePass},
	}
	for i, c := range creds {
		src := fmt.Sprintf("127.0.1.%d", i+1)
		for _, kind := range proxyKinds {
			t.Run(c.name+"/"+kind, func(t *testing.T) {
				authority := rig.authority(kind)
				resp, _, _ := proxyRequest(t, rig.p, kind, src, authority, c.auth)
				want407(t, kind+" with credentials "+c.name, kind, resp)
			})
		}
	}
	t.Run("Authorization is not Proxy-Authorization", func(t *testing.T) {
		raw := "GET http://" + rig.origin.Addr + "/ HTTP/1.1\r\nHost: " + rig.origin.Addr + "\r\nAuthorization: " + basicAuth("alice", alicePass) + "\r\n\r\n"
		resp, _ := h1RoundTrip(t, rig.p, "127.0.2.1", raw, http.MethodGet)
		want407(t, "Authorization instead of Proxy-Authorization", kindH1Forward, resp)
	})
	t.Run("extended CONNECT", func(t *testing.T) {
		// RFC 8441 §4: a WebSocket over h2 is a proxy request too.
		r := dialRawH2(t, rig.p)
		o := r.answer(t, 1, ":method", "CONNECT", ":protocol", "websocket", ":scheme", "https", ":path", "/", ":authority", rig.origin.Addr)
		if o.status[1] != "407" {
			t.Errorf("unauthenticated extended CONNECT: %v, want 407", o)
		}
	})
	if n := rig.target.Accepted(); n != 0 {
		t.Errorf("the CONNECT target accepted %d connections from unauthenticated requests", n)
	}
	rig.origin.wantSeen(t, "unauthenticated forwards", 0)
}

// TestSecurityAuthGoodCredentials: valid credentials open tunnels and
// forward requests; the origin never sees Proxy-Authorization (a
// hop-by-hop field meant for this proxy, RFC 9110 §11.7.1); the access log
// names the user and never holds the password or the header value.
func TestSecurityAuthGoodCredentials(t *testing.T) {
	rig := startAuthRig(t)
	auth := basicAuth("alice", alicePass)
	for _, kind := range proxyKinds {
		t.Run(kind, func(t *testing.T) {
			resp, body, tun := proxyRequest(t, rig.p, kind, "", rig.authority(kind), auth)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s with good credentials: status %d (%q)", kind, resp.StatusCode, resp.Header.Get("Proxy-Status"))
			}
			if tun != nil {
				echoOnce(t, tun, "hello through an authenticated tunnel")
				closeTunnel(tun) // tunnels are logged when they end
			} else if body != "origin says hi" {
				t.Errorf("%s: body %q, want the origin's", kind, body)
			}
		})
	}
	// A WebSocket upgrade is relayed on a connection of its own
	// (RFC 9110 §7.8); the origin here answers 200, not 101.
	ws := "GET http://" + rig.origin.Addr + "/ws HTTP/1.1\r\nHost: " + rig.origin.Addr + "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nProxy-Authorization: " + auth + "\r\n\r\n"
	if resp, _ := h1RoundTrip(t, rig.p, "", ws, http.MethodGet); resp.StatusCode != http.StatusOK {
		t.Errorf("WebSocket upgrade with good credentials: status %d", resp.StatusCode)
	}
	// (The WebSocket path may first probe the origin for h2 with prior
	// knowledge, which a Go origin sees as a "PRI *" request.)
	seen := slices.DeleteFunc(rig.origin.Seen(), func(r seenRequest) bool { return r.Method == "PRI" })
	if len(seen) != 3 {
		t.Errorf("the origin received %d requests, want 3: %+v", len(seen), seen)
	}
	for _, seen := range seen {
		if v := seen.Header.Values("Proxy-Authorization"); len(v) > 0 {
			t.Errorf("the origin received Proxy-Authorization %q over %s", v, seen.Proto)
		}
	}

	// A request to the proxy itself is not a proxy request: no credentials
	// needed for the local page.
	resp, _ := h1RoundTrip(t, rig.p, "", "GET / HTTP/1.1\r\nHost: "+rig.p.Addr+"\r\n\r\n", http.MethodGet)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("h1 GET / on the proxy without credentials: status %d, want 200", resp.StatusCode)
	}
	if resp, _ := h2GetAuth(t, dialH2From(t, rig.p, ""), "https://"+rig.p.Addr+"/", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("h2 GET / on the proxy without credentials: status %d, want 200", resp.StatusCode)
	}

	logged := 0
	rig.p.WaitLog(t, ioTimeout, func(l map[string]any) bool {
		if l["message"] == "access" && l["user"] == "alice" {
			logged++
		}
		return logged == len(proxyKinds)
	})
	var users []string
	for _, l := range accessLines(rig.p) {
		if l["kind"] != "local" {
			u, _ := l["user"].(string)
			users = append(users, u)
		}
	}
	if slices.ContainsFunc(users, func(u string) bool { return u != "alice" }) || len(users) == 0 {
		t.Errorf("access lines of authenticated requests name users %q, want alice each time", users)
	}
	assertLogsLackSecrets(t, rig.p, alicePass, strings.TrimPrefix(auth, "Basic "))
}

// TestSecurityAuthH2RetrySameConnection: a 407 over HTTP/2 ends only its
// stream, so a browser can retry with credentials on a new stream of the
// same connection, as Chrome does.
func TestSecurityAuthH2RetrySameConnection(t *testing.T) {
	rig := startAuthRig(t)
	cc := dialH2(t, rig.p)
	want407(t, "h2 CONNECT without credentials", kindH2Connect, h2ConnectAuth(t, cc, rig.target.Addr(), nil).resp)
	s := h2ConnectAuth(t, cc, rig.target.Addr(), authHeader(basicAuth("alice", alicePass)))
	if s.resp.StatusCode != http.StatusOK {
		t.Fatalf("the retry with credentials on the same connection: %d", s.resp.StatusCode)
	}
	echoOnce(t, s, "retried")
}

// assertLogsLackSecrets fails if any log line contains one of secrets.
func assertLogsLackSecrets(t *testing.T, p *Proxy, secrets ...string) {
	t.Helper()
	for _, l := range p.Logs() {
		line := fmt.Sprint(l)
		for _, s := range secrets {
			if strings.Contains(line, s) {
				t.Errorf("a log line contains a secret (%q): %s", s, line)
			}
		}
	}
}

// TestSecurityAuthThrottle: wrong guesses from one address are answered
// 429 with Retry-After once its budget (10 at once) is spent, even for
// correct credentials not yet verified, so passwords cannot be guessed
// at bcrypt speed; credentials already verified keep working, other
// addresses are unaffected, and the counter shows it all.
func TestSecurityAuthThrottle(t *testing.T) {
	rig := startAuthRig(t, "--admin-listen", "127.0.0.1:0")
	admin := adminAddr(t, rig.p)
	url := "http://" + rig.origin.Addr + "/"
	get := func(src, auth string) *http.Response {
		resp, _ := h1RoundTrip(t, rig.p, src, h1GetAuth(url, auth), http.MethodGet)
		return resp
	}
	alice, bob, wrong := basicAuth("alice", alicePass), basicAuth("bob", bobPass), basicAuth("alice", "guess")

	if resp := get(otherClientIP, alice); resp.StatusCode != http.StatusOK {
		t.Fatalf("alice before the guessing: status %d", resp.StatusCode)
	}
	for i := range 10 {
		if resp := get(otherClientIP, wrong); resp.StatusCode != http.StatusProxyAuthRequired {
			t.Fatalf("wrong guess %d of the allowed 10: status %d, want 407", i+1, resp.StatusCode)
		}
	}
	for _, c := range []struct{ what, auth string }{{"an 11th wrong guess", wrong}, {"bob's right password, not yet verified", bob}} {
		resp := get(otherClientIP, c.auth)
		wantRefusal(t, c.what, resp, http.StatusTooManyRequests, "http_request_denied")
		if resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s: 429 without Retry-After (RFC 9110 §10.2.3)", c.what)
		}
	}
	if resp := get(otherClientIP, alice); resp.StatusCode != http.StatusOK {
		t.Errorf("alice, verified before, from the throttled address: status %d, want 200", resp.StatusCode)
	}
	if resp := get(thirdClientIP, bob); resp.StatusCode != http.StatusOK {
		t.Errorf("bob from another address: status %d, want 200", resp.StatusCode)
	}
	rig.origin.wantSeen(t, "throttle test", 3)

	for reason, least := range map[string]float64{"invalid": 10, "throttled": 2} {
		series := `h2proxy_auth_failures_total{reason="` + reason + `"}`
		if got := scrapeMetric(t, admin, series); got < least {
			t.Errorf("%s = %v, want at least %v", series, got, least)
		}
	}
}

// TestSecurityAuthReload: the auth file is re-read when it changes (the
// poller) and on SIGHUP; a reload forgets cached verifications, so a
// removed user is locked out at once.
func TestSecurityAuthReload(t *testing.T) {
	rig := startAuthRig(t)
	url := "http://" + rig.origin.Addr + "/"
	status := func(src, auth string) int {
		resp, _ := h1RoundTrip(t, rig.p, src, h1GetAuth(url, auth), http.MethodGet)
		return resp.StatusCode
	}
	carol := basicAuth("carol", "carol's first")
	if got := status("127.0.3.1", carol); got != http.StatusProxyAuthRequired {
		t.Fatalf("carol before she exists: %d, want 407", got)
	}

	// `h2proxy passwd` adds her; the watcher picks the change up.
	cmd := exec.Command(binPath, "passwd", "--file", rig.file, "carol")
	cmd.Stdin = strings.NewReader("carol's first\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("h2proxy passwd: %v\n%s", err, out)
	}
	waitLogCount(t, rig.p, "auth file reloaded", 1)
	if got := status("127.0.3.2", carol); got != http.StatusOK {
		t.Errorf("carol after h2proxy passwd added her: %d, want 200", got)
	}

	// SIGHUP: change her password in place keeping the size and the
	// modification time, so only the signal can make the proxy notice.
	carol2 := basicAuth("carol", "carol's other")
	replaceKeepingStat(t, rig.file, "carol", "carol's other")
	if err := rig.p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLogCount(t, rig.p, "configuration reloaded", 1)
	if got := status("127.0.3.3", carol2); got != http.StatusOK {
		t.Errorf("carol's new password after SIGHUP: %d, want 200", got)
	}
	if got := status("127.0.3.4", carol); got != http.StatusProxyAuthRequired {
		t.Errorf("carol's old (cached) password after SIGHUP: %d, want 407", got)
	}

	// Removing alice locks her out although her credentials were cached.
	alice := basicAuth("alice", alicePass)
	if got := status("127.0.3.5", alice); got != http.StatusOK {
		t.Fatalf("alice: %d", got)
	}
	data, _ := os.ReadFile(rig.file)
	var kept []string
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(line, "alice:") {
			kept = append(kept, line)
		}
	}
	if err := os.WriteFile(rig.file, []byte(strings.Join(kept, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	// (The poller may also have seen the in-place change above; this is
	// the reload that leaves two users.)
	rig.p.WaitLog(t, ioTimeout, func(l map[string]any) bool { return l["message"] == "auth file reloaded" && l["users"] == 2.0 })
	if got := status("127.0.3.5", alice); got != http.StatusProxyAuthRequired {
		t.Errorf("alice after her removal: %d, want 407", got)
	}
}

// waitLogCount waits for the n-th log line with message msg.
func waitLogCount(t *testing.T, p *Proxy, msg string, n int) {
	t.Helper()
	seen := 0
	p.WaitLog(t, ioTimeout, func(l map[string]any) bool {
		if l["message"] == msg {
			seen++
		}
		return seen >= n
	})
}

// replaceKeepingStat gives user a new password in the htpasswd file at
// path, in place, with the same size and modification time (bcrypt hashes
// of one cost have one length).
func replaceKeepingStat(t *testing.T, path, user, pass string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	lines := strings.Split(string(data), "\n")
	for i, line := range lines {
		if old, ok := strings.CutPrefix(line, user+":"); ok {
			cost := old[4:6] // $2a$10$...
			lines[i] = strings.TrimSpace(htpasswdAtCost(t, user, pass, cost))
		}
	}
	out := []byte(strings.Join(lines, "\n"))
	if len(out) != len(data) {
		t.Fatalf("the new entry changes the file size (%d -> %d)", len(data), len(out))
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteAt(out, 0)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
}

func htpasswdAtCost(t *testing.T, user, pass, cost string) string {
	t.Helper()
	cmd := exec.Command(binPath, "passwd", user)
	cmd.Stdin = strings.NewReader(pass + "\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("h2proxy passwd: %v", err)
	}
	if !bytes.Contains(out, []byte("$"+cost+"$")) {
		t.Fatalf("h2proxy passwd wrote %q, not bcrypt cost %s", out, cost)
	}
	return string(out)
}

// TestSecurityProbeResistance: with --probe-resistance an unauthenticated
// proxy request is answered exactly as the local web page answers (no
// 407, no Proxy-Authenticate, no Proxy-Status, no Via), so a scanner
// cannot tell a proxy is here; only the secret probe domain gets the 407
// that makes a browser ask for credentials, and with them it gets the
// local page.
func TestSecurityProbeResistance(t *testing.T) {
	const probe = "secret-login.test"
	rig := startAuthRig(t, "--probe-resistance", "--probe-domain", probe)
	_, localPage := h1RoundTrip(t, rig.p, "", "GET / HTTP/1.1\r\nHost: "+rig.p.Addr+"\r\n\r\n", http.MethodGet)
	local404, _ := h1RoundTrip(t, rig.p, "", "GET /nope HTTP/1.1\r\nHost: "+rig.p.Addr+"\r\n\r\n", http.MethodGet)
	alice, wrong := basicAuth("alice", alicePass), basicAuth("alice", "guess")

	cases := []struct {
		name, kind, authority, auth string
		status                      int    // 0: anything but 407
		body                        string // "" for don't care
	}{
		{"CONNECT without credentials", kindH1Connect, rig.target.Addr(), "", 404, ""},
		{"CONNECT with wrong credentials", kindH1Connect, rig.target.Addr(), wrong, 404, ""},
		{"h2 CONNECT without credentials", kindH2Connect, rig.target.Addr(), "", 404, ""},
		{"forward / without credentials", kindH1Forward, rig.origin.Addr, "", 200, localPage},
		{"h2 forward / without credentials", kindH2Forward, rig.origin.Addr, "", 200, localPage},
		{"CONNECT to the probe domain", kindH1Connect, probe + ":443", "", 407, ""},
		{"h2 CONNECT to the probe domain", kindH2Connect, probe + ":443", "", 407, ""},
		{"forward to the probe domain", kindH1Forward, probe, "", 407, ""},
		{"CONNECT to the probe domain, logged in", kindH1Connect, probe + ":443", alice, 0, ""},
		{"h2 CONNECT to the probe domain, logged in", kindH2Connect, probe + ":443", alice, 0, ""},
		{"forward to the probe domain, logged in", kindH1Forward, probe, alice, 200, localPage},
		{"h2 forward to the probe domain, logged in", kindH2Forward, probe, alice, 200, localPage},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body, _ := proxyRequest(t, rig.p, c.kind, "", c.authority, c.auth)
			if c.status == http.StatusProxyAuthRequired {
				want407(t, c.name, c.kind, resp)
				return
			}
			if c.status == 0 { // logged in: any answer but another challenge
				if resp.StatusCode == http.StatusProxyAuthRequired {
					t.Errorf("%s: 407 although the credentials are good", c.name)
				}
				return
			}
			if resp.StatusCode != c.status || (c.body != "" && body != c.body) {
				t.Errorf("%s: status %d body %q, want %d %q", c.name, resp.StatusCode, body, c.status, c.body)
			}
			for _, h := range []string{"Proxy-Authenticate", "Proxy-Status", "Via"} {
				if v := resp.Header.Values(h); len(v) > 0 {
					t.Errorf("%s: %s %q gives the proxy away", c.name, h, v)
				}
			}
			if c.kind == kindH1Connect && c.status == 404 {
				if got, want := headerNames(resp.Header), headerNames(local404.Header); !slices.Equal(got, want) {
					t.Errorf("%s: header fields %v differ from the local 404's %v", c.name, got, want)
				}
			}
		})
	}
	if n := rig.target.Accepted(); n != 0 {
		t.Errorf("the target accepted %d connections from unauthenticated requests", n)
	}
	rig.origin.wantSeen(t, "probe resistance", 0)
}

// headerNames lists the field names of h but Date, sorted.
func headerNames(h http.Header) []string {
	var names []string
	for k := range h {
		if k != "Date" {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	return names
}
