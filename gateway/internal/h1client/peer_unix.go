//go:build unix

package h1client

import (
	"net"
	"syscall"
)

// peerOpen reports whether an idle connection may still be used: nothing
// is waiting to be read on it, neither the end of the stream nor stray
// bytes, which no upstream sends between responses. The check peeks
// without blocking, one system call.
func peerOpen(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	open := false
	err = raw.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		open = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
		return true
	})
	return err == nil && open
}
