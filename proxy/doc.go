// Package proxy is the h2proxy server: it accepts TLS connections, routes
// each request (tunnel, WebSocket, forward, local), applies the destination
// policy, dials the target and hands the two ends to the tunnel package
// (tunnel.Go) or to the forwarding reverse proxy. Front-end specifics live
// in h1 and h2.
package proxy
