package main

import (
	"os"
	"strings"
	"syscall"
)

// reexecWithExtendedConnect restarts the process with http2xconnect=1 in
// GODEBUG. Go's HTTP/2 server advertises SETTINGS_ENABLE_CONNECT_PROTOCOL
// (RFC 8441 §3) only when that is set at process start; //go:debug cannot
// set it. Any existing http2xconnect entry is replaced, not duplicated.
func reexecWithExtendedConnect() {
	const want = "http2xconnect=1"
	cur := os.Getenv("GODEBUG")
	var parts []string
	for _, p := range strings.Split(cur, ",") {
		if p == want {
			return
		}
		if p != "" && !strings.HasPrefix(p, "http2xconnect=") {
			parts = append(parts, p)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return // run without RFC 8441 rather than not at all
	}
	env := os.Environ()
	for i, kv := range env {
		if strings.HasPrefix(kv, "GODEBUG=") {
			env = append(env[:i], env[i+1:]...)
			break
		}
	}
	env = append(env, "GODEBUG="+strings.Join(append(parts, want), ","))
	_ = syscall.Exec(exe, os.Args, env) // returns only on failure
}
