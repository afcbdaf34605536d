package tunnel

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The data paths read and write their sockets with syscall.RawSyscall,
// not with syscall.Read, unix.Writev and the like, which go through
// syscall.Syscall. The difference is the runtime's bookkeeping: Syscall
// marks the goroutine's thread as blocked in the kernel, and the
// runtime's monitor thread (sysmon) takes the thread's P away from any
// call it finds longer than one of its ticks (20 µs), hands it to another
// thread (a futex wake-up), and then polls every 20 µs for the next
// millisecond or more. A loopback write of 16 to 256 KiB often takes that
// long, since it runs the receiver's TCP input too; on one busy HTTP/2
// tunnel's upload the monitor woke ~3,300 times a second (~130 with raw
// calls), each time a context switch that costs ~25 µs of CPU on this
// kind of virtual machine.
//
// A raw call is safe here because Go's sockets are non-blocking: a read
// of an empty socket or a write to a full one returns EAGAIN at once, and
// the waiting is left to the poller (RawConn's callback returning false),
// so a call lasts no longer than its copy. One thing is lost: unlike
// syscall.Read and syscall.Write, these calls do not tell the race
// detector that they read or write the buffers.

// sysRead is read(2) on the non-blocking socket fd.
func sysRead(fd uintptr, p []byte) (int, error) {
	return sysBuf(syscall.SYS_READ, fd, p)
}

// sysWrite is write(2) on the non-blocking socket fd.
func sysWrite(fd uintptr, p []byte) (int, error) {
	return sysBuf(syscall.SYS_WRITE, fd, p)
}

func sysBuf(trap, fd uintptr, p []byte) (int, error) {
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	n, _, errno := syscall.RawSyscall(trap, fd, uintptr(ptr), uintptr(len(p)))
	if errno != 0 {
		return -1, errno
	}
	return int(n), nil
}

// iovecs is a readv/writev argument, kept by its reader or writer so that
// a call allocates nothing.
type iovecs []unix.Iovec

// sysReadv is readv(2) on the non-blocking socket fd.
func (v *iovecs) sysReadv(fd uintptr, bufs [][]byte) (int, error) {
	return v.sys(syscall.SYS_READV, fd, bufs)
}

// sysWritev is writev(2) on the non-blocking socket fd.
func (v *iovecs) sysWritev(fd uintptr, bufs [][]byte) (int, error) {
	return v.sys(syscall.SYS_WRITEV, fd, bufs)
}

func (v *iovecs) sys(trap, fd uintptr, bufs [][]byte) (int, error) {
	iov := (*v)[:0]
	for _, b := range bufs {
		if len(b) > 0 {
			iov = append(iov, unix.Iovec{Base: &b[0]})
			iov[len(iov)-1].SetLen(len(b))
		}
	}
	*v = iov
	var ptr unsafe.Pointer
	if len(iov) > 0 {
		ptr = unsafe.Pointer(&iov[0])
	}
	n, _, errno := syscall.RawSyscall(trap, fd, uintptr(ptr), uintptr(len(iov)))
	clear(iov) // keep no caller's buffer
	if errno != 0 {
		return -1, errno
	}
	return int(n), nil
}
