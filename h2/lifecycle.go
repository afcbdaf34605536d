package h2

import (
	"time"

	"golang.org/x/net/http2"
)

// goAwayLocked sends the final GOAWAY (RFC 9113 §6.8) naming the last
// stream we processed; streams above it are ignored from now on. The
// connection closes once no stream is open.
func (c *conn) goAwayLocked(code http2.ErrCode) {
	if !c.goawaySent {
		c.goawaySent = true
		c.lastID = c.maxClientID
	}
	c.queueCtrl(ctrlFrame{typ: http2.FrameGoAway, lastID: c.lastID, code: code})
	c.maybeCloseLocked()
}

// startDrainLocked begins a graceful shutdown (§6.8): a GOAWAY with
// 2^31-1 tells the client to stop opening streams while those already in
// flight still count; after one PING round trip (or a second) the final
// GOAWAY names the real last stream.
func (c *conn) startDrainLocked() {
	if c.draining || c.goawaySent || c.closed {
		return
	}
	c.draining = true
	c.queueCtrl(ctrlFrame{typ: http2.FrameGoAway, lastID: 1<<31 - 1, code: http2.ErrCodeNo})
	c.queueCtrl(ctrlFrame{typ: http2.FramePing, ping: drainPing})
	c.drainTimer = time.AfterFunc(drainPingTimeout, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.finishDrainLocked()
	})
}

func (c *conn) finishDrainLocked() {
	if c.draining && !c.goawaySent && !c.closed {
		c.goAwayLocked(http2.ErrCodeNo)
	}
}

// maybeCloseLocked ends a connection that has said (or heard) GOAWAY once
// its last stream closed: the reader is interrupted and returns cleanly.
func (c *conn) maybeCloseLocked() {
	if c.closed || c.stopping || c.active > 0 || !(c.goawaySent || c.peerGoAway) {
		return
	}
	c.stopping = true
	_ = c.nc.SetReadDeadline(time.Now())
}

// idleTimerLocked (re)arms the idle timeout while no stream is open.
func (c *conn) idleTimerLocked() {
	if c.cfg.IdleTimeout < 0 || c.closed || c.active > 0 {
		return
	}
	if c.idleTimer == nil {
		c.idleTimer = time.AfterFunc(c.cfg.IdleTimeout, c.onIdle)
	} else {
		c.idleTimer.Reset(c.cfg.IdleTimeout)
	}
}

func (c *conn) onIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.active == 0 && !c.closed {
		c.goAwayLocked(http2.ErrCodeNo)
	}
}
