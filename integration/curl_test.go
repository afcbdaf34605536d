package integration

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestCurlThroughProxy drives Debian's curl (7.88) through the proxy over
// HTTPS (--proxy https://...): an http:// URL is forwarded, an https://
// URL goes through a CONNECT tunnel to an origin whose certificate comes
// from a test CA.
func TestCurlThroughProxy(t *testing.T) {
	curl := requireTool(t, "curl", "apt-get install curl")
	p := StartProxy(t, "--allow-private")
	ca := newTestCA(t)
	cert := ca.issue(t)
	page := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The answer names what the origin saw, so that the test can tell a
		// forwarded request (this proxy in Via) from a tunnelled one (TLS,
		// no Via).
		fmt.Fprintf(w, "hello tls=%t via-h2proxy=%t", r.TLS != nil, strings.Contains(r.Header.Get("Via"), "1.1 h2proxy"))
	})
	httpOrigin := startOrigin(t, page, nil)
	httpsOrigin := startOrigin(t, page, &cert)
	proxyCA := writeTempFile(t, "proxy-ca.pem", p.CAPEM)
	originCA := writeTempFile(t, "origin-ca.pem", ca.pem)

	cases := []struct {
		name, url, kind, want string
		extra                 []string
	}{
		{"http", "http://" + httpOrigin + "/", "forward", "hello tls=false via-h2proxy=true", nil},
		{"https", "https://" + httpsOrigin + "/", "tunnel", "hello tls=true via-h2proxy=false", []string{"--cacert", originCA}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--silent", "--show-error", "--fail", "--max-time", "20",
				"--proxy", "https://" + p.Addr, "--proxy-cacert", proxyCA}, tc.extra...)
			cmd := exec.CommandContext(testContext(t, ioTimeout), curl, append(args, tc.url)...)
			cmd.Env = withoutProxyEnv(os.Environ())
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("curl %s: %v\n%s", strings.Join(cmd.Args[1:], " "), err, out)
			}
			if string(out) != tc.want {
				t.Errorf("curl %s: got %q, want %q", tc.url, out, tc.want)
			}
			host := strings.TrimSuffix(strings.SplitN(tc.url, "//", 2)[1], "/")
			p.WaitLog(t, ioTimeout, func(l map[string]any) bool {
				return l["message"] == "access" && l["kind"] == tc.kind && l["target"] == host && l["status"] == float64(200)
			})
		})
	}
}

// withoutProxyEnv drops the proxy variables curl reads, so that a
// developer's or CI's settings (no_proxy=127.0.0.1, say) cannot route
// around the proxy under test.
func withoutProxyEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		switch strings.ToLower(name) {
		case "http_proxy", "https_proxy", "all_proxy", "no_proxy":
			continue
		}
		out = append(out, kv)
	}
	return out
}

// requireTool finds an external program. Developers without it get a
// skip that says how to install it; in CI (CI set) a missing tool fails,
// so a green run cannot hide a test that never ran.
func requireTool(t testing.TB, name, install string, alsoAt ...string) string {
	t.Helper()
	if path, err := exec.LookPath(name); err == nil {
		return path
	}
	for _, p := range alsoAt {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	msg := fmt.Sprintf("%s not found on PATH%s; install it with: %s", name, strings.Join(append([]string{""}, alsoAt...), " or at "), install)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}
