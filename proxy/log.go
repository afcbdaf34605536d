package proxy

import (
	"errors"
	"net/http"
	"time"

	"github.com/rs/zerolog"
)

// access writes the one log line each request or tunnel gets: who, what,
// the outcome, bytes each way and how long it took. Credentials are never
// logged.
// extra are further key/value pairs for the line.
func (s *Server) access(r *http.Request, kind, target string, status int, up, down int64, start time.Time, err error, extra ...string) {
	level := zerolog.InfoLevel
	if status >= 500 {
		level = zerolog.WarnLevel
	}
	ev := s.log.WithLevel(level).
		Str("client", r.RemoteAddr).
		Str("proto", r.Proto).
		Str("kind", kind).
		Str("method", r.Method).
		Str("target", target).
		Int("status", status).
		Int64("up", up).
		Int64("down", down).
		Dur("duration_ms", time.Since(start))
	if user, _ := r.Context().Value(userKey{}).(string); user != "" {
		ev = ev.Str("user", user)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		ev = ev.Str(extra[i], extra[i+1])
	}
	if err != nil {
		ev = ev.AnErr("error", err)
	}
	ev.Msg("access")

	m := s.metrics
	m.durations.WithLabelValues(kind).Observe(time.Since(start).Seconds())
	m.bytes.WithLabelValues("up").Add(float64(up))
	m.bytes.WithLabelValues("down").Add(float64(down))
	var pe *Error
	if errors.As(err, &pe) && pe.Status < 500 {
		m.denials.WithLabelValues(pe.Type).Inc()
	}
	if kind == "tunnel" || kind == "websocket" {
		m.tunnels.WithLabelValues(outcome(err)).Inc()
	}
}
