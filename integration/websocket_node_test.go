package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// wsNodeResult is what testdata/node_rfc8441.mjs prints.
type wsNodeResult struct {
	EnableConnectProtocol bool   `json:"enableConnectProtocol"`
	Error                 string `json:"error"`
	Results               []struct {
		Target    string `json:"target"`
		Status    int    `json:"status"`
		Body      string `json:"body"`
		Echoed    string `json:"echoed"`
		CloseCode int    `json:"closeCode"`
		Ended     bool   `json:"ended"`
		RSTCode   int    `json:"rstCode"`
		Error     string `json:"error"`
	} `json:"results"`
}

// wsCIRequired skips a test that needs a tool the machine lacks, unless
// CI is set: there the tool is part of the environment and its absence a
// failure.
func wsCIRequired(t *testing.T, what string, err error) {
	t.Helper()
	if ci := os.Getenv("CI"); ci == "" || ci == "false" || ci == "0" {
		t.Skipf("%s not available (with CI set this is a failure): %v", what, err)
	}
	t.Fatalf("CI is set but %s is not available: %v", what, err)
}

// TestWebSocketNode uses Node 20's built-in http2 module as an independent
// RFC 8441 client: it must see SETTINGS_ENABLE_CONNECT_PROTOCOL from the
// proxy (§3), and its extended CONNECTs to a ws:// and a wss:// origin must
// echo a frame and finish a close handshake.
func TestWebSocketNode(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		wsCIRequired(t, "node", err)
	}
	script, err := filepath.Abs(filepath.Join("testdata", "node_rfc8441.mjs"))
	if err != nil {
		t.Fatal(err)
	}
	p, ca := wsMatrixProxy(t)
	cert := ca.issue(t)
	wsO := startWSOrigin(t, wsOriginConfig{proto: "h1"})
	wssO := startWSOrigin(t, wsOriginConfig{proto: "h1", cert: &cert})
	wsLogOnFailure(t, p, "/node")
	targets, _ := json.Marshal([]map[string]string{
		{"scheme": "http", "authority": wsO.addr, "path": "/node-ws"},
		{"scheme": "https", "authority": wssO.addr, "path": "/node-wss"},
	})
	caFile := writeTempFile(t, "proxy-ca.pem", p.CAPEM)

	ctx := testContext(t, 25*time.Second)
	cmd := exec.CommandContext(ctx, node, script, "https://"+p.Addr, caFile, string(targets))
	out, err := cmd.Output()
	var stderr []byte
	if ee, ok := err.(*exec.ExitError); ok {
		stderr = ee.Stderr
	}
	var res wsNodeResult
	if jerr := json.Unmarshal(out, &res); jerr != nil {
		t.Fatalf("node: %v; stdout %q; stderr %q (json: %v)", err, out, stderr, jerr)
	}
	t.Logf("node: %s", out)
	if err != nil || res.Error != "" {
		t.Fatalf("node: %v %s; stderr %q", err, res.Error, stderr)
	}
	if !res.EnableConnectProtocol {
		t.Errorf("node did not see SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 from the proxy")
	}
	want := map[string]string{"http": "hello from node over http", "https": "hello from node over https"}
	if len(res.Results) != 2 {
		t.Fatalf("node ran %d targets, want 2", len(res.Results))
	}
	for i, scheme := range []string{"http", "https"} {
		r := res.Results[i]
		if r.Status != 200 {
			t.Errorf("%s: status %d (body %q), want 200", r.Target, r.Status, r.Body)
			continue
		}
		if r.Echoed != want[scheme] {
			t.Errorf("%s: echoed %q, want %q", r.Target, r.Echoed, want[scheme])
		}
		if r.CloseCode != 1000 || !r.Ended || r.Error != "" || r.RSTCode != 0 {
			t.Errorf("%s: close code %d, ended %v, error %q, RST_STREAM %d; want 1000, a clean END_STREAM", r.Target, r.CloseCode, r.Ended, r.Error, r.RSTCode)
		}
	}
}
