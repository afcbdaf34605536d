//go:build !linux

package tunnel

import "net"

// quietConn exists on Linux only (epoll); elsewhere sockets stay in the
// runtime's poller.
type quietConn struct{ *net.TCPConn }

func quiet(*net.TCPConn) *quietConn { return nil }
