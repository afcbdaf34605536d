package h2

import (
	"log/slog"
	"net/http"
	"time"
)

// Config holds the HTTP/2 settings of the front end. The zero value is
// usable; every field documents its default.
type Config struct {
	// MaxConcurrentStreams bounds the streams (and so the tunnels) one
	// client connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS,
	// RFC 9113 §6.5.2). Streams above it are refused with REFUSED_STREAM.
	// Default 1000.
	MaxConcurrentStreams int

	// MaxHeaderListSize bounds the decoded size of one request's header
	// list (SETTINGS_MAX_HEADER_LIST_SIZE, counted as in RFC 9113 §6.5.2).
	// A larger request is answered with 431; a header block far beyond it
	// closes the connection (CONTINUATION flood, CVE-2023-45288).
	// Default 64 KiB.
	MaxHeaderListSize int

	// MaxReadFrameSize is the SETTINGS_MAX_FRAME_SIZE we advertise: the
	// largest frame payload a client may send. Between 16 KiB and 16 MiB-1.
	// Default 16 KiB + 261, the largest TLS 1.3 record with its header
	// (RFC 8446 §5.2): a client that writes one tunnelled TLS record at a
	// time then sends it as one DATA frame, not a full 16 KiB frame and a
	// small one, which cost the proxy a third of its TLS records, reads
	// and frames on uploads. Frames above what we advertise are refused
	// (h2spec §4.2; its oversized HEADERS frame, about 17.5 KB, stays above
	// this default, so a larger value fails h2spec 4.2/3).
	MaxReadFrameSize int

	// StreamWindow is the receive window of each stream
	// (SETTINGS_INITIAL_WINDOW_SIZE) and so the most request bytes buffered
	// per stream. A window near the bandwidth-delay product lets one
	// tunnel run at link speed; beyond that, a deeper one lets a tunnel
	// whose target reads slower than the client sends keep a backlog, so
	// that the tunnel's writer to the target rarely runs dry and waits
	// (measured: one tunnel's upload 10-15 % faster, at 13 % less CPU per
	// byte, with 4 MiB than with 1 MiB; 16 MiB with a 32 MiB ConnWindow
	// cost it about 4 % less CPU per byte again in paired runs, but would
	// let a client make each connection hold four times the memory). Only
	// data waiting for its target takes memory; ConnWindow bounds the sum
	// per connection. At least 64 KiB. Default 4 MiB.
	StreamWindow int

	// ConnWindow is the connection-level receive window and so the most
	// request bytes buffered per connection. At least StreamWindow.
	// Default 8 MiB.
	ConnWindow int

	// StreamSendBuffer bounds the response or tunnel bytes buffered per
	// stream, waiting for the writer or for flow-control window; a Write
	// beyond it waits (at most WriteTimeout). Buffering lets the handler
	// produce the next chunk while the previous one is being encrypted and
	// sent. An idle stream holds none of it. At least 16 KiB. Default 64 KiB.
	StreamSendBuffer int

	// IdleTimeout closes a connection (GOAWAY NO_ERROR) that had no open
	// stream for this long. Default 2 minutes; negative disables it.
	IdleTimeout time.Duration

	// WriteTimeout bounds how long one write of a stream may wait for the
	// client to open flow-control window (a reader stuck at a zero window
	// gets its stream reset), and how long one write to the connection may
	// take (a client that stops reading gets its connection closed).
	// Default 30 seconds; negative disables it.
	WriteTimeout time.Duration

	// MaxQueuedControlFrames bounds the control frames (SETTINGS and PING
	// acknowledgements, RST_STREAM, WINDOW_UPDATE) waiting to be written.
	// A client that provokes more than this without reading is flooding us:
	// the connection is closed with ENHANCE_YOUR_CALM. Default 10000.
	MaxQueuedControlFrames int

	// ResetBurst and ResetRate bound the stream resets a client may cause,
	// by RST_STREAM (Rapid Reset, CVE-2023-44487) or by provoking stream
	// errors (MadeYouReset, CVE-2025-8671): a token bucket of ResetBurst
	// tokens refilled at ResetRate per second. Past it the connection is
	// closed with GOAWAY ENHANCE_YOUR_CALM. Defaults 1000 and 100/s.
	ResetBurst int
	ResetRate  float64

	// DisableConnectProtocol stops advertising
	// SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441 §3); extended CONNECT
	// requests are then malformed. Default false: advertised.
	DisableConnectProtocol bool

	// Reject answers the requests the engine refuses at the HTTP level
	// instead of passing them to the handler: status 400 for an :authority
	// or :path that is not a valid URI part (a CONNECT authority must be
	// host:port), 431 for a header list over MaxHeaderListSize. It runs on
	// the stream's goroutine like a handler; r.Host holds :authority as
	// received and r.URL is never nil. A proxy sets it to add Proxy-Status
	// (RFC 9209) and its access log line. Default: a short text/plain reply.
	Reject func(w http.ResponseWriter, r *http.Request, status int)

	// Logger receives handler panics and connection errors worth a look.
	// Default slog.Default().
	Logger *slog.Logger
}

const (
	minWindow        = 65535
	maxWindow        = 1<<31 - 1
	minFrameSize     = 1 << 14
	maxFrameSizeWire = 1<<24 - 1
	tlsRecordMax     = 5 + 256 // header and expansion of a TLS 1.3 record beyond 2^14 (RFC 8446 §5.2)
)

// withDefaults returns cfg with every zero field set to its default and
// every value clamped into its legal range.
func (cfg Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.MaxConcurrentStreams, 1000)
	def(&cfg.MaxHeaderListSize, 64<<10)
	def(&cfg.MaxReadFrameSize, minFrameSize+tlsRecordMax)
	def(&cfg.StreamWindow, 4<<20)
	def(&cfg.ConnWindow, 8<<20)
	def(&cfg.StreamSendBuffer, 64<<10)
	cfg.StreamSendBuffer = max(cfg.StreamSendBuffer, 16<<10)
	def(&cfg.MaxQueuedControlFrames, 10000)
	def(&cfg.ResetBurst, 1000)
	if cfg.ResetRate <= 0 {
		cfg.ResetRate = 100
	}
	cfg.MaxReadFrameSize = clamp(cfg.MaxReadFrameSize, minFrameSize, maxFrameSizeWire)
	cfg.StreamWindow = clamp(cfg.StreamWindow, minWindow, maxWindow)
	cfg.ConnWindow = clamp(cfg.ConnWindow, cfg.StreamWindow, maxWindow)
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 2 * time.Minute
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return cfg
}

func clamp(v, lo, hi int) int {
	return max(lo, min(v, hi))
}
