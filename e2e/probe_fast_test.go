package e2e

import (
	"bufio"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netns"
)

// FastProber starts a connection to an address every interval from inside a
// namespace, without waiting for earlier ones: a probe stuck on a dead MAC
// does not hold up the next. It runs in the test process, each dial on an
// OS thread switched into the namespace for the socket() call only.
type FastProber struct {
	ns       netns.NsHandle
	addr     string
	interval time.Duration
	timeout  time.Duration

	stop, done chan struct{}
	wg         sync.WaitGroup
	mu         sync.Mutex
	results    []fastProbe
}

// fastProbe is one connection attempt: when it started and when its answer
// (or failure) came.
type fastProbe struct {
	Start, End time.Time
	OK         bool
	Reply      string
}

const fastProbeMaxRun = 2 * time.Minute

// StartFastProber probes addr every interval from namespace nsName.
func StartFastProber(nsName, addr string, interval, timeout time.Duration) (*FastProber, error) {
	h, err := netns.GetFromName(nsName)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", nsName, err)
	}
	p := &FastProber{ns: h, addr: addr, interval: interval, timeout: timeout, stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	return p, nil
}

func (p *FastProber) run() {
	defer close(p.done)
	tick := time.NewTicker(p.interval)
	defer tick.Stop()
	deadline := time.Now().Add(fastProbeMaxRun)
	for n := 0; n < int(fastProbeMaxRun/p.interval)+1 && time.Now().Before(deadline); n++ {
		p.wg.Add(1)
		go p.probe()
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
	}
}

// dialIn creates the socket inside the namespace: the thread is switched
// for the dial only, and never returned to the scheduler in the wrong
// namespace (if switching back fails it stays locked and dies with the
// goroutine).
func (p *FastProber) dialIn() (net.Conn, error) {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer orig.Close()
	if err := netns.Set(p.ns); err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	conn, err := net.DialTimeout(tcpNetwork(p.addr), p.addr, p.timeout)
	if netns.Set(orig) == nil {
		runtime.UnlockOSThread()
	}
	return conn, err
}

func (p *FastProber) probe() {
	defer p.wg.Done()
	r := fastProbe{Start: time.Now()}
	conn, err := p.dialIn()
	if err == nil {
		_ = conn.SetDeadline(r.Start.Add(p.timeout))
		line, rerr := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		r.Reply = strings.TrimSpace(line)
		r.OK = rerr == nil && r.Reply != ""
	}
	r.End = time.Now()
	p.mu.Lock()
	p.results = append(p.results, r)
	p.mu.Unlock()
}

// Stop ends probing, waits for the probes in flight and returns them all,
// ordered by the time they ended.
func (p *FastProber) Stop() []fastProbe {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
	p.wg.Wait()
	p.ns.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	out := append([]fastProbe(nil), p.results...)
	slices.SortFunc(out, func(a, b fastProbe) int { return a.End.Compare(b.End) })
	return out
}

// probeOutage is the longest time without an answer around from: between two
// consecutive successful answers (by the time they came), or from the last
// answer before from to the end if none came after. ok is false when no
// answer came after from.
func probeOutage(probes []fastProbe, from time.Time) (gap time.Duration, firstReplyAfter string, ok bool) {
	var last time.Time
	for _, pr := range probes {
		if !pr.OK {
			continue
		}
		if !last.IsZero() && pr.End.Sub(last) > gap {
			gap = pr.End.Sub(last)
		}
		if !pr.End.Before(from) && !ok {
			ok, firstReplyAfter = true, pr.Reply
		}
		last = pr.End
	}
	return gap, firstReplyAfter, ok
}
