package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"syscall"

	"github.com/h2proxy/h2proxy/h1"
)

// Error is a refusal or failure answered with an HTTP status and a
// Proxy-Status header (RFC 9209).
type Error struct {
	Status int    // HTTP status code sent to the client
	Type   string // RFC 9209 §2.3 proxy error type
	Detail string // human-readable, sent as the details parameter
	Err    error  // underlying cause, if any
}

func (e *Error) Error() string {
	s := fmt.Sprintf("%d %s", e.Status, e.Type)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// proxyStatus renders the Proxy-Status field value (RFC 9209 §2).
func (e *Error) proxyStatus(name string) string {
	v := name + "; error=" + e.Type
	if e.Detail != "" {
		v += "; details=" + strconv.Quote(e.Detail)
	}
	return v
}

func errBadRequest(detail string) *Error {
	return &Error{Status: http.StatusBadRequest, Type: "http_request_error", Detail: detail}
}

func errDenied(typ, detail string) *Error {
	return &Error{Status: http.StatusForbidden, Type: typ, Detail: detail}
}

// asError maps a dial or upstream error to the status a client should see.
func asError(err error) *Error {
	var pe *Error
	if errors.As(err, &pe) {
		return pe
	}
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr) && dnsErr.IsTimeout:
		return &Error{Status: http.StatusGatewayTimeout, Type: "dns_timeout", Detail: dnsErr.Name, Err: err}
	case errors.As(err, &dnsErr):
		return &Error{Status: http.StatusBadGateway, Type: "dns_error", Detail: dnsErr.Name + ": " + dnsErr.Err, Err: err}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), isTimeout(err):
		return &Error{Status: http.StatusGatewayTimeout, Type: "connection_timeout", Err: err}
	case errors.Is(err, syscall.ECONNREFUSED):
		return &Error{Status: http.StatusBadGateway, Type: "connection_refused", Err: err}
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return &Error{Status: http.StatusBadGateway, Type: "destination_ip_unroutable", Err: err}
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return &Error{Status: http.StatusBadGateway, Type: "connection_terminated", Err: err}
	}
	return &Error{Status: http.StatusBadGateway, Type: "destination_unavailable", Err: err}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// refuse answers r with e. On HTTP/1.1 the connection is closed afterwards
// so that nothing the client pipelined behind a refused CONNECT is read as
// a request.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, e *Error) {
	h := w.Header()
	h.Set("Proxy-Status", e.proxyStatus(s.name))
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h1.Refuse(w, r)
	w.WriteHeader(e.Status)
	fmt.Fprintf(w, "%d %s: %s\n", e.Status, http.StatusText(e.Status), e.Type)
}
