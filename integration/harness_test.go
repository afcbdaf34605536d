package integration

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// binPath is the h2proxy binary built once for the whole suite.
var binPath string

func TestMain(m *testing.M) {
	if os.Getenv(stockEnv) != "" {
		serveStockProxy() // a child of BenchmarkAgainstStock
		return
	}
	reexecWithExtendedConnect()
	dir, err := os.MkdirTemp("", "h2proxy-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// H2PROXY_BIN tests a binary built elsewhere (a release build, or a
	// snapshot while the tree is mid-change).
	if binPath = os.Getenv("H2PROXY_BIN"); binPath == "" {
		binPath = filepath.Join(dir, "h2proxy")
		build := exec.Command("go", "build", "-o", binPath, "../cmd/h2proxy")
		build.Stdout, build.Stderr = os.Stdout, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building h2proxy:", err, "(while the tree does not build, set H2PROXY_BIN=/tmp/h2proxy-head: the lead keeps a build of the last commit there)")
			os.Exit(1)
		}
	}
	code := m.Run()
	if code == 0 {
		// Every client, server and connection a test opened must be gone.
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// reexecWithExtendedConnect restarts the test binary with
// GODEBUG=http2xconnect=1, so that the HTTP/2 origins the tests run with
// Go's servers advertise SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441 §3):
// Go reads that switch only at process start.
func reexecWithExtendedConnect() {
	const want = "http2xconnect=1"
	cur := os.Getenv("GODEBUG")
	if strings.Contains(cur, want) {
		return
	}
	// Replace GODEBUG rather than add a second one: the first of two
	// wins, and the re-exec would then never see the setting (and loop).
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "GODEBUG=") })
	env = append(env, "GODEBUG="+strings.TrimPrefix(cur+","+want, ","))
	if err := syscall.Exec("/proc/self/exe", os.Args, env); err != nil {
		fmt.Fprintln(os.Stderr, "re-exec with", want, "failed:", err)
	}
}

// Proxy is a running h2proxy process.
type Proxy struct {
	Addr    string // 127.0.0.1:PORT
	DataDir string
	CAPEM   []byte
	Roots   *x509.CertPool // trusts the proxy's local CA

	cmd  *exec.Cmd
	mu   sync.Mutex
	logs []map[string]any
	cond *sync.Cond
	done chan struct{}
}

// StartProxy runs h2proxy on 127.0.0.1:0 with a fresh data directory and
// JSON logs, waits for its "listening" line and stops it when t ends.
// Extra flags follow the defaults (so they can override them).
func StartProxy(t testing.TB, args ...string) *Proxy {
	t.Helper()
	p := &Proxy{DataDir: t.TempDir(), done: make(chan struct{})}
	p.cond = sync.NewCond(&p.mu)
	all := append([]string{"--listen", "127.0.0.1:0", "--data-dir", p.DataDir, "--log-format", "json", "--log-level", "debug"}, args...)
	p.cmd = exec.Command(binPath, all...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go p.readLogs(stderr)
	t.Cleanup(func() {
		p.Stop(t)
		if t.Failed() {
			p.logUnparsed(t)
		}
	})

	line := p.WaitLog(t, 10*time.Second, func(l map[string]any) bool { return l["message"] == "listening" })
	p.Addr, _ = line["addr"].(string)
	p.CAPEM, err = os.ReadFile(filepath.Join(p.DataDir, "ca.pem"))
	if err == nil {
		p.Roots = x509.NewCertPool()
		p.Roots.AppendCertsFromPEM(p.CAPEM)
	}
	return p
}

func (p *Proxy) readLogs(r io.Reader) {
	defer close(p.done)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			m = map[string]any{"message": "unparsed", "raw": sc.Text()}
		}
		p.mu.Lock()
		p.logs = append(p.logs, m)
		p.cond.Broadcast()
		p.mu.Unlock()
	}
	p.mu.Lock()
	p.logs = append(p.logs, map[string]any{"message": "exited"})
	p.cond.Broadcast()
	p.mu.Unlock()
}

// logUnparsed shows what the proxy printed that is not a JSON log line
// (a race detector's report, a panic): for a test that failed, it is
// usually the cause.
func (p *Proxy) logUnparsed(t testing.TB) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	for _, l := range p.logs {
		if raw, ok := l["raw"].(string); ok && l["message"] == "unparsed" {
			b.WriteString(raw)
			b.WriteByte('\n')
		}
	}
	if b.Len() > 0 {
		t.Logf("the proxy's output that is not a log line:\n%s", b.String())
	}
}

// WaitLog waits until a log line satisfies match and returns it.
func (p *Proxy) WaitLog(t testing.TB, timeout time.Duration, match func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.AfterFunc(timeout, func() {
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	})
	defer deadline.Stop()
	start := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := 0; ; {
		for ; i < len(p.logs); i++ {
			if match(p.logs[i]) {
				return p.logs[i]
			}
		}
		if time.Since(start) >= timeout {
			t.Fatalf("no matching log line within %v; logs:\n%s", timeout, p.dumpLocked())
		}
		p.cond.Wait()
	}
}

// Logs returns the log lines so far.
func (p *Proxy) Logs() []map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]map[string]any(nil), p.logs...)
}

func (p *Proxy) dumpLocked() string {
	var s string
	for _, l := range p.logs {
		b, _ := json.Marshal(l)
		s += string(b) + "\n"
	}
	return s
}

// TLSConfig returns a client TLS config that trusts the proxy's CA and
// offers the given ALPN protocols.
func (p *Proxy) TLSConfig(alpn ...string) *tls.Config {
	return &tls.Config{RootCAs: p.Roots, ServerName: "127.0.0.1", NextProtos: alpn}
}

// PID is the proxy's process id (for CPU and memory readings).
func (p *Proxy) PID() int { return p.cmd.Process.Pid }

// Signal sends sig to the proxy process.
func (p *Proxy) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Wait waits for the process to exit and returns its exit code.
func (p *Proxy) Wait(timeout time.Duration) (int, error) {
	select {
	case <-p.done:
	case <-time.After(timeout):
		return -1, fmt.Errorf("proxy still running after %v", timeout)
	}
	err := p.cmd.Wait()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), nil
	}
	return 0, err
}

// Stop kills the proxy if it is still running.
func (p *Proxy) Stop(t testing.TB) {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		_ = p.cmd.Wait()
	}
}
