package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as the helper programs the harness runs inside
// namespaces: `ip netns exec NS <test binary> ARGS...` with helperModeEnv set.
const (
	helperModeEnv = "KEEPVIP_E2E_HELPER"

	// helperServe ADDR [REPLY]: listen on ADDR, print "ready", and answer
	// every connection with REPLY+"\n" (nothing when REPLY is absent, which
	// is what a TCP health check needs), then close it.
	helperServe = "serve"
	// helperBackend is helperServe under the name the original example config gives a backend.
	helperBackend = "backend"
	// helperClient: read "SEQ ADDR TIMEOUT_MS" lines on stdin, dial ADDR,
	// read one line, and print "SEQ ok LINE" or "SEQ err MESSAGE".
	helperClient = "client"
	// helperGet URL: print the body of an HTTP GET; exit 1 unless 200.
	helperGet = "get"
	// helperUDPEcho ADDR: send every datagram to ADDR back to its sender
	// (the balancer bench's udp backend).
	helperUDPEcho = "udp-echo"
	// helperHTTP serves HTTP/1.1: 200 "ok" to every request.
	helperHTTP = "http-serve"

	// helperMaxLifetime bounds every helper so that one the harness lost
	// track of still goes away by itself; helperMaxRequests bounds its loop.
	helperMaxLifetime = 15 * time.Minute
	helperMaxRequests = 1_000_000
)

func runHelper(mode string, args []string) int {
	go func() {
		time.Sleep(helperMaxLifetime)
		fmt.Fprintf(os.Stderr, "helper %s: max lifetime reached\n", mode)
		os.Exit(3)
	}()
	var err error
	switch mode {
	case helperServe, helperBackend:
		err = helperServeTCP(args)
	case helperClient:
		err = helperDialLoop(os.Stdin, os.Stdout)
	case helperGet:
		err = helperHTTPGet(args)
	case helperUDPEcho:
		err = helperUDPEchoServe(args)
	case helperHTTP:
		err = helperServeHTTP(args)
	case helperPauseWatch:
		err = helperPauseWatchRun(args)
	default:
		err = fmt.Errorf("unknown helper mode %q", mode)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "helper %s: %v\n", mode, err)
		return 1
	}
	return 0
}

// helperIdleHold bounds how long the tcp helper holds a connection its
// peer keeps open.
const helperIdleHold = 10 * time.Minute

func helperServeTCP(args []string) error {
	if len(args) < 1 {
		return errors.New("usage: serve ADDR [REPLY]")
	}
	ln, err := net.Listen(tcpNetwork(args[0]), args[0])
	if err != nil {
		return fmt.Errorf("listen %s: %w", args[0], err)
	}
	var reply []byte
	if len(args) > 1 {
		reply = []byte(args[1] + "\n")
	}
	fmt.Println("ready")
	for range helperMaxRequests {
		conn, err := ln.Accept()
		if err != nil {
			return fmt.Errorf("accept on %s: %w", args[0], err)
		}
		go func() {
			defer conn.Close()
			if len(reply) > 0 {
				_ = conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
				_, _ = conn.Write(reply)
			}
			// Then hold the connection until the peer closes it, as a
			// real service holds an idle one (a checker's death watch
			// relies on that), for a bounded time.
			_ = conn.SetReadDeadline(time.Now().Add(helperIdleHold))
			_, _ = io.Copy(io.Discard, conn)
		}()
	}
	return fmt.Errorf("served %d connections, the most a helper serves", helperMaxRequests)
}

// tcpNetwork is "tcp6" for an [IPv6]:port, else "tcp4": the namespaces
// have IPv6 off unless a test turns it on, and a wildcard listener must
// not try it.
func tcpNetwork(addr string) string {
	if strings.HasPrefix(addr, "[") {
		return "tcp6"
	}
	return "tcp4"
}

func helperDialLoop(in io.Reader, out io.Writer) error {
	sc := bufio.NewScanner(in)
	w := bufio.NewWriter(out)
	for n := 0; sc.Scan(); n++ { // ends when the harness closes stdin
		if n >= helperMaxRequests {
			return fmt.Errorf("answered %d requests, the most a helper answers", n)
		}
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			return fmt.Errorf("bad request %q", sc.Text())
		}
		ms, err := strconv.Atoi(f[2])
		if err != nil {
			return fmt.Errorf("bad timeout in %q: %w", sc.Text(), err)
		}
		line, err := dialAndReadLine(f[1], time.Duration(ms)*time.Millisecond)
		if err != nil {
			fmt.Fprintf(w, "%s err %s\n", f[0], strings.ReplaceAll(err.Error(), "\n", " "))
		} else {
			fmt.Fprintf(w, "%s ok %s\n", f[0], line)
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
	return sc.Err()
}

func dialAndReadLine(addr string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	conn, err := net.DialTimeout(tcpNetwork(addr), addr, timeout)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(deadline)
	line, err := bufio.NewReader(conn).ReadString('\n')
	line = strings.TrimSpace(line)
	if err != nil && line == "" {
		return "", fmt.Errorf("read reply from %s: %w", addr, err)
	}
	if line == "" {
		return "", fmt.Errorf("empty reply from %s", addr)
	}
	return line, nil
}

func helperHTTPGet(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: get URL")
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(args[0])
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(os.Stdout, io.LimitReader(resp.Body, 16<<20)); err != nil {
		return fmt.Errorf("read body of %s: %w", args[0], err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", args[0], resp.Status)
	}
	return nil
}

// helperCommand runs the test binary in helper mode inside namespace ns
// ("": the test's own, for a helper that sends nothing). It dies with the
// test process (Pdeathsig) in case no cleanup runs.
func helperCommand(ns, mode string, args ...string) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find test binary: %w", err)
	}
	var cmd *exec.Cmd
	if ns == "" {
		cmd = exec.Command(self, args...)
	} else {
		cmd = exec.Command("ip", append([]string{"netns", "exec", ns, self}, args...)...)
	}
	cmd.Env = append(os.Environ(), helperModeEnv+"="+mode)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd, nil
}

// runHelperOnce runs a one-shot helper (helperGet) and returns its stdout.
func runHelperOnce(ns string, timeout time.Duration, mode string, args ...string) ([]byte, error) {
	cmd, err := helperCommand(ns, mode, args...)
	if err != nil {
		return nil, err
	}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start helper %s in %s: %w", mode, ns, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		err = fmt.Errorf("timed out after %s", timeout)
	}
	if err != nil {
		return []byte(stdout.String()), fmt.Errorf("helper %s %v in %s: %w: %s", mode, args, ns, err, strings.TrimSpace(stderr.String()))
	}
	return []byte(stdout.String()), nil
}

// ServerProcess is a long-running helper listener (a backend or a health
// endpoint) in one namespace, which the test can stop and start again.
type ServerProcess struct {
	t     *testing.T
	ns    string
	addr  string
	reply string
	mode  string // helperServe unless set

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// NewServerProcess starts a listener on addr in ns; reply is what every
// connection gets (empty: nothing, just the accept). Cleanup stops it.
func NewServerProcess(t *testing.T, ns, addr, reply string) *ServerProcess {
	t.Helper()
	s := &ServerProcess{t: t, ns: ns, addr: addr, reply: reply}
	t.Cleanup(s.Stop)
	s.Start()
	return s
}

// Start launches the listener and waits (bounded) for it to report ready.
func (s *ServerProcess) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.t.Fatalf("server %s in %s: already running", s.addr, s.ns)
	}
	args := []string{s.addr}
	if s.reply != "" {
		args = append(args, s.reply)
	}
	mode := s.mode
	if mode == "" {
		mode = helperServe
	}
	cmd, err := helperCommand(s.ns, mode, args...)
	if err != nil {
		s.t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start server %s in %s: %v", s.addr, s.ns, err)
	}
	ready := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- strings.TrimSpace(line) == "ready"
		_, _ = io.Copy(io.Discard, stdout)
	}()
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	s.cmd, s.exited = cmd, exited
	select {
	case ok := <-ready:
		if !ok {
			s.t.Fatalf("server %s in %s did not start: %s", s.addr, s.ns, stderr.String())
		}
	case <-time.After(10 * time.Second):
		s.t.Fatalf("server %s in %s: not ready after 10s", s.addr, s.ns)
	}
}

// NewHTTPServerProcess starts an HTTP server on addr in ns that answers
// every request with 200 "ok". Cleanup stops it.
func NewHTTPServerProcess(t *testing.T, ns, addr string) *ServerProcess {
	t.Helper()
	s := &ServerProcess{t: t, ns: ns, addr: addr, mode: helperHTTP}
	t.Cleanup(s.Stop)
	s.Start()
	return s
}

// Signal sends sig to the running server (SIGSTOP hangs it, SIGCONT
// resumes it).
func (s *ServerProcess) Signal(sig syscall.Signal) {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		s.t.Fatalf("server %s in %s: not running", s.addr, s.ns)
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("signal %v to server %s in %s: %v", sig, s.addr, s.ns, err)
	}
}

// Stop kills the listener (its socket closes with it) and waits for it.
func (s *ServerProcess) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		s.t.Errorf("server %s in %s (pid %d) did not exit after SIGKILL", s.addr, s.ns, s.cmd.Process.Pid)
	}
	s.cmd, s.exited = nil, nil
}

// lockedBuffer is written by exec's copier goroutine and read by the test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func helperServeHTTP(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: http-serve ADDR")
	}
	ln, err := net.Listen("tcp4", args[0])
	if err != nil {
		return fmt.Errorf("listen %s: %w", args[0], err)
	}
	fmt.Println("ready")
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") }),
		ReadHeaderTimeout: helperIdleHold,
	}
	return srv.Serve(ln)
}

func helperUDPEchoServe(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: udp-echo ADDR")
	}
	la, err := net.ResolveUDPAddr("udp4", args[0])
	if err != nil {
		return err
	}
	pc, err := net.ListenUDP("udp4", la)
	if err != nil {
		return fmt.Errorf("listen %s: %w", args[0], err)
	}
	pc.SetReadBuffer(4 << 20)
	// Two readers, so that a reply being written does not hold up the
	// next datagram; the process lives until it is stopped (or for
	// helperMaxLifetime).
	read := func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				// Not closed by anyone: a passing error, but no spin.
				time.Sleep(time.Millisecond)
				continue
			}
			pc.WriteToUDPAddrPort(buf[:n], from)
		}
	}
	go read()
	read()
	return nil
}
