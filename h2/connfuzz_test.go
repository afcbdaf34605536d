package h2

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// FuzzServeConn feeds the engine whatever a client may send after its
// preface. Whatever the bytes, the engine must not hang (ServeConn
// returns once the client has sent them and gone), and every goroutine it
// started, handlers included, must end, none of them with a panic (which
// the engine would recover and log). The limits are small so that the
// fuzzer reaches the protections (stream limit, header-list limit, reset
// budget, flow control) with short inputs.
func FuzzServeConn(f *testing.F) {
	for _, seed := range connSeeds(f) {
		f.Add(seed)
	}
	cfg := Config{
		MaxConcurrentStreams:   4,
		MaxHeaderListSize:      4 << 10,
		StreamWindow:           minWindow,
		ConnWindow:             minWindow,
		StreamSendBuffer:       16 << 10,
		WriteTimeout:           time.Second,
		MaxQueuedControlFrames: 64,
		ResetBurst:             8,
		ResetRate:              1,
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var logged lockedBuffer
		cfg := cfg
		cfg.Logger = slog.New(slog.NewTextHandler(&logged, nil))
		before := runtime.NumGoroutine()
		h := http.HandlerFunc(fuzzHandler)
		cc, sc := net.Pipe()
		served := make(chan error, 1)
		go func() { served <- NewServer(cfg).ServeConn(sc, h) }()
		settled := make(chan struct{})
		go fuzzClientReader(cc, settled)
		_, _ = cc.Write([]byte(http2.ClientPreface))
		_, _ = cc.Write(in)
		if wholeFrames(in) {
			// Let the engine answer before the client goes: once it
			// acknowledges this PING it has processed every frame before
			// it, and the handlers it started run against a live
			// connection.
			var ping bytes.Buffer
			_ = http2.NewFramer(&ping, nil).WritePing(false, fuzzPing)
			_, _ = cc.Write(ping.Bytes())
			select {
			case <-settled:
			case <-time.After(2 * time.Second):
			}
		}
		_ = cc.Close()
		select {
		case <-served:
		case <-time.After(10 * time.Second):
			t.Fatal("ServeConn did not return after the client closed")
		}
		// Handlers (some perhaps not yet started when ServeConn returned)
		// see the connection's end through their request's context and
		// their stream's errors; give them a moment to return. Counting
		// goroutines also catches any other the connection left behind.
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				var stacks strings.Builder
				_ = pprof.Lookup("goroutine").WriteTo(&stacks, 1)
				t.Fatalf("goroutines left after the connection ended:\n%s", stacks.String())
			}
			time.Sleep(time.Millisecond)
		}
		if s := logged.String(); strings.Contains(s, "panic") {
			t.Fatalf("the engine logged a panic:\n%s", s)
		}
	})
}

var fuzzPing = [8]byte{'f', 'u', 'z', 'z', 'd', 'o', 'n', 'e'}

// fuzzClientReader reads what the engine sends until the connection
// ends. It closes settled when the engine acknowledges fuzzPing or stops
// being readable as frames.
func fuzzClientReader(cc net.Conn, settled chan struct{}) {
	fr := http2.NewFramer(nil, cc)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			break
		}
		if p, ok := f.(*http2.PingFrame); ok && p.IsAck() && p.Data == fuzzPing {
			break
		}
	}
	close(settled)
	_, _ = io.Copy(io.Discard, cc)
}

// wholeFrames reports whether in is a sequence of complete frames, so
// that a frame written after it is read as one.
func wholeFrames(in []byte) bool {
	for len(in) > 0 {
		if len(in) < frameHeaderLen {
			return false
		}
		n := frameHeaderLen + (int(in[0])<<16 | int(in[1])<<8 | int(in[2]))
		if len(in) < n {
			return false
		}
		in = in[n:]
	}
	return true
}

// lockedBuffer is a bytes.Buffer that goroutines may write concurrently.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// fuzzHandler does what the proxy's handlers do with a stream: a CONNECT
// becomes a tunnel that echoes (echoHandler); anything else has its body
// read and gets a streamed response with a trailer.
func fuzzHandler(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		echoHandler(w, r)
		return
	}
	n, _ := io.Copy(io.Discard, r.Body)
	w.Header().Set("Trailer", "X-Read")
	w.WriteHeader(http.StatusOK)
	chunk := bytes.Repeat([]byte{'x'}, 8<<10)
	for range 3 {
		if _, err := w.Write(chunk); err != nil {
			return
		}
		w.(http.Flusher).Flush()
	}
	w.Header().Set("X-Read", strconv.FormatInt(n, 10))
}

// connSeeds are well-formed client conversations for the fuzzer to
// mutate: requests with and without bodies, tunnels (classic and RFC 8441
// extended CONNECT), flow control, resets, pings, priorities, a header
// block split over CONTINUATION, and a goodbye.
func connSeeds(f *testing.F) [][]byte {
	var seeds [][]byte
	build := func(fn func(fr *http2.Framer, hdr func(kv ...string) []byte)) {
		var buf, hb bytes.Buffer
		fr := http2.NewFramer(&buf, nil)
		fr.AllowIllegalWrites = true
		enc := hpack.NewEncoder(&hb)
		hdr := func(kv ...string) []byte {
			hb.Reset()
			for i := 0; i+1 < len(kv); i += 2 {
				_ = enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
			}
			return bytes.Clone(hb.Bytes())
		}
		if err := fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20}); err != nil {
			f.Fatal(err)
		}
		fn(fr, hdr)
		seeds = append(seeds, buf.Bytes())
	}
	get := []string{":method", "GET", ":scheme", "https", ":authority", "a.test", ":path", "/"}
	post := []string{":method", "POST", ":scheme", "http", ":authority", "a.test", ":path", "/up", "content-length", "5"}
	connect := []string{":method", "CONNECT", ":authority", "a.test:443"}
	ws := []string{":method", "CONNECT", ":protocol", "websocket", ":scheme", "http", ":authority", "a.test:80", ":path", "/chat", "sec-websocket-version", "13"}

	build(func(fr *http2.Framer, hdr func(kv ...string) []byte) {
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdr(get...), EndStream: true, EndHeaders: true})
		_ = fr.WritePing(false, [8]byte{1})
		_ = fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	})
	build(func(fr *http2.Framer, hdr func(kv ...string) []byte) {
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdr(post...), EndHeaders: true})
		_ = fr.WriteData(1, true, []byte("hello"))
		_ = fr.WriteWindowUpdate(0, 1<<16)
		_ = fr.WriteWindowUpdate(1, 1<<16)
	})
	build(func(fr *http2.Framer, hdr func(kv ...string) []byte) {
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdr(connect...), EndHeaders: true})
		_ = fr.WriteData(1, false, []byte("ping"))
		_ = fr.WriteData(1, true, nil)
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: hdr(ws...), EndHeaders: true})
		_ = fr.WriteData(3, false, []byte{0x81, 0x02, 'h', 'i'})
		_ = fr.WriteRSTStream(3, http2.ErrCodeCancel)
	})
	build(func(fr *http2.Framer, hdr func(kv ...string) []byte) {
		block := hdr(append(get, "x-long", string(bytes.Repeat([]byte{'v'}, 300)))...)
		_ = fr.WritePriority(1, http2.PriorityParam{StreamDep: 0, Weight: 15})
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:10], EndStream: true})
		_ = fr.WriteContinuation(1, true, block[10:])
		_ = fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 15})
		_ = fr.WriteSettingsAck()
	})
	build(func(fr *http2.Framer, hdr func(kv ...string) []byte) {
		for id := uint32(1); id <= 11; id += 2 {
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hdr(get...), EndStream: true, EndHeaders: true})
			_ = fr.WriteRSTStream(id, http2.ErrCodeCancel)
		}
	})
	return seeds
}
