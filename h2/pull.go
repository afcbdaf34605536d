package h2

import (
	"time"

	"github.com/h2proxy/h2proxy/tunnel"
)

// pullFrames is how many DATA frames one pull reads at most, and a batch
// that pulled ends once it holds that many records: the writer then
// alternates reading 32 KiB from a target and writing it, as a tunnel's
// own copy loop would. Batches of 64 KiB cost one tunnel's download about
// 6 % of its throughput (the client starts on the data later); 16 KiB
// ones cost 16 tunnels' download more CPU per byte (paired runs).
const pullFrames = 2

// pull lets the connection's writer read the tunnel's download from its
// target itself (tunnel.Puller) until the target's socket is empty, ends
// or fails. The data goes from the socket straight into the writer's
// batch, between frame headers: no tunnel goroutine is woken for it and
// none waits for a turn to write. With 16 busy tunnels on a connection
// that measured 7-12 % less proxy CPU per byte than each tunnel writing
// its own frames in turn (paired runs, BenchmarkH2AgainstH1), since one
// goroutine then reads every target and writes every frame.
//
// While a window is shut the wait is bounded by WriteTimeout, as a
// write's is: the writer wakes the tunnel when it leaves the stream
// blocked on a window, and only then is a timer armed, so that a busy
// tunnel's pulls cost none.
func (s *stream) pull(read func([][]byte) (int, error)) error {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := s.sendCheck(); err != nil {
		return err
	}
	s.puller, s.pullErr = read, nil
	// When no one is writing, this goroutine writes, as the writer would,
	// until nothing is left. The target's data then costs no wake-up of
	// the writer, nor of this goroutine when the target runs dry (one
	// tunnel's download: about 4 % less proxy CPU per byte in paired runs).
	c.enqueue(s)
	c.writeDirect(0)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	var timeout <-chan time.Time
	pulls := s.pulls
	for s.puller != nil && s.err == nil && s.state != stClosed {
		shut := s.sendWindow <= 0 || c.sendWindow <= 0
		switch {
		case shut && timeout == nil && c.cfg.WriteTimeout > 0:
			if timer == nil {
				timer = time.NewTimer(c.cfg.WriteTimeout)
			} else {
				timer.Reset(c.cfg.WriteTimeout)
			}
			timeout, pulls = timer.C, s.pulls
		case !shut && timeout != nil:
			timer.Stop()
			timeout = nil
		}
		if !s.waitWake(timeout) {
			continue
		}
		timeout = nil
		if s.pulls != pulls {
			continue // data moved meanwhile: a new timeout
		}
		s.puller = nil
		s.timedOut()
		return errWriteTimeout
	}
	s.puller = nil
	switch {
	case s.pullErr != nil:
		return s.pullErr
	case s.err != nil:
		return s.err
	case s.state == stClosed:
		return errStreamEnded
	}
	return nil
}

// pulling reports whether the writer reads s's next DATA from its
// target: nothing else of s waits to be written before it.
func (s *stream) pulling() bool { return s.puller != nil && len(s.hdrs) == 0 && s.sbuf.n == 0 }

// pullData reads DATA of s from its target into the batch: up to
// pullFrames frames, as far as both windows allow, with one read into
// the payloads' places between their headers. Once the target would
// block, ends or fails, s stops pulling and its tunnel is woken to wait
// or to end. Called by the goroutine whose turn it is to write, with
// c.mu held; c.mu is released during the read, so that the reader
// goroutine does not wait for a system call.
func (c *conn) pullData(s *stream) {
	frame := c.dataFrameMax()
	limit := min(s.sendWindow, c.sendWindow, int64(pullFrames*frame))
	start := len(c.bb.b)
	if need := start + int(limit) + pullFrames*frameHeaderLen; cap(c.bb.b) < need {
		b := make([]byte, start, need)
		copy(b, c.bb.b)
		c.bb.b = b
	}
	var bufs [pullFrames][]byte
	k, off := 0, start+frameHeaderLen
	for rest := int(limit); rest > 0; k++ {
		n := min(rest, frame)
		bufs[k] = c.bb.b[off : off+n]
		off += n + frameHeaderLen
		rest -= n
	}
	read := s.puller
	c.mu.Unlock()
	n, err := read(bufs[:k])
	c.mu.Lock()
	if n > 0 && s.state != stClosed {
		s.pulls++
		b := c.bb.b[:start]
		for rest, i := n, 0; rest > 0; i++ {
			m := min(rest, len(bufs[i]))
			b = appendDataHeader(b, m, 0, s.id)
			b = b[:len(b)+m] // the payload is in place already
			c.chargeData(m)
			rest -= m
		}
		c.bb.b = b
		s.sendWindow -= int64(n)
		c.sendWindow -= int64(n)
		if s.sendWindow <= 0 || c.sendWindow <= 0 {
			signal(s.wwake) // the tunnel bounds the wait (see pull)
		}
	}
	if err != nil {
		if err != tunnel.ErrWouldBlock {
			s.pullErr = err
		}
		s.puller = nil
		signal(s.wwake)
	}
}
