package reactor

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// A tcp direction that streams moves through a pipe with splice, as
// HAProxy's splice-auto does: the kernel hands the socket's pages on to the
// other socket instead of copying them out to the loop's buffer and back
// in. It costs the same two syscalls per chunk as a read and a write, but
// more kernel work for a small message than a copy, so a direction starts
// splicing only once a read fills the loop's whole buffer: a bulk
// transfer, not a request or its answer.

// maxPipes bounds the pipes a loop keeps open (two descriptors each);
// directions past it go on copying, as they do when pipe2 fails.
const maxPipes = 1024

// Pipe is one direction's pipe and what it holds.
type Pipe struct {
	r, w int
	N    int // bytes in the pipe, not yet passed on
}

// NewPipe opens a pipe for one of r's connections; nil when the
// loop has its share of pipes or the system refuses one.
func (r *Loop) NewPipe() *Pipe {
	if r.Pipes >= maxPipes {
		return nil
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return nil
	}
	r.Pipes++
	r.PipesOpened.Add(1)
	return &Pipe{r: fds[0], w: fds[1]}
}

// ClosePipe releases p; safe with nil.
func (r *Loop) ClosePipe(p *Pipe) {
	if p == nil {
		return
	}
	unix.Close(p.r)
	unix.Close(p.w)
	r.Pipes--
}

// spliceChunk is how much one splice takes from a socket: what a pipe
// holds by default (16 pages).
const spliceChunk = 64 << 10

// in moves what src has, up to a pipe's worth, into the empty pipe; 0 at
// src's end. A short count does not mean src is drained (the pipe may
// have run out of slots for the socket's pieces): the next call says so.
func (p *Pipe) In(src int) (int, error) {
	n, err := sysSplice(src, p.w, spliceChunk)
	if err == nil {
		p.N += n
	}
	return n, err
}

// out passes what the pipe holds on to dst, as much as dst takes.
func (p *Pipe) Out(dst int) error {
	n, err := sysSplice(p.r, dst, p.N)
	if err == nil {
		p.N -= n
	}
	return err
}

// sysSplice is raw, as the loop's other socket calls (see sysRead).
func sysSplice(from, to, n int) (int, error) {
	r, _, e := syscall.RawSyscall6(unix.SYS_SPLICE, uintptr(from), 0, uintptr(to), 0, uintptr(n), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}
