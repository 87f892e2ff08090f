package h1client

import (
	"bufio"
	"context"
	"io"
	"sync/atomic"
	"time"
)

// get returns a live idle connection to addr, or dials a new one.
func (c *Client) get(ctx context.Context, addr string) (*conn, error) {
	now := time.Now()
	for {
		cn := c.takeIdle(addr, now)
		if cn == nil {
			break
		}
		// The upstream may have closed the connection while it sat idle
		// (keep-alive timeouts of a few seconds are common); finding that
		// out now is cheaper than failing the request on it.
		if peerOpen(cn.nc) {
			cn.reused = true
			return cn, nil
		}
		cn.nc.Close()
	}
	nc, err := c.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	lr := &headerLimit{r: nc, n: -1}
	return &conn{nc: nc, lr: lr, br: bufio.NewReaderSize(lr, 4<<10), bw: bufio.NewWriterSize(nc, 4<<10), addr: addr}, nil
}

// takeIdle pops the most recently used idle connection to addr that has
// not been idle too long, closing those that have.
func (c *Client) takeIdle(addr string, now time.Time) *conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	list := c.idle[addr]
	for len(list) > 0 {
		cn := list[len(list)-1]
		list[len(list)-1] = nil
		list = list[:len(list)-1]
		if now.Sub(cn.idleSince) <= c.idleTimeout {
			c.idle[addr] = list
			return cn
		}
		cn.nc.Close()
	}
	delete(c.idle, addr)
	return nil
}

// put keeps cn for reuse, unless the pool for its host is full. The oldest
// connections are the first to go: they are the likeliest to have been
// closed by the upstream.
func (c *Client) put(cn *conn) {
	cn.idleSince = time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.maxIdle <= 0 {
		cn.nc.Close()
		return
	}
	list := c.idle[cn.addr]
	if len(list) >= c.maxIdle {
		list[0].nc.Close()
		list = append(list[:0], list[1:]...)
	}
	c.idle[cn.addr] = append(list, cn)
}

// CloseIdle closes every idle connection.
func (c *Client) CloseIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for addr, list := range c.idle {
		for _, cn := range list {
			cn.nc.Close()
		}
		delete(c.idle, addr)
	}
}

// body is a response body that hands its connection back to the client
// once read to the end. Close before the end closes the connection rather
// than draining it: the rest may be a long stream nobody will read.
type body struct {
	rc       io.ReadCloser
	ctx      context.Context
	client   *Client
	cn       *conn
	stop     func() bool
	reusable bool
	// sawEOF is set by the reading goroutine at the end of the body.
	sawEOF bool
	// done is set by whichever of the end of the body and Close comes
	// first; Close may race with a Read in another goroutine.
	done atomic.Bool
}

func (b *body) Read(p []byte) (int, error) {
	if b.sawEOF {
		return 0, io.EOF
	}
	if b.done.Load() {
		return 0, errBodyClosed
	}
	n, err := b.rc.Read(p)
	switch {
	case err == io.EOF:
		b.sawEOF = true
		if b.done.CompareAndSwap(false, true) {
			release(b.client, b.cn, b.stop, b.reusable)
		}
	case err != nil:
		if b.ctx.Err() != nil {
			err = ctxError{ctx: b.ctx.Err(), cause: err}
		}
		b.Close()
	}
	return n, err
}

// Close ends the exchange; the connection is closed unless the body was
// read to its end.
func (b *body) Close() error {
	if b.done.CompareAndSwap(false, true) {
		b.stop()
		b.cn.nc.Close()
	}
	return nil
}
