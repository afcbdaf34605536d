package integration

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// A raw HTTP/2 client: a Framer and an HPACK encoder over TLS (ALPN h2).
// Well-behaved clients (x/net's Transport) refuse to send what the attack
// and smuggling tests need: malformed fields, floods, resets in bulk.

type rawH2 struct {
	conn     *tls.Conn
	fr       *http2.Framer
	henc     *hpack.Encoder
	hbuf     bytes.Buffer
	settings map[http2.SettingID]uint32 // the server's first SETTINGS
	ended    atomic.Bool                // read saw GOAWAY or the end: floods stop
}

// dialRawH2 connects, sends the preface and an empty SETTINGS, and waits
// for the server's SETTINGS, which it acknowledges (RFC 9113 §3.4, §6.5.3).
func dialRawH2(t testing.TB, p *Proxy) *rawH2 {
	t.Helper()
	c := dialTLSFrom(t, p, "", "h2")
	if got := c.ConnectionState().NegotiatedProtocol; got != "h2" {
		t.Fatalf("ALPN = %q, want h2", got)
	}
	r := &rawH2{conn: c, fr: http2.NewFramer(c, c), settings: map[http2.SettingID]uint32{}}
	r.henc = hpack.NewEncoder(&r.hbuf)
	r.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	r.fr.MaxHeaderListSize = 1 << 20
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	if err := r.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the server's SETTINGS: %v", err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			_ = sf.ForeachSetting(func(s http2.Setting) error { r.settings[s.ID] = s.Val; return nil })
			break
		}
	}
	if err := r.fr.WriteSettingsAck(); err != nil {
		t.Fatal(err)
	}
	return r
}

// block HPACK-encodes fields given as name, value pairs.
func (r *rawH2) block(pairs ...string) []byte {
	r.hbuf.Reset()
	for i := 0; i+1 < len(pairs); i += 2 {
		_ = r.henc.WriteField(hpack.HeaderField{Name: pairs[i], Value: pairs[i+1]})
	}
	return bytes.Clone(r.hbuf.Bytes())
}

// request sends one complete header block (no body) on stream id.
func (r *rawH2) request(t testing.TB, id uint32, endStream bool, pairs ...string) {
	t.Helper()
	if err := r.writeBlock(id, endStream, r.block(pairs...)); err != nil {
		t.Fatalf("writing HEADERS on stream %d: %v", id, err)
	}
}

// writeBlock sends a header block as HEADERS and CONTINUATION frames of
// the default maximum frame size (RFC 9113 §4.2, §6.10).
func (r *rawH2) writeBlock(id uint32, endStream bool, blk []byte) error {
	const max = 16384
	first := blk[:min(len(blk), max)]
	err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndHeaders: len(blk) <= max, EndStream: endStream})
	for rest := blk[len(first):]; err == nil && len(rest) > 0; rest = rest[min(len(rest), max):] {
		err = r.fr.WriteContinuation(id, len(rest) <= max, rest[:min(len(rest), max)])
	}
	return err
}

// connectFields are the pseudo-header fields of a CONNECT (RFC 9113 §8.5).
func connectFields(authority string, extra ...string) []string {
	return append([]string{":method", "CONNECT", ":authority", authority}, extra...)
}

// getFields are those of a GET for an http:// URL through the proxy, the
// way Chrome sends it (RFC 9113 §8.3.1).
func getFields(authority, path string, extra ...string) []string {
	return append([]string{":method", "GET", ":scheme", "http", ":authority", authority, ":path", path}, extra...)
}

// h2Outcome is what the server did on a raw connection.
type h2Outcome struct {
	status   map[uint32]string        // :status of response HEADERS, by stream
	rst      map[uint32]http2.ErrCode // RST_STREAM codes, by stream
	goAway   bool
	code     http2.ErrCode // the GOAWAY's code
	debug    string        // its debug data
	closed   bool          // the connection ended (EOF or reset)
	readErr  error         // why reading stopped, when not GOAWAY/EOF
	pingAcks int
	setAcks  int
}

func (o *h2Outcome) String() string {
	var b strings.Builder
	if o.goAway {
		fmt.Fprintf(&b, "GOAWAY %v %q; ", o.code, o.debug)
	}
	if o.closed {
		b.WriteString("connection closed; ")
	}
	if o.readErr != nil {
		fmt.Fprintf(&b, "read error %v; ", o.readErr)
	}
	codes := map[http2.ErrCode]int{}
	for _, c := range o.rst {
		codes[c]++
	}
	statuses := map[string]int{}
	for _, s := range o.status {
		statuses[s]++
	}
	fmt.Fprintf(&b, "responses %v, RST_STREAM %v, PING acks %d, SETTINGS acks %d", sortedCounts(statuses), sortedCounts(codes), o.pingAcks, o.setAcks)
	return b.String()
}

func sortedCounts[K comparable](m map[K]int) string {
	var parts []string
	for k, n := range m {
		parts = append(parts, fmt.Sprintf("%v×%d", k, n))
	}
	sort.Strings(parts)
	return "[" + strings.Join(parts, " ") + "]"
}

// read collects frames until done says the outcome is complete, the
// connection ends (GOAWAY is followed by a close, which is waited for),
// or the deadline passes.
func (r *rawH2) read(deadline time.Time, done func(*h2Outcome) bool) *h2Outcome {
	o := &h2Outcome{status: map[uint32]string{}, rst: map[uint32]http2.ErrCode{}}
	_ = r.conn.SetReadDeadline(deadline)
	for !done(o) {
		f, err := r.fr.ReadFrame()
		if err != nil {
			r.ended.Store(true)
			if errors.Is(err, io.EOF) || isConnReset(err) {
				o.closed = true
			} else if !o.goAway {
				o.readErr = err
			}
			return o
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			o.status[f.StreamID] = f.PseudoValue("status")
		case *http2.RSTStreamFrame:
			o.rst[f.StreamID] = f.ErrCode
		case *http2.GoAwayFrame:
			o.goAway, o.code, o.debug = true, f.ErrCode, string(f.DebugData())
			r.ended.Store(true)
		case *http2.PingFrame:
			if f.IsAck() {
				o.pingAcks++
			}
		case *http2.SettingsFrame:
			if f.IsAck() {
				o.setAcks++
			}
		}
	}
	return o
}

// streamsAnswered is a done func for read: every stream in ids got a
// response head or a reset, or the connection went away.
func streamsAnswered(ids ...uint32) func(*h2Outcome) bool {
	return func(o *h2Outcome) bool {
		if o.goAway {
			return false // wait for the close that follows
		}
		for _, id := range ids {
			if _, ok := o.status[id]; !ok {
				if _, ok := o.rst[id]; !ok {
					return false
				}
			}
		}
		return true
	}
}

// untilClosed is a done func for read that waits for the end.
func untilClosed(*h2Outcome) bool { return false }

// answer sends one request on stream id and waits for its outcome.
func (r *rawH2) answer(t testing.TB, id uint32, pairs ...string) *h2Outcome {
	t.Helper()
	r.request(t, id, true, pairs...)
	return r.read(time.Now().Add(ioTimeout), streamsAnswered(id))
}

// alive reports whether the connection still answers a PING: after an
// attack that it survived, it must still work.
func (r *rawH2) alive(t testing.TB) bool {
	t.Helper()
	_ = r.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := r.fr.WritePing(false, [8]byte{'a', 'l', 'i', 'v', 'e'}); err != nil {
		return false
	}
	o := r.read(time.Now().Add(5*time.Second), func(o *h2Outcome) bool { return o.pingAcks > 0 })
	return o.pingAcks > 0
}

// frameBatch renders frames into one buffer, so floods go out in large
// writes instead of one TLS record per 9-byte frame.
func frameBatch(n int, write func(fr *http2.Framer, i int)) []byte {
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	for i := range n {
		write(fr, i)
	}
	return buf.Bytes()
}

// floodResult says how a flood ended on the sending side.
type floodResult struct {
	batches  int
	bytes    int64
	writeErr error // nil when every batch went out
	elapsed  time.Duration
}

// flood writes batches made by next (nil ends it) until they run out, a
// write fails (the server closed the connection, or stopped reading for
// longer than the write deadline), a concurrent read saw the connection
// end, or d passes.
func (r *rawH2) flood(d time.Duration, next func(i int) []byte) floodResult {
	start := time.Now()
	var res floodResult
	_ = r.conn.SetWriteDeadline(start.Add(d))
	for i := 0; time.Since(start) < d && !r.ended.Load(); i++ {
		b := next(i)
		if b == nil {
			break
		}
		n, err := r.conn.Write(b)
		res.bytes += int64(n)
		if err != nil {
			res.writeErr = err
			break
		}
		res.batches++
	}
	res.elapsed = time.Since(start)
	return res
}

// isConnReset reports the ways a peer's abrupt close shows up.
func isConnReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed)
}
