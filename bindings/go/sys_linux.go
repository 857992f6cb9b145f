package dmxp

import (
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

const (
	futexWaitOp    = 0 // FUTEX_WAIT, without FUTEX_PRIVATE_FLAG: the words are shared
	futexWakeOp    = 1 // FUTEX_WAKE
	clockMonotonic = 1 // CLOCK_MONOTONIC
	maxWaitSlice   = 100 * time.Millisecond
)

var futexWakeCalls, futexWaitCalls uint64

// FutexWakeCalls is the number of FUTEX_WAKE system calls this process has made.
func FutexWakeCalls() uint64 { return atomic.LoadUint64(&futexWakeCalls) }

// FutexWaitCalls is the number of FUTEX_WAIT system calls this process has made.
func FutexWaitCalls() uint64 { return atomic.LoadUint64(&futexWaitCalls) }

// futexWait sleeps while *addr == val, for at most d. Every return (woken, EAGAIN, EINTR,
// ETIMEDOUT, spurious) means "re-check".
func futexWait(addr *uint32, val uint32, d time.Duration) {
	atomic.AddUint64(&futexWaitCalls, 1)
	ts := syscall.NsecToTimespec(int64(d))
	_, _, _ = syscall.Syscall6(syscall.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWaitOp,
		uintptr(val), uintptr(unsafe.Pointer(&ts)), 0, 0)
}

// futexWakeAll wakes every sleeper on addr, in any process. FUTEX_WAKE never blocks, so it
// is a raw system call, without the scheduler's entersyscall/exitsyscall bookkeeping (about a
// tenth of the wake's cost in a profile of a sender that wakes a receiver per message).
func futexWakeAll(addr *uint32) {
	atomic.AddUint64(&futexWakeCalls, 1)
	_, _, _ = syscall.RawSyscall(syscall.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWakeOp, 0x7fffffff)
}

// ClockMonotonicSyscall reads CLOCK_MONOTONIC with the clock_gettime system call.
func ClockMonotonicSyscall() uint64 {
	var ts syscall.Timespec
	_, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockMonotonic, uintptr(unsafe.Pointer(&ts)), 0)
	if errno != 0 {
		return 0
	}
	return uint64(ts.Nano())
}

// The runtime's monotonic clock (which time.Since reads through the vDSO) is CLOCK_MONOTONIC
// on Linux; only its origin is private. clockBase is CLOCK_MONOTONIC at clockOrigin, measured
// once with the system call, so MonotonicNow costs a vDSO read instead of a system call.
var (
	clockOrigin time.Time
	clockBase   uint64
	// clockError bounds |MonotonicNow() - CLOCK_MONOTONIC|: half the calibration window.
	clockError time.Duration
	clockOK    bool
)

func init() {
	clockOrigin = time.Now()
	sys := ClockMonotonicSyscall()
	window := time.Since(clockOrigin)
	if sys == 0 {
		clockOK = false
		return
	}
	clockOK = true
	// The system call ran somewhere in [clockOrigin, clockOrigin+window]: take the middle.
	clockBase = sys - uint64(window/2)
	clockError = window/2 + 1
}

// MonotonicNow is CLOCK_MONOTONIC in nanoseconds (comparable with other processes on this
// host and boot), the value senders store in timestamp_ns.
// It is 0 if the clock could not be read.
func MonotonicNow() uint64 {
	if !clockOK {
		return 0
	}
	return clockBase + uint64(time.Since(clockOrigin))
}
