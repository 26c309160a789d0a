// Package httpwire is HTTP/1.x on the wire, as the http load balancer relays it: the request
// and response heads are parsed and re-emitted with the hop-by-hop headers
// replaced, bodies are passed through as they come, and only their framing
// (a length, chunks, or the connection's end) is followed to know where a
// message ends. Anything ambiguous about that framing is refused: a proxy
// and its backend that disagree on where a request ends are how requests
// get smuggled.
//
// It knows nothing of sockets or connections: it parses bytes and appends
// bytes, so the fuzz targets and unit tests here run without a network.
package httpwire

import (
	"bytes"
	"errors"
	"strconv"
)

// MaxHead bounds a request or response head (nginx's
// large_client_header_buffers is 4 × 8k; HAProxy's bufsize is 16k).
const MaxHead = 32 << 10

var (
	errHeadIncomplete = errors.New("head incomplete")
	errHeadTooLarge   = errors.New("head too large")
)

// Error is a request the proxy refuses, with the status it answers.
type Error struct {
	Code int
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

func badRequest(msg string) error { return &Error{400, msg} }

// HeadEnd finds the end of a head: the empty line, CRLF or bare LF. It
// returns the length of the head with that line, or -1.
func HeadEnd(b []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		i += j + 1
		switch {
		case i < len(b) && b[i] == '\n':
			return i + 1
		case i+1 < len(b) && b[i] == '\r' && b[i+1] == '\n':
			return i + 2
		}
	}
}

// EmptyLine is the length of the empty line b starts with (CRLF, or a
// bare LF), or 0.
func EmptyLine(b []byte) int {
	switch {
	case len(b) > 0 && b[0] == '\n':
		return 1
	case len(b) > 1 && b[0] == '\r' && b[1] == '\n':
		return 2
	}
	return 0
}

// headLines calls f with each line of a head after the first, without its
// line end, and stops at the empty line.
func headLines(head []byte, f func(line []byte) error) ([]byte, error) {
	i := bytes.IndexByte(head, '\n')
	first := trimCR(head[:i])
	rest := head[i+1:]
	for len(rest) > 0 {
		j := bytes.IndexByte(rest, '\n')
		line := trimCR(rest[:j])
		rest = rest[j+1:]
		if len(line) == 0 {
			break
		}
		if err := f(line); err != nil {
			return nil, err
		}
	}
	return first, nil
}

func trimCR(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\r' {
		return b[:n-1]
	}
	return b
}

// splitHeader splits "Name: value", refusing what a backend could read
// differently: no name, a name with other than token characters (a space
// before the colon among them) and a folded line.
func splitHeader(line []byte) (name, value []byte, err error) {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		return nil, nil, badRequest("malformed header line")
	}
	name = line[:colon]
	for _, c := range name {
		if !tokenChars[c] {
			return nil, nil, badRequest("invalid header name")
		}
	}
	value = trimOWS(line[colon+1:])
	for _, c := range value {
		if c < ' ' && c != '\t' || c == 0x7f {
			return nil, nil, badRequest("control character in a header value")
		}
	}
	return name, value, nil
}

// headerName is the name of a header line already validated.
func headerName(line []byte) []byte {
	return line[:bytes.IndexByte(line, ':')]
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// tokenChars are the characters of an HTTP token (RFC 9110 5.6.2).
var tokenChars = alnumAnd("!#$%&'*+-.^_`|~")

// alnumAnd is a table of the letters, the digits and extra.
func alnumAnd(extra string) (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range []byte(extra) {
		t[c] = true
	}
	return t
}

// Header names the proxy handles itself, matched case-insensitively.
var (
	hdrConnection      = []byte("Connection")
	hdrContentLength   = []byte("Content-Length")
	hdrTransferEncode  = []byte("Transfer-Encoding")
	hdrUpgrade         = []byte("Upgrade")
	hdrKeepAlive       = []byte("Keep-Alive")
	hdrProxyConnection = []byte("Proxy-Connection")
	hdrTE              = []byte("TE")
	hdrTrailer         = []byte("Trailer")
	hdrXFF             = []byte("X-Forwarded-For")
	hdrXFP             = []byte("X-Forwarded-Proto")
	hdrHost            = []byte("Host")
)

// hopByHop: headers that describe one connection, never passed on (RFC
// 9110 7.6.1); Transfer-Encoding is re-emitted by the proxy itself. Most
// headers are ruled out by their length alone.
func hopByHop(name []byte) bool {
	var h []byte
	switch len(name) {
	case 2:
		h = hdrTE
	case 7:
		if bytes.EqualFold(name, hdrTrailer) {
			return true
		}
		h = hdrUpgrade
	case 10:
		if bytes.EqualFold(name, hdrConnection) {
			return true
		}
		h = hdrKeepAlive
	case 16:
		h = hdrProxyConnection
	case 17:
		h = hdrTransferEncode
	default:
		return false
	}
	return bytes.EqualFold(name, h)
}

// connTokens is what a Connection header says.
type connTokens struct {
	close, keepAlive, upgrade bool
	// others are header names the sender marked hop-by-hop.
	others [][]byte
}

func (ct *connTokens) add(value []byte) {
	for len(value) > 0 {
		var tok []byte
		tok, value, _ = bytes.Cut(value, []byte(","))
		tok = trimOWS(tok)
		switch {
		case len(tok) == 0:
		case bytes.EqualFold(tok, []byte("close")):
			ct.close = true
		case bytes.EqualFold(tok, []byte("keep-alive")):
			ct.keepAlive = true
		case bytes.EqualFold(tok, []byte("upgrade")):
			ct.upgrade = true
		default:
			ct.others = append(ct.others, tok)
		}
	}
}

// listed: the sender marked name hop-by-hop. Host never is: a backend
// that lost it would route the request by something else than the proxy
// saw. (The framing headers never pass on as they came: see framing.)
func (ct *connTokens) listed(name []byte) bool {
	if len(ct.others) == 0 || bytes.EqualFold(name, hdrHost) {
		return false
	}
	for _, o := range ct.others {
		if bytes.EqualFold(o, name) {
			return true
		}
	}
	return false
}

// Framing is how a message's body ends (RFC 9112 6). It is decided in one
// place: header collects what Content-Length and Transfer-Encoding say,
// request or response decides, and appendFraming re-emits the result. The
// framing headers a sender wrote are never passed on as they came (see
// dropped), so no later hop, and no Connection header, can make a backend
// or a client read a body's end elsewhere than the proxy did.
type Framing struct {
	// length is the body's size, or -1: none was given.
	Length  int64
	Chunked bool
	// hasTE: a Transfer-Encoding header came; otherCoding: it named a
	// coding other than chunked.
	hasTE, otherCoding bool
	// fault is the first thing wrong with the framing headers, for
	// request or response to refuse.
	fault string
}

func newFraming() Framing { return Framing{Length: -1} }

// header takes the headers a request and a response share the meaning of:
// the framing and Connection. It says whether name was one of those.
func (f *Framing) header(name, value []byte, conn *connTokens) bool {
	switch {
	case len(name) == len(hdrContentLength) && bytes.EqualFold(name, hdrContentLength):
		f.addLength(value)
	case len(name) == len(hdrTransferEncode) && bytes.EqualFold(name, hdrTransferEncode):
		f.addTransferEncoding(value)
	case len(name) == len(hdrConnection) && bytes.EqualFold(name, hdrConnection):
		conn.add(value)
	default:
		return false
	}
	return true
}

func (f *Framing) setFault(msg string) {
	if f.fault == "" {
		f.fault = msg
	}
}

// addLength takes a Content-Length header: 1*DIGIT and nothing else (no
// sign, no list, no inner space), and several must agree.
func (f *Framing) addLength(v []byte) {
	n, ok := parseLength(v)
	switch {
	case !ok:
		f.setFault("invalid Content-Length")
	case f.Length >= 0 && f.Length != n:
		f.setFault("conflicting Content-Length headers")
	default:
		f.Length = n
	}
}

// parseLength reads 1*DIGIT, up to 18 of them: no overflow.
func parseLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return -1, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return -1, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// addTransferEncoding takes a Transfer-Encoding header (several add up).
// chunked must come once, last: after it nothing could be delimited.
func (f *Framing) addTransferEncoding(v []byte) {
	f.hasTE = true
	for len(v) > 0 {
		var c []byte
		c, v, _ = bytes.Cut(v, []byte(","))
		c = trimOWS(c)
		if len(c) == 0 {
			continue
		}
		if f.Chunked {
			f.setFault("Transfer-Encoding does not end in chunked")
		}
		if bytes.EqualFold(c, []byte("chunked")) {
			f.Chunked = true
		} else {
			f.otherCoding = true
		}
	}
}

// request decides a request's framing (RFC 9112 6.1, 6.3): anything a
// backend could delimit otherwise is refused.
func (f *Framing) request(minor int) error {
	switch {
	case f.fault != "":
		return badRequest(f.fault)
	case !f.hasTE:
		return nil
	case f.Length >= 0:
		return badRequest("both Content-Length and Transfer-Encoding")
	case minor == 0:
		return badRequest("Transfer-Encoding in an HTTP/1.0 request")
	case !f.Chunked:
		return badRequest("Transfer-Encoding does not end in chunked")
	case f.otherCoding:
		return &Error{501, "unsupported Transfer-Encoding"}
	}
	return nil
}

// response decides a response's framing. A Transfer-Encoding overrides a
// Content-Length, which is dropped (RFC 9112 6.3); closeAfter: the
// backend's connection must not carry another request after such a
// response.
func (f *Framing) response(minor byte) (closeAfter bool, err error) {
	switch {
	case f.fault != "":
		return false, errors.New(f.fault)
	case !f.hasTE:
		return false, nil
	case minor == '0':
		return false, errors.New("Transfer-Encoding in an HTTP/1.0 response")
	case !f.Chunked || f.otherCoding:
		return false, errors.New("unsupported Transfer-Encoding")
	case f.Length >= 0:
		f.Length = -1
		return true, nil
	}
	return false, nil
}

// appendFraming emits the framing headers as decided.
func appendFraming(out []byte, f *Framing) []byte {
	switch {
	case f.Chunked:
		out = append(out, "Transfer-Encoding: chunked\r\n"...)
	case f.Length >= 0:
		out = append(out, "Content-Length: "...)
		out = strconv.AppendInt(out, f.Length, 10)
		out = append(out, '\r', '\n')
	}
	return out
}

// dropped: a header never passed on as it came, either way: hop-by-hop
// ones (RFC 9110 7.6.1), Content-Length (re-emitted by appendFraming) and
// those the sender listed in Connection.
func dropped(name []byte, conn *connTokens) bool {
	return hopByHop(name) || (len(name) == len(hdrContentLength) && bytes.EqualFold(name, hdrContentLength)) || conn.listed(name)
}

// RequestHead is a parsed request head.
type RequestHead struct {
	Method, target []byte
	Minor          int // HTTP/1.minor
	Body           Framing
	conn           connTokens
	upgrade        []byte
	xff            [][]byte
	hasHost        bool
	// authority: the host of an absolute-form target, which replaces the
	// Host header (RFC 9112 3.2.2); target is then its origin-form.
	authority []byte
	// expect: an Expect header came; an HTTP/1.0 one is dropped (RFC
	// 9110 10.1.1: the expectation is ignored).
	expect bool
	// keepAlive: the client may send another request on the connection.
	KeepAlive bool
}

func (h *RequestHead) IsHead() bool { return string(h.Method) == "HEAD" }

// wantsUpgrade: a protocol switch (WebSocket) the backend may accept;
// HTTP/1.1 only, and never to h2c: an HTTP/2 tunnel would carry requests
// the proxy never reads (the published "h2c smuggling"), without its
// X-Forwarded-For.
func (h *RequestHead) WantsUpgrade() bool {
	return h.conn.upgrade && len(h.upgrade) > 0 && h.Minor == 1 && !containsFold(h.upgrade, []byte("h2c"))
}

func containsFold(s, sub []byte) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if bytes.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

var hdrExpect = []byte("Expect")

// ParseRequest parses the head in head (as found by HeadEnd).
func ParseRequest(head []byte, h *RequestHead) error {
	*h = RequestHead{Body: newFraming()}
	first, err := headLines(head, func(line []byte) error {
		name, value, err := splitHeader(line)
		if err != nil {
			return err
		}
		if h.Body.header(name, value, &h.conn) {
			return nil
		}
		switch {
		case bytes.EqualFold(name, hdrUpgrade):
			h.upgrade = value
		case bytes.EqualFold(name, hdrXFF):
			h.xff = append(h.xff, value)
		case bytes.EqualFold(name, hdrHost):
			if h.hasHost {
				return badRequest("more than one Host header")
			}
			if !validHost(value) {
				return badRequest("invalid Host header")
			}
			h.hasHost = true
		case bytes.EqualFold(name, hdrExpect):
			h.expect = true
		}
		return nil
	})
	if err != nil {
		return err
	}
	// METHOD SP request-target SP HTTP/1.x
	sp1 := bytes.IndexByte(first, ' ')
	sp2 := bytes.LastIndexByte(first, ' ')
	if sp1 <= 0 || sp2 <= sp1+1 {
		return badRequest("malformed request line")
	}
	h.Method, h.target = first[:sp1], first[sp1+1:sp2]
	for _, c := range h.Method {
		if !tokenChars[c] {
			return badRequest("invalid method")
		}
	}
	switch v := first[sp2+1:]; {
	case string(v) == "HTTP/1.1":
		h.Minor = 1
	case string(v) == "HTTP/1.0":
	case len(v) == 8 && string(v[:5]) == "HTTP/" && isDigit(v[5]) && v[6] == '.' && isDigit(v[7]):
		return &Error{505, "unsupported HTTP version"}
	default:
		return badRequest("malformed request line")
	}
	if h.target, h.authority, err = requestTarget(h.Method, h.target); err != nil {
		return err
	}
	if h.Minor == 1 && !h.hasHost {
		return badRequest("no Host header")
	}
	if err := h.Body.request(h.Minor); err != nil {
		return err
	}
	if h.Minor == 1 {
		h.KeepAlive = !h.conn.close
	} else {
		h.KeepAlive = h.conn.keepAlive && !h.conn.close
	}
	return nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// requestTarget validates a request-target (RFC 9112 3.2) and returns
// what the backend gets, in origin-form, with the authority of an
// absolute-form one. Control characters, spaces and a fragment are
// refused; so are CONNECT (a reverse proxy tunnels nowhere) and the
// authority-form it uses.
func requestTarget(method, t []byte) (target, authority []byte, err error) {
	for i, c := range t {
		if c <= ' ' || c == 0x7f || c == '#' || c == '%' && !pctEncoded(t[i:]) {
			return nil, nil, badRequest("invalid character in the request-target")
		}
	}
	switch {
	case string(method) == "CONNECT":
		return nil, nil, &Error{501, "CONNECT is not supported"}
	case t[0] == '/':
		return t, nil, nil
	case len(t) == 1 && t[0] == '*':
		if string(method) != "OPTIONS" {
			return nil, nil, badRequest("asterisk-form request-target outside OPTIONS")
		}
		return t, nil, nil
	}
	scheme, rest, ok := bytes.Cut(t, []byte("://"))
	if !ok || !(bytes.EqualFold(scheme, []byte("http")) || bytes.EqualFold(scheme, []byte("https"))) {
		return nil, nil, badRequest("invalid request-target")
	}
	end := bytes.IndexAny(rest, "/?")
	if end < 0 {
		end = len(rest)
	}
	authority, target = rest[:end], rest[end:]
	if len(authority) == 0 || !validHost(authority) {
		return nil, nil, badRequest("invalid authority in the request-target")
	}
	switch {
	case len(target) == 0:
		target = []byte("/")
	case target[0] == '?':
		target = append([]byte("/"), target...)
	}
	return target, authority, nil
}

// hostChars are those of a reg-name or an IPv4 address (RFC 3986 3.2.2):
// no userinfo, nothing that ends an authority, and no percent-encoding
// (which names a host otherwise to each reader: net/http refuses most).
var hostChars = alnumAnd("-._~!$&'()*+,;=")

// validHost: uri-host [":" port], the host an IPv6 literal in brackets or
// of hostChars, the port digits (RFC 3986 3.2.2, 3.2.3). Empty is valid:
// Host may be empty.
func validHost(v []byte) bool {
	host, port := v, []byte(nil)
	if len(v) > 0 && v[0] == '[' {
		end := bytes.IndexByte(v, ']')
		if end < 0 {
			return false
		}
		for _, c := range v[1:end] {
			if !isHex(c) && c != ':' && c != '.' {
				return false
			}
		}
		host, port = nil, v[end+1:]
	} else if i := bytes.IndexByte(v, ':'); i >= 0 {
		host, port = v[:i], v[i:]
	}
	for _, c := range host {
		if !hostChars[c] {
			return false
		}
	}
	if len(port) == 0 {
		return true
	}
	if port[0] != ':' {
		return false
	}
	for _, c := range port[1:] {
		if !isDigit(c) {
			return false
		}
	}
	return true
}

// pctEncoded: p starts with "%" HEXDIG HEXDIG.
func pctEncoded(p []byte) bool {
	return len(p) >= 3 && isHex(p[1]) && isHex(p[2])
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// AppendRequest emits the head the backend gets: the request line with the
// target in origin-form, the client's headers but those dropped,
// X-Forwarded-For with the client's address appended, X-Forwarded-Proto,
// the framing as decided, and the connection headers of a keep-alive (or
// upgrade) connection to the backend. An HTTP/1.0 request goes as one (a
// backend must not answer it in chunks the client cannot read), asking
// for keep-alive; without Host it gets host, the address the client
// connected to.
func AppendRequest(out []byte, head []byte, h *RequestHead, clientIP []byte, host func() string) []byte {
	out = append(out, h.Method...)
	out = append(out, ' ')
	out = append(out, h.target...)
	if h.Minor == 0 {
		out = append(out, " HTTP/1.0\r\n"...)
	} else {
		out = append(out, " HTTP/1.1\r\n"...)
	}
	headLines(head, func(line []byte) error {
		name := headerName(line)
		switch {
		case dropped(name, &h.conn):
		case len(name) >= len(hdrXFF) && (bytes.EqualFold(name, hdrXFF) || bytes.EqualFold(name, hdrXFP)):
		case h.authority != nil && bytes.EqualFold(name, hdrHost):
		case h.expect && h.Minor == 0 && bytes.EqualFold(name, hdrExpect):
		default:
			out = append(out, line...)
			out = append(out, '\r', '\n')
		}
		return nil
	})
	out = append(out, "X-Forwarded-For: "...)
	for _, v := range h.xff {
		out = append(out, v...)
		out = append(out, ", "...)
	}
	out = append(out, clientIP...)
	out = append(out, "\r\nX-Forwarded-Proto: http\r\n"...)
	switch {
	case h.authority != nil:
		out = append(out, "Host: "...)
		out = append(out, h.authority...)
		out = append(out, '\r', '\n')
	case !h.hasHost:
		out = append(out, "Host: "...)
		out = append(out, host()...)
		out = append(out, '\r', '\n')
	}
	out = appendFraming(out, &h.Body)
	switch {
	case h.WantsUpgrade():
		out = append(out, "Connection: Upgrade\r\nUpgrade: "...)
		out = append(out, h.upgrade...)
		out = append(out, "\r\n"...)
	case h.Minor == 0:
		out = append(out, "Connection: keep-alive\r\n"...)
	}
	return append(out, '\r', '\n')
}

// ResponseHead is a parsed response head.
type ResponseHead struct {
	Code int
	// reason is the status line's reason phrase, checked.
	reason []byte
	Body   Framing
	// noBody: the status or a HEAD request rules a body out; declared is
	// the Content-Length such a response may carry as metadata (HEAD,
	// 304), -1 for none.
	noBody   bool
	declared int64
	conn     connTokens
	// closeDelimited: no length and no chunks, the body ends with the
	// connection.
	CloseDelimited bool
	// reusable: the backend keeps the connection open after the body.
	Reusable bool
}

// ParseResponse parses a backend's response head; isHead: the request was
// a HEAD, whose response has no body whatever its headers say.
func ParseResponse(head []byte, isHead bool, h *ResponseHead) error {
	*h = ResponseHead{Body: newFraming(), declared: -1}
	first, err := headLines(head, func(line []byte) error {
		name, value, err := splitHeader(line)
		if err != nil {
			return err
		}
		h.Body.header(name, value, &h.conn)
		return nil
	})
	if err != nil {
		return err
	}
	// HTTP/1.x SP 3DIGIT [SP reason]
	if len(first) < 12 || !bytes.HasPrefix(first, []byte("HTTP/1.")) || first[8] != ' ' || (len(first) > 12 && first[12] != ' ') {
		return errors.New("malformed status line")
	}
	code, err := strconv.Atoi(string(first[9:12]))
	if err != nil || code < 100 || code > 599 || !isDigit(first[9]) {
		return errors.New("malformed status code")
	}
	h.Code = code
	if len(first) > 12 {
		h.reason = first[13:]
		for _, c := range h.reason {
			if c < ' ' && c != '\t' || c == 0x7f {
				return errors.New("control character in the reason phrase")
			}
		}
	}
	minor := first[7]
	switch minor {
	case '1':
		h.Reusable = !h.conn.close
	case '0':
		h.Reusable = h.conn.keepAlive && !h.conn.close
	default:
		return errors.New("unsupported HTTP version")
	}
	closeAfter, err := h.Body.response(minor)
	if err != nil {
		return err
	}
	if closeAfter {
		h.Reusable = false
	}
	switch {
	case code < 200, code == 204:
		h.Body, h.noBody = Framing{Length: 0}, true
	case code == 304, isHead:
		if !h.Body.Chunked {
			h.declared = h.Body.Length
		}
		h.Body, h.noBody = Framing{Length: 0}, true
	case h.Body.Chunked, h.Body.Length >= 0:
	default:
		h.CloseDelimited = true
		h.Reusable = false
	}
	return nil
}

// AppendResponse emits the head the client gets: HTTP/1.1 with the
// backend's status, its headers but those dropped, and the framing and
// connection headers the proxy's side of the connection needs. An interim
// (1xx) answer gets no framing and no connection headers.
func AppendResponse(out []byte, head []byte, h *ResponseHead, keepAlive, upgrade bool) []byte {
	out = append(out, "HTTP/1.1 "...)
	out = strconv.AppendInt(out, int64(h.Code), 10)
	out = append(out, ' ')
	out = append(out, h.reason...)
	out = append(out, '\r', '\n')
	headLines(head, func(line []byte) error {
		name := headerName(line)
		if dropped(name, &h.conn) && !(upgrade && bytes.EqualFold(name, hdrUpgrade)) {
			return nil
		}
		out = append(out, line...)
		out = append(out, '\r', '\n')
		return nil
	})
	switch {
	case upgrade:
		out = append(out, "Connection: Upgrade\r\n"...)
	case h.Code < 200:
		return append(out, '\r', '\n')
	case h.noBody:
		if h.declared >= 0 {
			out = append(out, "Content-Length: "...)
			out = strconv.AppendInt(out, h.declared, 10)
			out = append(out, '\r', '\n')
		}
	default:
		out = appendFraming(out, &h.Body)
	}
	if !keepAlive && !upgrade {
		out = append(out, "Connection: close\r\n"...)
	}
	return append(out, '\r', '\n')
}

// BodyReader follows a body's framing through the bytes that pass.
type BodyReader struct {
	// left: bytes of a sized body still to come; -1 for chunked and
	// close-delimited bodies.
	left    int64
	chunked bool
	cs      chunkScanner
	Done    bool
}

func NewBodyReader(f Framing, closeDelimited bool) BodyReader {
	switch {
	case f.Chunked:
		return BodyReader{left: -1, chunked: true}
	case closeDelimited:
		return BodyReader{left: -1}
	}
	return BodyReader{left: f.Length, Done: f.Length == 0}
}

// Valid says whether p, the bytes of the body already at hand, frames
// well so far; the reader itself does not move.
func (br *BodyReader) Valid(p []byte) bool {
	if !br.chunked || len(p) == 0 {
		return true
	}
	cs := br.cs
	_, _, err := cs.scan(p)
	return err == nil
}

// Take says how much of p belongs to the body, and whether the body ended
// there. A close-delimited body takes everything and ends at EOF.
func (br *BodyReader) Take(p []byte) (int, error) {
	switch {
	case br.Done:
		return 0, nil
	case br.chunked:
		n, done, err := br.cs.scan(p)
		br.Done = done
		return n, err
	case br.left < 0:
		return len(p), nil
	}
	n := int(min(int64(len(p)), br.left))
	br.left -= int64(n)
	br.Done = br.left == 0
	return n, nil
}

// chunkScanner walks chunked framing (RFC 9112 7.1) byte by byte: chunk
// size in hex, optional extensions, CRLF, the data, CRLF; after the last
// (0) chunk, trailer fields up to an empty line. The chunks pass on as
// they came, so the scanner accepts only the strict grammar: a bare LF, a
// control character, a trailer line that is not a field could each be
// read otherwise by the next hop, and so could whitespace after the size
// (RFC 9112 allows it before an extension; net/http, among others, does
// not).
type chunkScanner struct {
	state  uint8
	size   int64
	digits int
	left   int64
	line   int // bytes of the current extension or trailer line
}

const (
	csSize = iota
	csExt
	csSizeLF
	csData
	csDataCR
	csDataLF
	csTrailerStart
	csTrailerName
	csTrailer
	csTrailerLF
	csEndLF
)

var ErrChunked = errors.New("malformed chunked body")

// maxChunkLine bounds a chunk extension or trailer line.
const maxChunkLine = 4096

func (cs *chunkScanner) scan(p []byte) (n int, done bool, err error) {
	for n < len(p) {
		if cs.state == csData {
			k := int(min(int64(len(p)-n), cs.left))
			n += k
			cs.left -= int64(k)
			if cs.left == 0 {
				cs.state = csDataCR
			}
			continue
		}
		c := p[n]
		n++
		switch cs.state {
		case csSize:
			switch {
			case isHex(c):
				if cs.digits == 15 {
					return n, false, ErrChunked
				}
				cs.size = cs.size<<4 | int64(unhex(c))
				cs.digits++
			case c == ';' && cs.digits > 0:
				cs.state, cs.line = csExt, 0
			case c == '\r' && cs.digits > 0:
				cs.state = csSizeLF
			default:
				return n, false, ErrChunked
			}
		case csExt:
			switch {
			case c == '\r':
				cs.state = csSizeLF
			case c < ' ' && c != '\t' || c == 0x7f:
				return n, false, ErrChunked
			default:
				if cs.line++; cs.line > maxChunkLine {
					return n, false, ErrChunked
				}
			}
		case csSizeLF:
			if c != '\n' {
				return n, false, ErrChunked
			}
			cs.endSize()
		case csDataCR:
			if c != '\r' {
				return n, false, ErrChunked
			}
			cs.state = csDataLF
		case csDataLF:
			if c != '\n' {
				return n, false, ErrChunked
			}
			cs.state = csSize
		case csTrailerStart:
			switch {
			case c == '\r':
				cs.state = csEndLF
			case tokenChars[c]:
				cs.state, cs.line = csTrailerName, 1
			default:
				return n, false, ErrChunked
			}
		case csTrailerName, csTrailer:
			switch {
			case cs.state == csTrailerName && c == ':':
				cs.state = csTrailer
			case cs.state == csTrailerName && !tokenChars[c]:
				return n, false, ErrChunked
			case cs.state == csTrailer && c == '\r':
				cs.state = csTrailerLF
			case c < ' ' && c != '\t' || c == 0x7f:
				return n, false, ErrChunked
			}
			if cs.line++; cs.line > maxChunkLine {
				return n, false, ErrChunked
			}
		case csTrailerLF:
			if c != '\n' {
				return n, false, ErrChunked
			}
			cs.state = csTrailerStart
		case csEndLF:
			if c != '\n' {
				return n, false, ErrChunked
			}
			return n, true, nil
		}
	}
	return n, false, nil
}

func (cs *chunkScanner) endSize() {
	if cs.size == 0 {
		cs.state = csTrailerStart
	} else {
		cs.state, cs.left = csData, cs.size
	}
	cs.size, cs.digits = 0, 0
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}
