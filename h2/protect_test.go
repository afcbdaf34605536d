package h2

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// waitCtx is a handler that holds its stream until the stream is reset.
func waitCtx(started *atomic.Int32) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if started != nil {
			started.Add(1)
		}
		<-r.Context().Done()
	})
}

func expectCalm(t *testing.T, rc *rawClient) {
	t.Helper()
	if code := connErrCode(rc.serveResult()); code != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("ServeConn ended with code %v, want ENHANCE_YOUR_CALM", code)
	}
}

// Rapid Reset (CVE-2023-44487): opening and at once resetting streams
// costs tokens; past the bucket the connection goes.
func TestRapidReset(t *testing.T) {
	var started atomic.Int32
	rc := newRawClient(t, Config{ResetBurst: 20, ResetRate: 1e-9}, waitCtx(&started), false)
	rc.handshake()
	rc.spam(200, func(i int) error {
		id := uint32(2*i + 1)
		if err := rc.tryGet(id); err != nil {
			return err
		}
		return rc.fr.WriteRSTStream(id, http2.ErrCodeCancel)
	})
	rc.expectGoAway(http2.ErrCodeEnhanceYourCalm)
	expectCalm(t, rc)
	if n := started.Load(); n > 21 {
		t.Errorf("%d handlers started for a burst of 20 resets", n)
	}
}

// Handlers that ignore cancellation still count against the stream limit,
// so resets cannot pile up goroutines; a long queue is an attack.
func TestRapidResetBoundsHandlers(t *testing.T) {
	var running, peak atomic.Int32
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := running.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		<-release
		running.Add(-1)
	})
	rc := newRawClient(t, Config{MaxConcurrentStreams: 4}, h, false)
	defer close(release)
	rc.handshake()
	rc.spam(100, func(i int) error {
		id := uint32(2*i + 1)
		if err := rc.tryGet(id); err != nil {
			return err
		}
		return rc.fr.WriteRSTStream(id, http2.ErrCodeCancel)
	})
	rc.expectGoAway(http2.ErrCodeEnhanceYourCalm)
	if p := peak.Load(); p > 4 {
		t.Errorf("%d handlers ran at once, limit 4", p)
	}
}

// MadeYouReset (CVE-2025-8671): frames that make us reset streams cost
// the same tokens as the client's own resets.
func TestMadeYouReset(t *testing.T) {
	rc := newRawClient(t, Config{ResetBurst: 20, ResetRate: 1e-9}, waitCtx(nil), false)
	rc.handshake()
	rc.spam(200, func(i int) error {
		id := uint32(2*i + 1)
		if err := rc.tryGet(id); err != nil { // END_STREAM: half-closed (remote)
			return err
		}
		return rc.fr.WriteData(id, false, []byte("x")) // -> STREAM_CLOSED reset
	})
	rc.expectGoAway(http2.ErrCodeEnhanceYourCalm)
	expectCalm(t, rc)
}

// CONTINUATION flood (CVE-2023-45288): reading stops at the header list
// limit instead of buffering an endless header block.
func TestContinuationFlood(t *testing.T) {
	rc := newRawClient(t, Config{MaxHeaderListSize: 16 << 10}, waitCtx(nil), true)
	rc.handshake()
	field := func() []byte {
		var b bytes.Buffer
		e := hpack.NewEncoder(&b)
		_ = e.WriteField(hpack.HeaderField{Name: "x-junk", Value: strings.Repeat("j", 1000), Sensitive: true})
		return b.Bytes()
	}()
	var written atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		if rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1,
			BlockFragment: rc.encode(":method", "GET", ":scheme", "https", ":authority", "a", ":path", "/")}) != nil {
			return
		}
		for i := 0; i < 10000; i++ {
			if rc.fr.WriteContinuation(1, false, field) != nil {
				return
			}
			written.Add(1)
		}
	}()
	ga := rc.expectGoAway(http2.ErrCodeProtocol)
	_ = ga
	rc.expectClosed()
	<-done
	if n := written.Load(); n >= 10000 {
		t.Fatalf("server read all %d CONTINUATION frames", n)
	}
	if code := connErrCode(rc.serveResult()); code != http2.ErrCodeProtocol {
		t.Fatalf("ServeConn code %v", code)
	}
}

// HPACK bomb: a small header block that references a large dynamic table
// entry many times decodes past the limit and is answered with 431.
func TestHPACKBomb(t *testing.T) {
	rc := newRawClient(t, Config{MaxHeaderListSize: 16 << 10}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), false)
	rc.handshake()
	// Stream 1 puts a 4000-byte field in the dynamic table (index 62).
	rc.get(1, "/", "x-bomb", strings.Repeat("b", 4000))
	if r := rc.readResponse(1); r.status != 200 {
		t.Fatalf("stream 1: %+v", r)
	}
	block := rc.encode(":method", "GET", ":scheme", "https", ":authority", "example.com", ":path", "/")
	block = append(block, bytes.Repeat([]byte{0x80 | 62}, 100)...) // 100 x 4 KB from 100 bytes
	rc.must(rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block, EndStream: true, EndHeaders: true}))
	if r := rc.readResponse(3); r.status != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("bomb answered with %d rst=%v", r.status, r.rst)
	}
	// The HPACK state is intact: the connection goes on.
	rc.get(5, "/")
	if r := rc.readResponse(5); r.status != 200 {
		t.Fatalf("after bomb: %+v", r)
	}
}

// floodControl makes the server queue control replies while the client
// does not read (net.Pipe): past MaxQueuedControlFrames it gives up.
func floodControl(t *testing.T, send func(rc *rawClient) error) {
	rc := newRawClient(t, Config{MaxQueuedControlFrames: 50}, waitCtx(nil), true)
	rc.handshake()
	rc.spam(100000, func(int) error { return send(rc) })
	expectCalm(t, rc)
}

func TestSettingsFlood(t *testing.T) {
	floodControl(t, func(rc *rawClient) error { return rc.fr.WriteSettings() })
}

func TestPingFlood(t *testing.T) {
	floodControl(t, func(rc *rawClient) error { return rc.fr.WritePing(false, [8]byte{7}) })
}

func TestEmptyDataFlood(t *testing.T) {
	rc := newRawClient(t, Config{}, waitCtx(nil), false)
	rc.handshake()
	rc.headers(1, false, ":method", "POST", ":scheme", "https", ":authority", "a", ":path", "/")
	rc.spam(100000, func(int) error { return rc.fr.WriteData(1, false, nil) })
	rc.expectGoAway(http2.ErrCodeEnhanceYourCalm)
	expectCalm(t, rc)
}

func TestWindowUpdateFlood(t *testing.T) {
	rc := newRawClient(t, Config{}, waitCtx(nil), false)
	rc.handshake()
	rc.spam(100000, func(int) error { return rc.fr.WriteWindowUpdate(0, 1) })
	rc.expectGoAway(http2.ErrCodeEnhanceYourCalm)
	expectCalm(t, rc)
}

// A client that keeps the window at zero holds at most StreamSendBuffer
// of ours: the handler's Write waits, then fails after WriteTimeout and
// the stream is reset.
func TestZeroWindowWriteTimeout(t *testing.T) {
	werr := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		n, err := w.Write(make([]byte, 256<<10))
		if n > 64<<10 {
			t.Errorf("%d bytes buffered for a zero window", n)
		}
		werr <- err
	})
	rc := newRawClient(t, Config{WriteTimeout: 200 * time.Millisecond}, h, false)
	rc.handshake(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	rc.get(1, "/")
	start := time.Now()
	rc.expectReset(1, http2.ErrCodeCancel)
	err := <-werr
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Write returned %v", err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("reset after %v, before the write timeout", d)
	}
}

func TestIdleTimeout(t *testing.T) {
	rc := newRawClient(t, Config{IdleTimeout: 100 * time.Millisecond}, waitCtx(nil), false)
	rc.handshake()
	ga := rc.expectGoAway(http2.ErrCodeNo)
	if ga.LastStreamID != 0 {
		t.Errorf("GOAWAY last stream %d", ga.LastStreamID)
	}
	rc.expectClosed()
	if err := rc.serveResult(); err != nil {
		t.Fatalf("ServeConn: %v", err)
	}
}

// Graceful drain (RFC 9113 §6.8): GOAWAY 2^31-1, PING, GOAWAY last id;
// the open stream completes, later streams are ignored, then the
// connection closes and Shutdown returns.
func TestGoAwayDrain(t *testing.T) {
	release, started := make(chan struct{}), make(chan struct{}, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			<-release
		}
		_, _ = w.Write([]byte("done"))
	})
	rc := newRawClient(t, Config{}, h, false)
	rc.handshake()
	rc.get(1, "/slow")
	<-started
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shut <- rc.srv.Shutdown(ctx)
	}()
	if ga := rc.expectGoAway(http2.ErrCodeNo); ga.LastStreamID != 1<<31-1 {
		t.Fatalf("first GOAWAY names %d", ga.LastStreamID)
	}
	f := rc.readUntil(func(f http2.Frame) bool { p, ok := f.(*http2.PingFrame); return ok && !p.IsAck() })
	rc.must(rc.fr.WritePing(true, f.(*http2.PingFrame).Data))
	if ga := rc.expectGoAway(http2.ErrCodeNo); ga.LastStreamID != 1 {
		t.Fatalf("final GOAWAY names %d", ga.LastStreamID)
	}
	rc.get(3, "/") // above the last stream id: ignored
	close(release)
	if r := rc.readResponse(1); string(r.body) != "done" {
		t.Fatalf("stream 1: %+v", r)
	}
	for {
		f, err := rc.readFrame()
		if err != nil {
			break
		}
		if f.Header().StreamID == 3 {
			t.Fatalf("stream 3 was processed after GOAWAY: %v", f)
		}
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := rc.serveResult(); err != nil {
		t.Fatalf("ServeConn: %v", err)
	}
}

// A busy stream does not starve the others: the writer takes one frame
// per stream in turn.
func TestFairScheduling(t *testing.T) {
	big := make([]byte, 16<<10)
	// The big stream holds its bulk until the small request is being
	// served, so both have data queued at once whatever the machine's
	// load: only the scheduler decides who goes first then.
	smallStarted := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			_, _ = w.Write(big)
			w.(http.Flusher).Flush()
			select {
			case <-smallStarted:
			case <-time.After(10 * time.Second):
				return
			}
			for i := 0; i < 512; i++ { // 8 MiB
				if _, err := w.Write(big); err != nil {
					return
				}
			}
			return
		}
		close(smallStarted)
		_, _ = w.Write([]byte("small"))
	})
	rc := newRawClient(t, Config{}, h, false)
	rc.handshake(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	rc.must(rc.fr.WriteWindowUpdate(0, 1<<31-1-65535))
	rc.get(1, "/big")
	rc.readUntil(func(f http2.Frame) bool { _, ok := f.(*http2.DataFrame); return ok })
	rc.get(3, "/small")
	for {
		f, err := rc.readFrame()
		if err != nil {
			t.Fatal(err)
		}
		if d, ok := f.(*http2.DataFrame); ok && d.StreamEnded() {
			if d.StreamID == 1 {
				t.Fatal("the big stream finished before the small one got through")
			}
			return
		}
	}
}
