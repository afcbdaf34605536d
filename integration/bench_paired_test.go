package integration

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkH2AgainstH1 measures the throughput targets of issue 3, which
// are ratios of an HTTP/2 path to the HTTP/1.1-over-TLS tunnel, in pairs:
// each operation moves benchBytes through one HTTP/1.1 tunnel and then
// benchBytes per stream through the HTTP/2 path (the other way round on
// odd operations), so both sides of a ratio see the same moments of a
// machine whose speed drifts by 10-15 % from one second to the next.
// BenchmarkThroughput measures the paths one after the other, seconds
// apart, and its x-h1-tls varies more between runs.
//
// It reports x-h1-tls (the HTTP/2 path's MB/s over the HTTP/1.1 tunnel's),
// and the proxy's CPU seconds per GiB on each side, read per thread from
// the scheduler's nanosecond counters instead of /proc/PID/stat's 10 ms
// ticks. Only the transfers are timed: tunnels are opened before the
// clock starts, so neither side pays for handshakes. Run it with
//
//	go test -run '^$' -bench H2AgainstH1 -benchtime 10x ./integration/
func BenchmarkH2AgainstH1(b *testing.B) {
	target, cfg := benchTarget(b)
	p := StartProxy(b, "--allow-private")
	h1 := h1TLSPath(p, target)
	for _, streams := range []int{1, 16} {
		for _, upload := range []bool{true, false} {
			b.Run(fmt.Sprintf("h2-connect-%d/%s", streams, dirName(upload)), func(b *testing.B) {
				h := dialBenchH2(b, p) // see benchclient_test.go
				h2 := func(b *testing.B) net.Conn { return h.connect(b, target) }
				sides := [2]pairSide{{pid: p.PID(), open: h1, n: 1}, {pid: p.PID(), open: h2, n: streams}}
				b.SetBytes(int64(benchBytes * (1 + streams)))
				for op := range b.N {
					sides[op%2].run(b, cfg, upload)
					sides[1-op%2].run(b, cfg, upload)
				}
				gib := float64(b.N*benchBytes) / (1 << 30)
				h1rate := gib / sides[0].took.Seconds()
				h2rate := gib * float64(streams) / sides[1].took.Seconds()
				b.ReportMetric(h2rate/h1rate, "x-h1-tls")
				b.ReportMetric(sides[1].cpu/(gib*float64(streams)), "h2-proxy-cpu-s/GiB")
				b.ReportMetric(sides[0].cpu/gib, "h1-proxy-cpu-s/GiB")
			})
		}
	}
}

// pairSide is one side of a paired benchmark: n tunnels opened with open
// through the proxy process pid, and the time and that process's CPU
// their transfers took so far.
type pairSide struct {
	pid  int
	open path
	n    int
	took time.Duration
	cpu  float64
}

// run opens the side's tunnels (the opening, handshakes included, is not
// data path and is not timed) and then times their transfers, at once.
func (s *pairSide) run(b *testing.B, cfg *tls.Config, upload bool) {
	b.StopTimer()
	conns := make([]net.Conn, s.n)
	for k := range conns {
		conns[k] = s.open(b)
	}
	b.StartTimer()
	cpu0, t0 := proxyCPU(b, s.pid), time.Now()
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			transfer(b, c, cfg, upload)
		}()
	}
	wg.Wait()
	s.took += time.Since(t0)
	s.cpu += proxyCPU(b, s.pid) - cpu0
}

// proxyCPU is the CPU time of process pid in seconds: the sum of its
// threads' time on a CPU (user and system, in nanoseconds, from each
// thread's schedstat). Threads that exited are missing, which for the
// proxy (Go keeps its threads) means none.
func proxyCPU(b *testing.B, pid int) float64 {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		b.Fatalf("no threads of process %d: %v", pid, err)
	}
	var ns int64
	for _, t := range tasks {
		data, err := os.ReadFile(t)
		if err != nil {
			continue // the thread exited meanwhile
		}
		f := strings.Fields(string(data))
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			b.Fatalf("%s: %q", t, data)
		}
		ns += n
	}
	return float64(ns) / 1e9
}
