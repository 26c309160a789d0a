package e2e

import (
	"bufio"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Client asks through the VIP from the client namespace. It drives one
// long-lived helper process there (helperClient) over stdin/stdout, so a
// probe costs a connect, not a process start.
type Client struct {
	t      *testing.T
	ns     string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	exited chan struct{}
	stderr *lockedBuffer

	mu  sync.Mutex // one request at a time
	seq int
}

// NewClient starts the client helper in namespace ns; t.Cleanup stops it.
func NewClient(t *testing.T, ns string) *Client {
	t.Helper()
	cmd, err := helperCommand(ns, helperClient)
	if err != nil {
		t.Fatal(err)
	}
	c := &Client{t: t, ns: ns, cmd: cmd, lines: make(chan string, 16), exited: make(chan struct{}), stderr: &lockedBuffer{}}
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = c.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start client helper in %s: %v", ns, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	go func() { _ = cmd.Wait(); close(c.exited) }()
	t.Cleanup(c.Close)
	return c
}

// Ask connects to addr within timeout and returns the first line it
// answers: for VIP:8080, the id of the backend that served it.
func (c *Client) Ask(addr string, timeout time.Duration) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	seq := strconv.Itoa(c.seq)
	ms := max(timeout.Milliseconds(), 1)
	if _, err := fmt.Fprintf(c.stdin, "%s %s %d\n", seq, addr, ms); err != nil {
		return "", fmt.Errorf("client helper in %s: %w (stderr: %s)", c.ns, err, c.stderr.String())
	}
	deadline := time.After(timeout + 3*time.Second)
	for range 1000 { // skips answers to earlier requests that timed out here
		select {
		case line, ok := <-c.lines:
			if !ok {
				return "", fmt.Errorf("client helper in %s exited (stderr: %s)", c.ns, c.stderr.String())
			}
			f := strings.SplitN(line, " ", 3)
			if len(f) < 2 || f[0] != seq {
				continue
			}
			rest := ""
			if len(f) == 3 {
				rest = f[2]
			}
			if f[1] != "ok" {
				return "", fmt.Errorf("ask %s: %s", addr, rest)
			}
			return rest, nil
		case <-deadline:
			return "", fmt.Errorf("ask %s: no answer from client helper within %s", addr, timeout+3*time.Second)
		}
	}
	return "", fmt.Errorf("ask %s: too many stale answers", addr)
}

// Close ends the helper (closing stdin ends its loop; SIGKILL if it hangs).
func (c *Client) Close() {
	_ = c.stdin.Close()
	select {
	case <-c.exited:
	case <-time.After(3 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

// probeAttempt is one connection attempt of a Prober.
type probeAttempt struct {
	At    time.Time // when the answer (or the failure) came
	OK    bool
	Reply string
	Err   string
}

// ProbeReport summarises a Prober's attempts. The client-visible outage is
// the longest time between two successful answers.
type ProbeReport struct {
	Attempts, Successes int
	LongestGap          time.Duration
	GapFrom, GapTo      time.Time
	Recovered           bool // the last attempt succeeded
	Replies             map[string]int
	LastError           string
}

func (r ProbeReport) String() string {
	return fmt.Sprintf("%d attempts, %d ok, longest gap between answers %s (%s -> %s), recovered=%v, replies %v, last error %q",
		r.Attempts, r.Successes, r.LongestGap.Round(time.Millisecond),
		r.GapFrom.Format("15:04:05.000"), r.GapTo.Format("15:04:05.000"), r.Recovered, r.Replies, r.LastError)
}

const (
	probeInterval   = 15 * time.Millisecond
	probeTimeout    = 250 * time.Millisecond
	probeMaxRun     = 3 * time.Minute
	probeMaxAttempt = int(probeMaxRun / probeInterval)
)

// Prober asks addr every probeInterval until stopped (or probeMaxRun).
type Prober struct {
	stop, done chan struct{}
	attempts   []probeAttempt
}

// StartProber starts probing addr through c.
func (c *Client) StartProber(addr string) *Prober {
	p := &Prober{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		start := time.Now()
		for range probeMaxAttempt {
			reply, err := c.Ask(addr, probeTimeout)
			a := probeAttempt{At: time.Now(), OK: err == nil, Reply: reply}
			if err != nil {
				a.Err = err.Error()
			}
			p.attempts = append(p.attempts, a)
			if time.Since(start) > probeMaxRun {
				return
			}
			select {
			case <-p.stop:
				return
			case <-time.After(probeInterval):
			}
		}
	}()
	return p
}

// Stop ends probing (idempotent) and reports.
func (p *Prober) Stop() ProbeReport {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
	r := ProbeReport{Replies: map[string]int{}}
	var lastOK time.Time
	for _, a := range p.attempts {
		r.Attempts++
		if !a.OK {
			r.LastError = a.Err
			continue
		}
		r.Successes++
		r.Replies[a.Reply]++
		if !lastOK.IsZero() && a.At.Sub(lastOK) > r.LongestGap {
			r.LongestGap, r.GapFrom, r.GapTo = a.At.Sub(lastOK), lastOK, a.At
		}
		lastOK = a.At
	}
	if n := len(p.attempts); n > 0 {
		r.Recovered = p.attempts[n-1].OK
		// An outage still going on at the end counts up to the last attempt.
		if last := p.attempts[n-1]; !last.OK && !lastOK.IsZero() && last.At.Sub(lastOK) > r.LongestGap {
			r.LongestGap, r.GapFrom, r.GapTo = last.At.Sub(lastOK), lastOK, last.At
		}
	}
	return r
}
