package proxy

import (
	"net/http"
	"time"

	"github.com/rs/zerolog"
)

// access writes the one log line each request or tunnel gets: who, what,
// the outcome, bytes each way and how long it took. Credentials are never
// logged.
func (s *Server) access(r *http.Request, kind, target string, status int, up, down int64, start time.Time, err error) {
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
	if err != nil {
		ev = ev.AnErr("error", err)
	}
	ev.Msg("access")
}
