package checker

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

// Limits of what an http check reads: enough for any health endpoint, and
// bounded so a misbehaving peer cannot make the checker buffer megabytes.
const (
	maxHeaderBytes = 64 << 10
	maxBodyBytes   = 1 << 20
)

// httpProber passes when a request gets an expected status (any 2xx or 3xx
// unless told) and, if asked, a body that contains a string. Redirects are
// not followed: a 3xx is the answer of the server that was asked.
type httpProber struct {
	method       string
	url          string
	host         string // Host header; "" means the URL's
	headers      http.Header
	expect       []int32
	bodyContains string
	client       *http.Client
}

func newHTTPProber(scheme string) newProber {
	return func(check *pb.Check) (prober, error) {
		if err := onlyFor(check, scheme); err != nil {
			return nil, err
		}
		if err := hostPort(check.GetAddress()); err != nil {
			return nil, err
		}
		h := check.GetHttp() // nil: every default
		p := &httpProber{
			method:       h.GetMethod(),
			host:         h.GetHost(),
			headers:      http.Header{},
			expect:       slices.Clone(h.GetExpectStatus()),
			bodyContains: h.GetBodyContains(),
		}
		if p.method == "" {
			p.method = http.MethodGet
		}
		if !validToken(p.method) {
			return nil, fmt.Errorf("method %q is not an HTTP method", p.method)
		}
		path := h.GetPath()
		if path == "" {
			path = "/"
		}
		if !strings.HasPrefix(path, "/") {
			return nil, fmt.Errorf("path %q must start with /", path)
		}
		u, err := url.Parse(scheme + "://" + check.GetAddress() + path)
		if err != nil {
			return nil, fmt.Errorf("path %q: %w", path, err)
		}
		p.url = u.String()
		for _, s := range p.expect {
			if s < 100 || s > 599 {
				return nil, fmt.Errorf("expected status %d is not an HTTP status (100-599)", s)
			}
		}
		for k, v := range h.GetHeaders() {
			if !validToken(k) {
				return nil, fmt.Errorf("header name %q is not valid", k)
			}
			if !validHeaderValue(v) {
				return nil, fmt.Errorf("header %s: value %q is not valid", k, v)
			}
			p.headers.Set(k, v)
		}
		if p.host != "" && !validHost(p.host) {
			return nil, fmt.Errorf("host %q is not a valid Host header", p.host)
		}
		// The TLS server name is the host asked for, without a port; with
		// none given, the address's host (an IP is checked against the
		// certificate's IP addresses).
		serverName, _, err := net.SplitHostPort(p.host)
		if err != nil {
			serverName = p.host
		}
		if serverName == "" {
			serverName, _, _ = net.SplitHostPort(check.GetAddress())
		}
		p.client = &http.Client{
			Transport: &http.Transport{
				// Proxy is left nil: a health check asks the service
				// itself, whatever HTTP_PROXY says.
				DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
					return dialer(ctx).DialContext(ctx, network, addr)
				},
				TLSClientConfig: &tls.Config{
					ServerName:         serverName,
					InsecureSkipVerify: h.GetInsecureSkipVerify(), //nolint:gosec // the operator's choice, for self-signed certificates
				},
				// Every run opens its own connection: a kept-alive one
				// could pass while the listener no longer accepts.
				DisableKeepAlives:      true,
				MaxResponseHeaderBytes: maxHeaderBytes,
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		return p, nil
	}
}

func (p *httpProber) Probe(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, p.method, p.url, nil)
	if err != nil {
		return "", err
	}
	req.Header = p.headers.Clone()
	req.Header.Set("User-Agent", "keep-vip-checker")
	if p.host != "" {
		req.Host = p.host
	}
	resp, err := p.client.Do(req)
	if err != nil {
		// Already `GET "http://...": <reason>`.
		return "", err
	}
	defer resp.Body.Close()
	// No need to drain a body: the connection is not kept alive.
	if !p.statusOK(resp.StatusCode) {
		return "", fmt.Errorf("%s %s: status %s, want %s", p.method, p.url, resp.Status, p.wantStatus())
	}
	if p.bodyContains == "" {
		return "", nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes))
	if err != nil {
		return "", fmt.Errorf("%s %s: read body: %w", p.method, p.url, err)
	}
	if !strings.Contains(string(body), p.bodyContains) {
		return "", fmt.Errorf("%s %s: body (%d bytes read) lacks %q", p.method, p.url, len(body), p.bodyContains)
	}
	return "", nil
}

func (p *httpProber) statusOK(code int) bool {
	if len(p.expect) == 0 {
		return code >= 200 && code < 400
	}
	return slices.Contains(p.expect, int32(code))
}

func (p *httpProber) wantStatus() string {
	if len(p.expect) == 0 {
		return "2xx or 3xx"
	}
	s := make([]string, len(p.expect))
	for i, c := range p.expect {
		s[i] = fmt.Sprint(c)
	}
	return strings.Join(s, " or ")
}

// validToken tells whether s is an RFC 9110 token, the form of a method and
// a header name.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune("!#$%&'*+-.^_`|~", r):
		default:
			return false
		}
	}
	return true
}

// validHeaderValue refuses control characters (a CR or LF would split the
// request) other than tab.
func validHeaderValue(s string) bool {
	for _, r := range s {
		if (r < ' ' && r != '\t') || r == 0x7f {
			return false
		}
	}
	return true
}

// validHost accepts a host or host:port for the Host header.
func validHost(s string) bool {
	if strings.ContainsAny(s, " /?#@\\") || !validHeaderValue(s) {
		return false
	}
	u, err := url.Parse("http://" + s)
	return err == nil && u.Host == s
}
