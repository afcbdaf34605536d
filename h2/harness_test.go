package h2

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/h2proxy/h2proxy/tunnel"
)

// rawClient drives one server connection frame by frame.
type rawClient struct {
	t      testing.TB
	nc     net.Conn
	fr     *http2.Framer
	enc    *hpack.Encoder
	encBuf bytes.Buffer
	srv    *Server
	served chan error // ServeConn's result
	wmu    sync.Mutex // for tests that write from two goroutines
}

// newRawClient serves h with cfg on one side of a connection and returns
// the client side: a synchronous net.Pipe when pipe is set (a client that
// does not read blocks the server's writes at once), loopback TCP else.
func newRawClient(t testing.TB, cfg Config, h http.Handler, pipe bool) *rawClient {
	t.Helper()
	var cc, sc net.Conn
	if pipe {
		cc, sc = net.Pipe()
	} else {
		cc, sc = tcpPair(t)
	}
	return newRawClientOn(t, cfg, h, cc, sc)
}

// newRawTLSClient is newRawClient over TLS on loopback TCP, the server
// side over a BatchConn as the proxy's listener has it, so that the
// engine writes as it does in production (batches, DATA in place).
func newRawTLSClient(t testing.TB, cfg Config, h http.Handler) *rawClient {
	t.Helper()
	cc, sc := tcpPair(t)
	stc := tls.Server(tunnel.NewBatchConn(sc), &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}, NextProtos: []string{"h2"}})
	ctc := tls.Client(cc, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}) // loopback test cert
	errc := make(chan error, 1)
	go func() { errc <- stc.Handshake() }()
	if err := ctc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return newRawClientOn(t, cfg, h, ctc, stc)
}

// newRawClientOn serves h on sc and drives it from cc.
func newRawClientOn(t testing.TB, cfg Config, h http.Handler, cc, sc net.Conn) *rawClient {
	t.Helper()
	rc := &rawClient{t: t, nc: cc, srv: NewServer(cfg), served: make(chan error, 1)}
	rc.fr = http2.NewFramer(cc, cc)
	rc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	rc.fr.AllowIllegalWrites = true
	rc.enc = hpack.NewEncoder(&rc.encBuf)
	go func() { rc.served <- rc.srv.ServeConn(sc, h) }()
	t.Cleanup(func() {
		_ = cc.Close()
		select {
		case <-rc.served:
		case <-time.After(5 * time.Second):
			t.Error("ServeConn did not return after the client closed")
		}
	})
	return rc
}

func tcpPair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-ch
	if server == nil {
		t.Fatal("accept failed")
	}
	return client, server
}

// handshake sends the preface and SETTINGS and returns the server's
// SETTINGS, acknowledged.
func (rc *rawClient) handshake(settings ...http2.Setting) map[http2.SettingID]uint32 {
	rc.t.Helper()
	if _, err := io.WriteString(rc.nc, http2.ClientPreface); err != nil {
		rc.t.Fatal(err)
	}
	rc.must(rc.fr.WriteSettings(settings...))
	got := map[http2.SettingID]uint32{}
	f := rc.readUntil(func(f http2.Frame) bool {
		sf, ok := f.(*http2.SettingsFrame)
		return ok && !sf.IsAck()
	})
	_ = f.(*http2.SettingsFrame).ForeachSetting(func(s http2.Setting) error {
		got[s.ID] = s.Val
		return nil
	})
	rc.must(rc.fr.WriteSettingsAck())
	return got
}

func (rc *rawClient) must(err error) {
	rc.t.Helper()
	if err != nil {
		rc.t.Fatal(err)
	}
}

// readFrame reads the next frame within 5 s.
func (rc *rawClient) readFrame() (http2.Frame, error) {
	_ = rc.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	return rc.fr.ReadFrame()
}

// readUntil reads frames until match returns true; it fails the test on a
// read error.
func (rc *rawClient) readUntil(match func(http2.Frame) bool) http2.Frame {
	rc.t.Helper()
	for {
		f, err := rc.readFrame()
		if err != nil {
			rc.t.Fatalf("reading frames: %v", err)
		}
		if match(f) {
			return f
		}
	}
}

// encode HPACK-encodes pairs of name, value.
func (rc *rawClient) encode(kv ...string) []byte {
	rc.encBuf.Reset()
	for i := 0; i+1 < len(kv); i += 2 {
		_ = rc.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return append([]byte(nil), rc.encBuf.Bytes()...)
}

func (rc *rawClient) headers(id uint32, end bool, kv ...string) {
	rc.t.Helper()
	rc.must(rc.fr.WriteHeaders(http2.HeadersFrameParam{
		StreamID: id, BlockFragment: rc.encode(kv...), EndStream: end, EndHeaders: true,
	}))
}

// tryGet is get for goroutines other than the test's: it returns the
// write error instead of failing the test.
func (rc *rawClient) tryGet(id uint32) error {
	return rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, EndStream: true, EndHeaders: true,
		BlockFragment: rc.encode(":method", "GET", ":scheme", "https", ":authority", "example.com", ":path", "/")})
}

// spam runs send in a goroutine until it fails or n sends were made; the
// test waits for it at the end.
func (rc *rawClient) spam(n int, send func(i int) error) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < n; i++ {
			if send(i) != nil {
				return
			}
		}
	}()
	rc.t.Cleanup(func() {
		_ = rc.nc.Close()
		<-done
	})
}

// get sends a GET for path on stream id.
func (rc *rawClient) get(id uint32, path string, extra ...string) {
	rc.t.Helper()
	kv := append([]string{":method", "GET", ":scheme", "https", ":authority", "example.com", ":path", path}, extra...)
	rc.headers(id, true, kv...)
}

// response is what arrived on one stream.
type response struct {
	status   int
	header   http.Header
	body     []byte
	trailer  http.Header
	rst      *http2.ErrCode
	infos    []int // 1xx statuses
	ended    bool
	frameLog []string
}

// readResponse reads frames until stream id ends (END_STREAM or
// RST_STREAM). Frames of other streams are ignored.
func (rc *rawClient) readResponse(id uint32) *response {
	rc.t.Helper()
	r := &response{header: http.Header{}}
	for !r.ended && r.rst == nil {
		f, err := rc.readFrame()
		if err != nil {
			rc.t.Fatalf("stream %d: %v (so far: %+v)", id, err, r)
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok && ga.ErrCode != http2.ErrCodeNo {
			rc.t.Fatalf("stream %d: GOAWAY %v", id, ga.ErrCode)
		}
		if f.Header().StreamID != id {
			continue
		}
		rc.collect(r, f)
	}
	return r
}

// readResponses reads until every stream in ids ended or was reset.
func (rc *rawClient) readResponses(ids ...uint32) map[uint32]*response {
	rc.t.Helper()
	out := map[uint32]*response{}
	for _, id := range ids {
		out[id] = &response{header: http.Header{}}
	}
	pending := len(ids)
	for pending > 0 {
		f, err := rc.readFrame()
		if err != nil {
			rc.t.Fatalf("streams %v: %v", ids, err)
		}
		r := out[f.Header().StreamID]
		if r == nil || r.ended || r.rst != nil {
			continue
		}
		rc.collect(r, f)
		if r.ended || r.rst != nil {
			pending--
		}
	}
	return out
}

func (rc *rawClient) collect(r *response, f http2.Frame) {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		r.frameLog = append(r.frameLog, "HEADERS")
		if st := f.PseudoValue("status"); st != "" {
			code, _ := strconv.Atoi(st)
			if code < 200 {
				r.infos = append(r.infos, code)
				return
			}
			r.status = code
			for _, hf := range f.RegularFields() {
				r.header.Add(hf.Name, hf.Value)
			}
		} else {
			r.trailer = http.Header{}
			for _, hf := range f.RegularFields() {
				r.trailer.Add(hf.Name, hf.Value)
			}
		}
		r.ended = f.StreamEnded()
	case *http2.DataFrame:
		r.frameLog = append(r.frameLog, "DATA")
		r.body = append(r.body, f.Data()...)
		r.ended = f.StreamEnded()
		if n := len(f.Data()); n > 0 {
			rc.wmu.Lock()
			_ = rc.fr.WriteWindowUpdate(0, uint32(n))
			_ = rc.fr.WriteWindowUpdate(f.StreamID, uint32(n))
			rc.wmu.Unlock()
		}
	case *http2.RSTStreamFrame:
		r.frameLog = append(r.frameLog, "RST_STREAM")
		code := f.ErrCode
		r.rst = &code
	}
}

// expectReset reads until stream id is reset and checks the code.
func (rc *rawClient) expectReset(id uint32, want http2.ErrCode) {
	rc.t.Helper()
	r := rc.readResponse(id)
	if r.rst == nil {
		rc.t.Fatalf("stream %d: got status %d, want RST_STREAM %v", id, r.status, want)
	}
	if *r.rst != want {
		rc.t.Fatalf("stream %d: RST_STREAM %v, want %v", id, *r.rst, want)
	}
}

// expectGoAway reads until GOAWAY (skipping everything else) and checks
// its code; a closed connection before it fails the test.
func (rc *rawClient) expectGoAway(want http2.ErrCode) *http2.GoAwayFrame {
	rc.t.Helper()
	for {
		f, err := rc.readFrame()
		if err != nil {
			rc.t.Fatalf("waiting for GOAWAY %v: %v", want, err)
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			if ga.ErrCode != want {
				rc.t.Fatalf("GOAWAY %v, want %v", ga.ErrCode, want)
			}
			return ga
		}
	}
}

// expectClosed reads until the connection ends.
func (rc *rawClient) expectClosed() {
	rc.t.Helper()
	for {
		if _, err := rc.readFrame(); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe) || errors.Is(err, net.ErrClosed) ||
				isConnReset(err) {
				return
			}
			rc.t.Fatalf("want connection closed, got %v", err)
		}
	}
}

// serveResult waits for ServeConn's return value.
func (rc *rawClient) serveResult() error {
	rc.t.Helper()
	select {
	case err := <-rc.served:
		rc.served <- err // for Cleanup
		return err
	case <-time.After(5 * time.Second):
		rc.t.Fatal("ServeConn did not return")
		return nil
	}
}

// connErrCode returns the GOAWAY code of a ServeConn error, or -1.
func connErrCode(err error) http2.ErrCode {
	var ce *connError
	if errors.As(err, &ce) {
		return ce.code
	}
	return 0xffff
}
