package h1server

import (
	"errors"
	"os"
	"time"
)

// sweep runs under the server's lock at every sweep: a request found
// running at two sweeps in a row, whose body has been read, gets a watcher.
func (c *conn) sweep() {
	n := c.busy.Load()
	if n != 0 && n == c.seen && c.bodyRead.Load() {
		c.startWatch(n)
	}
	c.seen = n
}

// startWatch starts a goroutine that reads from the connection while
// request n runs: a closed connection cancels the request. The request
// read deadline no longer applies once the body is read, so it is lifted
// first, before the goroutine starts, so as not to undo endWatch's.
func (c *conn) startWatch(n uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.busy.Load() != n || c.watching != nil {
		return
	}
	_ = c.nc.SetReadDeadline(time.Time{})
	done := make(chan struct{})
	c.watching = done
	go c.watch(done)
}

// watch reads one byte. A byte is the start of the client's next request,
// kept for it; an error that endWatch did not cause means the client is
// gone.
func (c *conn) watch(done chan struct{}) {
	defer close(done)
	var b [1]byte
	n, err := c.nc.Read(b[:])
	if n == 1 {
		c.rd.byte, c.rd.hasByte = b[0], true
	}
	if err == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.aborting && errors.Is(err, os.ErrDeadlineExceeded) {
		return
	}
	c.gone = true
	c.cancel(errClientGone)
}

// endWatch marks the request finished and stops its watcher, if it has
// one. It reports false when the watcher saw the client leave.
func (c *conn) endWatch() bool {
	c.mu.Lock()
	c.busy.Store(0)
	done := c.watching
	c.watching = nil
	c.aborting = done != nil
	c.mu.Unlock()
	if done == nil {
		return true
	}
	_ = c.nc.SetReadDeadline(aLongTimeAgo)
	<-done
	_ = c.nc.SetReadDeadline(time.Time{})
	c.mu.Lock()
	defer c.mu.Unlock()
	c.aborting = false
	return !c.gone
}
