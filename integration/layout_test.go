package integration

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportRules keeps the package layout of DESIGN.md true: data flows
// front end -> proxy -> tunnel, and the front ends never know each other.
func TestImportRules(t *testing.T) {
	const mod = "github.com/h2proxy/h2proxy/"
	allowed := map[string][]string{
		"cmd/h2proxy": {"proxy", "certs", "h1", "h2", "ws", "tunnel"}, // via proxy
		"proxy":       {"h1", "h2", "ws", "tunnel"},
		"h1":          {"tunnel"},
		"h2":          {"tunnel"},
		"ws":          {},
		"tunnel":      {},
		"certs":       {},
		"integration": {},
	}
	for pkg, ok := range allowed {
		out, err := exec.Command("go", "list", "-deps", "-test", "../"+pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			dep = strings.TrimSuffix(strings.Fields(dep + " ")[0], ".test")
			if !strings.HasPrefix(dep, mod) {
				continue
			}
			name := strings.TrimPrefix(dep, mod)
			if i := strings.Index(name, " "); i >= 0 {
				name = name[:i]
			}
			if name == pkg || contains(ok, name) {
				continue
			}
			t.Errorf("%s imports %s, which DESIGN.md does not allow", pkg, name)
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
