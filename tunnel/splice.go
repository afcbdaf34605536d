package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Options tune a Splice. The zero value is usable.
type Options struct {
	// IdleTimeout aborts the tunnel with ErrIdle when no bytes moved in
	// either direction for this long. Zero means no idle timeout.
	IdleTimeout time.Duration
}

// Stats counts the bytes a tunnel carried.
type Stats struct {
	Up   int64 // client to target
	Down int64 // target to client
}

const bufSize = 32 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// Splice copies client<->target until both directions have ended, then
// closes both. A clean end of one direction (EOF) is passed on with
// CloseWrite and the other direction keeps flowing (half-close). A failure
// on either side, the idle timeout or ctx being done aborts both conns with
// the cause and is returned; a tunnel whose both directions ended cleanly
// returns nil.
func Splice(ctx context.Context, client, target Conn, opt Options) (Stats, error) {
	var (
		st       Stats
		activity atomic.Int64 // unix nanos of the last read that returned bytes
		once     sync.Once
		failure  error
	)
	abort := func(err error) {
		once.Do(func() {
			failure = err
			client.Abort(err)
			target.Abort(err)
		})
	}
	activity.Store(time.Now().UnixNano())

	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		n, err := pipe(target, client, Client, &activity)
		atomic.AddInt64(&st.Up, n)
		if err != nil {
			abort(err)
		}
	}()
	go func() {
		defer wg.Done()
		n, err := pipe(client, target, Target, &activity)
		atomic.AddInt64(&st.Down, n)
		if err != nil {
			abort(err)
		}
	}()
	go func() { wg.Wait(); close(done) }()

	var idle <-chan time.Time
	var timer *time.Timer
	if opt.IdleTimeout > 0 {
		timer = time.NewTimer(opt.IdleTimeout)
		defer timer.Stop()
		idle = timer.C
	}
	ctxDone := ctx.Done()
	for {
		select {
		case <-done:
			if failure == nil {
				_ = client.Close()
				_ = target.Close()
			}
			return Stats{Up: atomic.LoadInt64(&st.Up), Down: atomic.LoadInt64(&st.Down)}, failure
		case <-ctxDone:
			ctxDone = nil
			abort(context.Cause(ctx))
		case <-idle:
			since := time.Since(time.Unix(0, activity.Load()))
			if since >= opt.IdleTimeout {
				idle = nil
				abort(ErrIdle)
			} else {
				timer.Reset(opt.IdleTimeout - since)
			}
		}
	}
}

// pipe copies src to dst and ends dst's write direction on src's EOF. from is
// the side src belongs to, so that errors name the side that failed.
func pipe(dst, src Conn, from Side, activity *atomic.Int64) (int64, error) {
	to := Target
	if from == Target {
		to = Client
	}
	if s, d := rawTCP(src), rawTCP(dst); s != nil && d != nil {
		// TCP to TCP: io.Copy takes the kernel's splice(2) path. Activity is
		// not tracked per read here; a read deadline would be needed.
		n, err := io.Copy(d, s)
		if err != nil {
			return n, classify(err, from, to)
		}
		return n, closeWrite(dst)
	}

	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var total int64
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			activity.Store(time.Now().UnixNano())
			w, werr := dst.Write(buf[:n])
			total += int64(w)
			if werr != nil {
				return total, &Error{Side: to, Err: werr}
			}
		}
		if rerr == io.EOF {
			return total, closeWrite(dst)
		}
		if rerr != nil {
			return total, &Error{Side: from, Err: rerr}
		}
	}
}

// closeWrite passes a clean end on. Its error is not the tunnel's: a peer
// that already closed its socket has nothing left to miss, and a peer that
// failed shows it on the other direction's read.
func closeWrite(dst Conn) error {
	_ = dst.CloseWrite()
	return nil
}

// classify attributes an io.Copy error: a failed read is the source's
// fault, a failed write the destination's.
func classify(err error, from, to Side) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "write" {
		return &Error{Side: to, Err: err}
	}
	return &Error{Side: from, Err: err}
}

func rawTCP(c Conn) *net.TCPConn {
	if nc, ok := c.(*netConn); ok {
		return nc.rawTCP()
	}
	return nil
}
