package balancer

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// blackhole returns an address on 127.0.0.1 whose connects time out: a
// socket listening with a backlog of 0 and its one slot taken, so the
// kernel drops further SYNs.
func blackhole(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := (&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sa.(*syscall.SockaddrInet4).Port}).String()
	c, err := net.DialTimeout("tcp", addr, waitFor)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return addr
}

// startProxyBackend starts a tcp server that reads a PROXY protocol header
// and answers one line: "<source> <destination>" as the header gave them,
// or "none" for a LOCAL header.
func startProxyBackend(t *testing.T) string {
	t.Helper()
	return serveTCP(t, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(waitFor))
		h, err := proxyproto.Read(bufio.NewReader(c))
		if err != nil {
			fmt.Fprintf(c, "error %v\n", err)
			return
		}
		if h.Command == proxyproto.LOCAL {
			io.WriteString(c, "none\n")
			return
		}
		fmt.Fprintf(c, "v%d %s %s\n", h.Version, h.SourceAddr, h.DestinationAddr)
	})
}

// serveTCP listens on 127.0.0.1 until the test ends and runs handle on each
// connection in a goroutine of its own, closing the connection afterwards.
// It returns the address.
func serveTCP(t testing.TB, handle func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				// Out of descriptors (see TestLocalFaultsAtFDLimit):
				// a moment later.
				time.Sleep(5 * time.Millisecond)
				continue
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// startUDPServer starts a udp server on 127.0.0.1 that calls answer with
// each datagram it gets (p is reused: answer copies what it keeps) and
// returns its address; it stops with the test.
func startUDPServer(tb testing.TB, answer func(pc *net.UDPConn, p []byte, from netip.AddrPort)) string {
	tb.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			k, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			answer(pc, buf[:k], from)
		}
	}()
	return pc.LocalAddr().String()
}

// startUDPEcho starts a udp server on 127.0.0.1 that answers each datagram
// with "<name> <datagram>". It returns its address and a counter of the
// datagrams it got.
func startUDPEcho(t *testing.T, name string) (string, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	out := make([]byte, 0, 65536+len(name)+1)
	a := startUDPServer(t, func(pc *net.UDPConn, p []byte, from netip.AddrPort) {
		n.Add(1)
		out = append(append(append(out[:0], name...), ' '), p...)
		pc.WriteToUDPAddrPort(out, from)
	})
	return a, &n
}

// startHTTPBackend starts an http server that answers "<name> <path>" and
// echoes what it received in headers: Host, X-Forwarded-For and
// X-Forwarded-Proto.
func startHTTPBackend(t *testing.T, name string, opts ...func(*http.Server)) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d, err := time.ParseDuration(r.URL.Query().Get("sleep")); err == nil {
			time.Sleep(d)
		}
		w.Header().Set("X-policy.Backend", name)
		w.Header().Set("X-Got-Host", r.Host)
		w.Header().Set("X-Got-Forwarded-For", strings.Join(r.Header["X-Forwarded-For"], "|"))
		w.Header().Set("X-Got-Forwarded-Proto", r.Header.Get("X-Forwarded-Proto"))
		if r.URL.Path == "/status/500" {
			w.WriteHeader(http.StatusInternalServerError)
		}
		fmt.Fprintf(w, "%s %s", name, r.URL.Path)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	for _, o := range opts {
		o(srv.Config)
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

func hostOf(srv *httptest.Server) string { return strings.TrimPrefix(srv.URL, "http://") }

func typed(l *pb.LoadBalancer, typ string) *pb.LoadBalancer {
	l.Type = typ
	return l
}

// get asks the load balancer for path with a fresh client and returns the
// response with its body read.
func get(t *testing.T, front, path string, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+front+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "Host" {
			req.Host = header[i+1]
			continue
		}
		req.Header.Add(header[i], header[i+1])
	}
	client := &http.Client{Timeout: waitFor, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}
