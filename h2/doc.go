// Package h2 is h2proxy's HTTP/2 front end: a native server engine
// (RFC 9113, RFC 8441) built on golang.org/x/net/http2's Framer and hpack.
//
// Server.ServeConn runs one connection: a reader goroutine that applies
// every frame under the connection's lock (stream state machine, flow
// control, request validation), a writer goroutine that batches control
// frames and one frame per ready stream in round-robin order, and one
// goroutine per request stream that calls the http.Handler. A CONNECT
// stream becomes a tunnel.Conn through Accept: DATA both ways, END_STREAM
// as a clean half-close, RST_STREAM with CONNECT_ERROR or CANCEL as
// failure (RFC 9113 §8.5). When the tunnel's target is a plain TCP
// socket, the writer reads the download from it itself (tunnel.Puller),
// straight into its batch of frames, so that many busy tunnels cost one
// goroutine rather than one each taking turns to write; the other way,
// the reader writes each DATA payload to the target while the tunnel
// waits (tunnel.Pusher), holding a small tail back to leave with the
// stream's next DATA in one write.
//
// Configure installs the engine into an http.Server for TLS ("h2" by ALPN)
// and cleartext prior-knowledge connections. Everything that knows how the
// HTTP/2 server is implemented stays in this package, so that proxy sees
// only an http.Handler, Accept and Configure.
package h2
