package integration

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// HTTP/2 conformance of the front end.

// The native HTTP/2 engine passes every h2spec case: 145/145, and 146/146
// in strict mode (-S). Any regression fails the test. (net/http's HTTP/2
// server scores 141/145.)

const h2specInstall = "go install github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible"

var h2specSummary = regexp.MustCompile(`(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed`)

// TestH2Spec runs h2spec v2.2.1 (every test, TLS, certificate not
// verified) against the proxy, normal and strict, and fails unless every
// case passes.
func TestH2Spec(t *testing.T) {
	bin := requireTool(t, "h2spec", h2specInstall, goBin(t, "h2spec"))
	p := StartProxy(t)
	_, port, _ := net.SplitHostPort(p.Addr)
	for _, mode := range []struct {
		name string
		args []string
		want int
	}{{"normal", nil, 145}, {"strict", []string{"-S"}, 146}} {
		t.Run(mode.name, func(t *testing.T) {
			// h2spec takes about 11 s; -o 5 bounds each of its waits.
			args := append([]string{"-t", "-k", "-h", "127.0.0.1", "-p", port, "-o", "5"}, mode.args...)
			out, err := exec.CommandContext(testContext(t, 3*time.Minute), bin, args...).CombinedOutput() // exits 1 when any case fails
			m := h2specSummary.FindSubmatch(out)
			if m == nil {
				t.Fatalf("h2spec printed no summary (%v):\n%s", err, out)
			}
			total, _ := strconv.Atoi(string(m[1]))
			passed, _ := strconv.Atoi(string(m[2]))
			score := fmt.Sprintf("h2spec %s score: %d/%d passed (%s skipped, %s failed)", mode.name, passed, total, m[3], m[4])
			t.Log(score)
			fmt.Println(score) // for CI logs
			if failures := h2specFailures(out); failures != "" {
				t.Logf("h2spec failures:\n%s", failures)
			}
			if total != mode.want || passed != mode.want {
				t.Errorf("%s: want %d/%d", score, mode.want, mode.want)
			}
		})
	}
}

// h2specFailures returns the "Failures:" section of h2spec's report.
func h2specFailures(out []byte) string {
	_, rest, ok := bytes.Cut(out, []byte("\nFailures: \n"))
	if !ok {
		_, rest, ok = bytes.Cut(out, []byte("\nFailures:\n"))
	}
	if !ok {
		return ""
	}
	rest, _, _ = bytes.Cut(rest, []byte("\nFinished in"))
	return strings.TrimRight(string(rest), "\n")
}

// goBin is where `go install` puts a program: $(go env GOPATH)/bin.
func goBin(t testing.TB, name string) string {
	out, err := exec.Command("go", "env", "GOPATH").Output()
	if err != nil {
		return ""
	}
	gopath := strings.TrimSpace(string(out))
	if i := strings.IndexByte(gopath, filepath.ListSeparator); i >= 0 {
		gopath = gopath[:i]
	}
	return filepath.Join(gopath, "bin", name)
}

// TestAdvertisesExtendedConnect: the server's first SETTINGS frame carries
// SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 (RFC 8441 §3). Go's servers only
// send it when GODEBUG=http2xconnect=1 is set at process start, which the
// binary arranges itself; this checks it on the wire with a raw framer.
func TestAdvertisesExtendedConnect(t *testing.T) {
	p := StartProxy(t)
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", p.Addr, p.TLSConfig("h2"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no SETTINGS frame from the server: %v", err)
		}
		sf, ok := f.(*http2.SettingsFrame)
		if !ok || sf.IsAck() {
			continue
		}
		v, ok := sf.Value(http2.SettingEnableConnectProtocol)
		if !ok || v != 1 {
			var all []string
			_ = sf.ForeachSetting(func(s http2.Setting) error { all = append(all, s.String()); return nil })
			t.Fatalf("SETTINGS_ENABLE_CONNECT_PROTOCOL = %d (present %t), want 1; server sent %v", v, ok, all)
		}
		return
	}
}
