package integration

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// HTTP/2 denial-of-service attacks, sent with the raw framer against the
// real binary. Each test asserts three things: how the proxy ended (or
// survived) the attacking connection, that its memory stayed bounded, and
// that the attack did not turn into unbounded connections to the CONNECT
// target; and that a well-behaved client is still served afterwards.

// attackStreams is the SETTINGS_MAX_CONCURRENT_STREAMS the attack tests run
// the proxy with.
const attackStreams = 100

// attackRig is a proxy with a counted echo target for the attack and a
// separate one for a well-behaved client.
type attackRig struct {
	p      *Proxy
	target *tcpTarget
	g      gauge
	normal *tcpTarget
	rss    *rssMonitor
}

func startAttackRig(t *testing.T, flags ...string) *attackRig {
	t.Helper()
	rig := &attackRig{}
	rig.target = startTarget(t, rig.g.track(echoConn))
	rig.normal = startTarget(t, echoConn)
	rig.p = StartProxy(t, append([]string{"--allow-private", "--max-concurrent-streams", strconv.Itoa(attackStreams)}, flags...)...)
	rig.serves(t, dialH2(t, rig.p)) // warm up, so the RSS baseline is a working proxy's
	rig.rss = watchRSS(t, rig.p)
	return rig
}

// serves asserts that a CONNECT tunnel on cc works end to end, quickly.
func (rig *attackRig) serves(t *testing.T, cc *http2.ClientConn) time.Duration {
	t.Helper()
	start := time.Now()
	s := mustH2Connect(t, testContext(t, ioTimeout), cc, rig.normal.Addr())
	echoOnce(t, s, "still served")
	s.closeWrite()
	return time.Since(start)
}

// finish checks what every attack test checks at the end.
func (rig *attackRig) finish(t *testing.T, what string, maxTargetConns int64) {
	t.Helper()
	rig.rss.check(t, what, 64)
	n, peak := rig.target.Accepted(), rig.g.peak.Load()
	t.Logf("%s: the CONNECT target accepted %d connections, at most %d at once", what, n, peak)
	if n > maxTargetConns {
		t.Errorf("%s: the target accepted %d connections, want at most %d", what, n, maxTargetConns)
	}
	if d := rig.serves(t, dialH2(t, rig.p)); d > 5*time.Second {
		t.Errorf("%s: a new client took %v to get a tunnel after the attack", what, d)
	}
}

// endedConnection asserts the proxy ended the attacking connection: a
// GOAWAY with one of the codes RFC 9113 §5.4.1 and §10.5 suggest for
// abuse, or a plain close.
func endedConnection(t *testing.T, what string, o *h2Outcome, fr floodResult) {
	t.Helper()
	t.Logf("%s: sent %d bytes in %v (write error: %v); server: %v", what, fr.bytes, fr.elapsed.Round(time.Millisecond), fr.writeErr, o)
	switch {
	case o.goAway && (o.code == http2.ErrCodeEnhanceYourCalm || o.code == http2.ErrCodeProtocol ||
		o.code == http2.ErrCodeFrameSize || o.code == http2.ErrCodeCompression):
	case !o.goAway && (o.closed || (fr.writeErr != nil && isConnReset(fr.writeErr))):
	default:
		t.Errorf("%s: the proxy did not end the connection (want GOAWAY ENHANCE_YOUR_CALM/PROTOCOL_ERROR or a close): %v", what, o)
	}
}

// floodWhileReading floods and reads concurrently (the server's answers
// must not back up and stall it), then waits up to settle for the end.
func (r *rawH2) floodWhileReading(d, settle time.Duration, next func(i int) []byte) (floodResult, *h2Outcome) {
	got := make(chan *h2Outcome, 1)
	go func() { got <- r.read(time.Now().Add(d+settle), untilClosed) }()
	fr := r.flood(d, next)
	_ = r.conn.SetReadDeadline(time.Now().Add(settle))
	return fr, <-got
}

// TestSecurityH2RapidReset: HEADERS immediately cancelled by RST_STREAM, by
// the thousand (CVE-2023-44487). The proxy must not keep starting work for
// streams that are gone: it ends the connection once the resets exceed
// any reasonable budget, never has more than about the stream limit of
// target connections open, and a client on another connection keeps
// getting tunnels throughout.
func TestSecurityH2RapidReset(t *testing.T) {
	rig := startAttackRig(t)
	normal := dialH2(t, rig.p)
	r := dialRawH2(t, rig.p)

	const pairs, perBatch = 10000, 200
	type attackResult struct {
		fr floodResult
		o  *h2Outcome
	}
	done := make(chan attackResult, 1)
	go func() {
		fr, o := r.floodWhileReading(10*time.Second, 3*time.Second, func(b int) []byte {
			if b*perBatch >= pairs {
				return nil
			}
			return frameBatch(perBatch, func(fr *http2.Framer, i int) {
				id := uint32(2*(b*perBatch+i) + 1)
				_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.block(connectFields(rig.target.Addr())...), EndHeaders: true})
				_ = fr.WriteRSTStream(id, http2.ErrCodeCancel)
			})
		})
		done <- attackResult{fr, o}
	}()

	// Meanwhile a well-behaved client keeps opening tunnels.
	var served int
	var slowest time.Duration
	var res attackResult
	for res.o == nil {
		d := rig.serves(t, normal)
		served++
		slowest = max(slowest, d)
		select {
		case res = <-done:
		default:
		}
	}
	t.Logf("rapid reset: the other client got %d tunnels during the attack, the slowest in %v", served, slowest)
	if slowest > 5*time.Second {
		t.Errorf("rapid reset: the well-behaved client waited %v for a tunnel", slowest)
	}
	// Ten thousand resets are far past any reasonable reset budget (the
	// native engine's default: a burst of 1000, then 100/s): the proxy must
	// end the connection rather than keep starting tunnels for streams
	// that are already gone.
	endedConnection(t, fmt.Sprintf("rapid reset (%d HEADERS+RST_STREAM pairs)", pairs), res.o, res.fr)
	if peak := rig.g.peak.Load(); peak > 2*attackStreams {
		t.Errorf("rapid reset: %d target connections open at once, want at most about the stream limit %d", peak, attackStreams)
	}
	rig.finish(t, "rapid reset", resetBudget)
}

// resetBudget bounds the tunnels a rapid-reset connection may get started
// before the proxy cuts it off: a reset burst of 1000 plus the streams
// open at once, with room to spare.
const resetBudget = 1500

// TestSecurityH2ContinuationFlood: a header block that never ends, sent as
// endless CONTINUATION frames of valid HPACK (CVE-2023-45288,
// CVE-2024-27316). The proxy must end the connection soon after the block
// passes the header list limit, rather than buffer or keep decoding it.
func TestSecurityH2ContinuationFlood(t *testing.T) {
	rig := startAttackRig(t)
	r := dialRawH2(t, rig.p)
	first := r.block(connectFields(rig.target.Addr())...)
	if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first}); err != nil {
		t.Fatal(err)
	}
	batch := frameBatch(16, func(fr *http2.Framer, _ int) { _ = fr.WriteContinuation(1, false, literalFields(16000)) })
	const maxBytes, mayRead = 64 << 20, 32 << 20
	fr, o := r.floodWhileReading(10*time.Second, 3*time.Second, func(i int) []byte {
		if i*len(batch) > maxBytes {
			return nil
		}
		return batch
	})
	endedConnection(t, "CONTINUATION flood", o, fr)
	// The header list limit is 64 KiB; the rest is what the kernel
	// buffers on both sides of a loopback connection hold.
	if fr.bytes > mayRead {
		t.Errorf("CONTINUATION flood: the proxy let the client send %d bytes of one header block before ending the connection", fr.bytes)
	}
	rig.finish(t, "CONTINUATION flood", 0)
}

// literalFields returns about n bytes of complete HPACK "literal without
// indexing, new name" fields (RFC 7541 §6.2.2), so any split of them is
// valid HPACK and the decoder's table is never touched.
func literalFields(n int) []byte {
	field := append([]byte{0x00, 5}, "x-pad"...)
	field = append(field, 100)
	field = append(field, bytes.Repeat([]byte{'a'}, 100)...)
	return bytes.Repeat(field, n/len(field))
}

// TestSecurityH2HPACKBomb: one 4 KiB dynamic-table entry referenced by a
// one-byte index tens of thousands of times (RFC 7541 §7.3): a few KiB on
// the wire decode to hundreds of MiB. The proxy must refuse the request
// (431, or a reset) without decoding it all into memory and without
// dialling the target.
func TestSecurityH2HPACKBomb(t *testing.T) {
	rig := startAttackRig(t)
	r := dialRawH2(t, rig.p)
	t.Logf("HPACK bomb: the proxy advertises SETTINGS_MAX_HEADER_LIST_SIZE %d", r.settings[http2.SettingMaxHeaderListSize])
	const streams, refs = 20, 64 << 10
	var ids []uint32
	for s := range streams {
		id := uint32(2*s + 1)
		ids = append(ids, id)
		// The new entry evicts everything else (4000+5+32 of 4096 octets),
		// so right after it is inserted it is dynamic index 62 (0xbe).
		value := strings.Repeat(string(rune('a'+s)), 4000)
		blk := append(r.block(append(connectFields(rig.target.Addr()), "x-bomb", value)...), bytes.Repeat([]byte{0xbe}, refs)...)
		if err := r.writeBlock(id, true, blk); err != nil {
			t.Logf("stream %d: writing the bomb: %v", id, err) // the proxy may have hung up already
		}
	}
	o := r.read(time.Now().Add(ioTimeout), streamsAnswered(ids...))
	t.Logf("HPACK bomb: %d streams, each %d references to a 4 KiB entry (%d MiB decoded): %v", streams, refs, refs*4/1024, o)
	for _, id := range ids {
		if st, ok := o.status[id]; ok && st != "431" && st != "400" {
			t.Errorf("HPACK bomb: stream %d answered %s, want 431 or a reset", id, st)
		}
	}
	if !o.goAway && !o.closed && len(o.status)+len(o.rst) < streams {
		t.Errorf("HPACK bomb: not every stream was refused: %v", o)
	}
	rig.finish(t, "HPACK bomb", 0)
}

// TestSecurityH2ControlFrameFloods: SETTINGS and PING frames each demand
// an acknowledgement (RFC 9113 §6.5.3, §6.7). A client that sends them by
// the million and never reads makes a naive server queue acknowledgements
// without bound (CVE-2019-9512, CVE-2019-9515); the proxy must close the
// connection instead.
func TestSecurityH2ControlFrameFloods(t *testing.T) {
	floods := []struct {
		name  string
		frame func(fr *http2.Framer, i int)
	}{
		{"SETTINGS", func(fr *http2.Framer, _ int) {
			_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65535})
		}},
		{"PING", func(fr *http2.Framer, i int) {
			_ = fr.WritePing(false, [8]byte{byte(i), byte(i >> 8), byte(i >> 16)})
		}},
	}
	for _, f := range floods {
		t.Run(f.name, func(t *testing.T) {
			rig := startAttackRig(t)
			r := dialRawH2(t, rig.p)
			batch := frameBatch(10000, f.frame)
			const maxBytes = 32 << 20
			fr := r.flood(15*time.Second, func(i int) []byte {
				if i*len(batch) > maxBytes {
					return nil
				}
				return batch
			})
			// Only now read what the proxy sent: acknowledgements up to
			// where it gave up, then its GOAWAY or the close.
			o := r.read(time.Now().Add(3*time.Second), untilClosed)
			endedConnection(t, f.name+" flood", o, fr)
			rig.finish(t, f.name+" flood", 0)
		})
	}
}

// TestSecurityH2StreamLimit: 300 CONNECT streams at once against a limit
// of 100 (SETTINGS_MAX_CONCURRENT_STREAMS, RFC 9113 §5.1.2). Exactly 100
// tunnels open; the other 200 are refused with REFUSED_STREAM, which tells
// the client nothing was done and a retry is safe (RFC 9113 §8.7); the
// target sees exactly 100 connections, and the connection stays usable.
func TestSecurityH2StreamLimit(t *testing.T) {
	rig := startAttackRig(t)
	r := dialRawH2(t, rig.p)
	if got := r.settings[http2.SettingMaxConcurrentStreams]; got != attackStreams {
		t.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS = %d, want %d", got, attackStreams)
	}
	const streams = 300
	var ids []uint32
	batch := frameBatch(streams, func(fr *http2.Framer, i int) {
		id := uint32(2*i + 1)
		ids = append(ids, id)
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.block(connectFields(rig.target.Addr())...), EndHeaders: true})
	})
	if _, err := r.conn.Write(batch); err != nil {
		t.Fatal(err)
	}
	o := r.read(time.Now().Add(ioTimeout), streamsAnswered(ids...))
	t.Logf("300 CONNECT streams: %v", o)
	ok, refused := 0, 0
	for _, id := range ids {
		switch {
		case o.status[id] == "200":
			ok++
		case o.rst[id] == http2.ErrCodeRefusedStream:
			refused++
		}
	}
	if ok != attackStreams || refused != streams-attackStreams {
		t.Errorf("300 CONNECT streams: %d tunnels and %d REFUSED_STREAM, want %d and %d (got %v)", ok, refused, attackStreams, streams-attackStreams, o)
	}
	if o.goAway || o.closed || !r.alive(t) {
		t.Errorf("300 CONNECT streams: the connection did not stay usable: %v", o)
	}
	// Every open tunnel reached the target once; nothing more did.
	deadline := time.Now().Add(ioTimeout)
	for rig.target.Accepted() < int64(ok) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	rig.finish(t, "300 CONNECT streams", attackStreams)
}
