package balancer

import (
	"bytes"
	"errors"
	"strconv"
)

// HTTP/1.x on the wire, as the http load balancer relays it: the request
// and response heads are parsed and re-emitted with the hop-by-hop headers
// replaced, bodies are passed through as they come, and only their framing
// (a length, chunks, or the connection's end) is followed to know where a
// message ends. Anything ambiguous about that framing is refused: a proxy
// and its backend that disagree on where a request ends are how requests
// get smuggled.

// httpMaxHead bounds a request or response head (nginx's
// large_client_header_buffers is 4 × 8k; HAProxy's bufsize is 16k).
const httpMaxHead = 32 << 10

var (
	errHeadIncomplete = errors.New("head incomplete")
	errHeadTooLarge   = errors.New("head too large")
)

// httpError is a request the proxy refuses, with the status it answers.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(msg string) error { return &httpError{400, msg} }

// headEnd finds the end of a head: the empty line, CRLF or bare LF. It
// returns the length of the head with that line, or -1.
func headEnd(b []byte) int {
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
var tokenChars = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range []byte("!#$%&'*+-.^_`|~") {
		t[c] = true
	}
	return t
}()

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

func (ct *connTokens) listed(name []byte) bool {
	for _, o := range ct.others {
		if bytes.EqualFold(o, name) {
			return true
		}
	}
	return false
}

// framing is how a message's body ends.
type framing struct {
	// length is the body's size, or -1.
	length  int64
	chunked bool
}

// header takes the headers a request and a response share the meaning of:
// the framing and Connection. ok: it was one of those.
func (f *framing) header(name, value []byte, conn *connTokens) (ok bool, err error) {
	switch {
	case bytes.EqualFold(name, hdrContentLength):
		return true, f.addLength(value)
	case bytes.EqualFold(name, hdrTransferEncode):
		return true, f.addTransferEncoding(value)
	case bytes.EqualFold(name, hdrConnection):
		conn.add(value)
		return true, nil
	}
	return false, nil
}

// addLength takes a Content-Length header: digits only, and several must
// agree.
func (f *framing) addLength(v []byte) error {
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil || n < 0 || len(v) == 0 || v[0] == '+' {
		return badRequest("invalid Content-Length")
	}
	if f.length >= 0 && f.length != n {
		return badRequest("conflicting Content-Length headers")
	}
	f.length = n
	return nil
}

// addTransferEncoding takes a Transfer-Encoding header. Only chunked, last,
// is understood: anything else could not be delimited.
func (f *framing) addTransferEncoding(v []byte) error {
	for len(v) > 0 {
		var c []byte
		c, v, _ = bytes.Cut(v, []byte(","))
		c = trimOWS(c)
		if len(c) == 0 {
			continue
		}
		if f.chunked || !bytes.EqualFold(c, []byte("chunked")) {
			return &httpError{501, "unsupported Transfer-Encoding"}
		}
		f.chunked = true
	}
	if !f.chunked {
		return badRequest("empty Transfer-Encoding")
	}
	return nil
}

// reqHead is a parsed request head.
type reqHead struct {
	method, target []byte
	minor          int // HTTP/1.minor
	body           framing
	conn           connTokens
	upgrade        []byte
	xff            [][]byte
	hasHost        bool
	// keepAlive: the client may send another request on the connection.
	keepAlive bool
}

func (h *reqHead) isHead() bool { return string(h.method) == "HEAD" }

// wantsUpgrade: a protocol switch (WebSocket) the backend may accept.
func (h *reqHead) wantsUpgrade() bool { return h.conn.upgrade && len(h.upgrade) > 0 }

// parseRequest parses the head in head (as found by headEnd).
func parseRequest(head []byte, h *reqHead) error {
	*h = reqHead{body: framing{length: -1}}
	first, err := headLines(head, func(line []byte) error {
		name, value, err := splitHeader(line)
		if err != nil {
			return err
		}
		if ok, err := h.body.header(name, value, &h.conn); ok {
			return err
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
			h.hasHost = true
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
	h.method, h.target = first[:sp1], first[sp1+1:sp2]
	for _, c := range h.method {
		if !tokenChars[c] {
			return badRequest("invalid method")
		}
	}
	if bytes.IndexByte(h.target, ' ') >= 0 {
		return badRequest("malformed request line")
	}
	switch string(first[sp2+1:]) {
	case "HTTP/1.1":
		h.minor = 1
		h.keepAlive = !h.conn.close
		if !h.hasHost {
			return badRequest("no Host header")
		}
	case "HTTP/1.0":
		h.keepAlive = h.conn.keepAlive && !h.conn.close
	default:
		return &httpError{505, "unsupported HTTP version"}
	}
	if h.body.chunked && h.body.length >= 0 {
		return badRequest("both Content-Length and Transfer-Encoding")
	}
	if h.body.chunked && h.minor == 0 {
		return badRequest("Transfer-Encoding in an HTTP/1.0 request")
	}
	return nil
}

// appendRequest emits the head the backend gets: the request line in
// HTTP/1.1, the client's headers but hop-by-hop ones, X-Forwarded-For with
// the client's address appended, X-Forwarded-Proto, and the connection
// headers of a keep-alive (or upgrade) connection to the backend. An
// HTTP/1.0 request without Host gets host, the address the client
// connected to: HTTP/1.1 requires one.
func appendRequest(out []byte, head []byte, h *reqHead, clientIP []byte, host func() string) []byte {
	out = append(out, h.method...)
	out = append(out, ' ')
	out = append(out, h.target...)
	out = append(out, " HTTP/1.1\r\n"...)
	headLines(head, func(line []byte) error {
		name := headerName(line)
		if hopByHop(name) || (len(name) >= len(hdrXFF) && (bytes.EqualFold(name, hdrXFF) || bytes.EqualFold(name, hdrXFP))) || h.conn.listed(name) {
			return nil
		}
		out = append(out, line...)
		out = append(out, '\r', '\n')
		return nil
	})
	out = append(out, "X-Forwarded-For: "...)
	for _, v := range h.xff {
		out = append(out, v...)
		out = append(out, ", "...)
	}
	out = append(out, clientIP...)
	out = append(out, "\r\nX-Forwarded-Proto: http\r\n"...)
	if !h.hasHost {
		out = append(out, "Host: "...)
		out = append(out, host()...)
		out = append(out, '\r', '\n')
	}
	if h.body.chunked {
		out = append(out, "Transfer-Encoding: chunked\r\n"...)
	}
	if h.wantsUpgrade() {
		out = append(out, "Connection: Upgrade\r\nUpgrade: "...)
		out = append(out, h.upgrade...)
		out = append(out, "\r\n"...)
	}
	return append(out, '\r', '\n')
}

// respHead is a parsed response head.
type respHead struct {
	code int
	body framing
	conn connTokens
	// closeDelimited: no length and no chunks, the body ends with the
	// connection.
	closeDelimited bool
	// reusable: the backend keeps the connection open after the body.
	reusable bool
}

// parseResponse parses a backend's response head; isHead: the request was
// a HEAD, whose response has no body whatever its headers say.
func parseResponse(head []byte, isHead bool, h *respHead) error {
	*h = respHead{body: framing{length: -1}}
	first, err := headLines(head, func(line []byte) error {
		name, value, err := splitHeader(line)
		if err != nil {
			return err
		}
		_, err = h.body.header(name, value, &h.conn)
		return err
	})
	if err != nil {
		return err
	}
	// HTTP/1.x SP 3DIGIT [SP reason]
	if len(first) < 12 || !bytes.HasPrefix(first, []byte("HTTP/1.")) || first[8] != ' ' || (len(first) > 12 && first[12] != ' ') {
		return errors.New("malformed status line")
	}
	code, err := strconv.Atoi(string(first[9:12]))
	if err != nil || code < 100 {
		return errors.New("malformed status code")
	}
	h.code = code
	minor := first[7]
	switch minor {
	case '1':
		h.reusable = !h.conn.close
	case '0':
		h.reusable = h.conn.keepAlive && !h.conn.close
	default:
		return errors.New("unsupported HTTP version")
	}
	if h.body.chunked {
		h.body.length = -1 // Transfer-Encoding wins (RFC 9112 6.3)
		h.reusable = h.reusable && minor == '1'
	}
	switch {
	case code < 200, code == 204, code == 304, isHead:
		h.body = framing{length: 0}
	case h.body.chunked, h.body.length >= 0:
	default:
		h.closeDelimited = true
		h.reusable = false
	}
	return nil
}

// appendResponse emits the head the client gets: the backend's status line
// and headers but hop-by-hop ones, with the framing and connection headers
// the proxy's side of the connection needs.
func appendResponse(out []byte, head []byte, h *respHead, keepAlive, upgrade bool) []byte {
	i := bytes.IndexByte(head, '\n')
	out = append(out, trimCR(head[:i])...)
	out = append(out, '\r', '\n')
	headLines(head, func(line []byte) error {
		name := headerName(line)
		if (hopByHop(name) && !(upgrade && bytes.EqualFold(name, hdrUpgrade))) || h.conn.listed(name) {
			return nil
		}
		out = append(out, line...)
		out = append(out, '\r', '\n')
		return nil
	})
	switch {
	case upgrade:
		out = append(out, "Connection: Upgrade\r\n"...)
	case h.body.chunked:
		out = append(out, "Transfer-Encoding: chunked\r\n"...)
	}
	if !keepAlive && !upgrade {
		out = append(out, "Connection: close\r\n"...)
	}
	return append(out, '\r', '\n')
}

// bodyReader follows a body's framing through the bytes that pass.
type bodyReader struct {
	// left: bytes of a sized body still to come; -1 for chunked and
	// close-delimited bodies.
	left    int64
	chunked bool
	cs      chunkScanner
	done    bool
}

func newBodyReader(f framing, closeDelimited bool) bodyReader {
	switch {
	case f.chunked:
		return bodyReader{left: -1, chunked: true}
	case closeDelimited:
		return bodyReader{left: -1}
	}
	return bodyReader{left: f.length, done: f.length == 0}
}

// take says how much of p belongs to the body, and whether the body ended
// there. A close-delimited body takes everything and ends at EOF.
func (br *bodyReader) take(p []byte) (int, error) {
	switch {
	case br.done:
		return 0, nil
	case br.chunked:
		n, done, err := br.cs.scan(p)
		br.done = done
		return n, err
	case br.left < 0:
		return len(p), nil
	}
	n := int(min(int64(len(p)), br.left))
	br.left -= int64(n)
	br.done = br.left == 0
	return n, nil
}

// chunkScanner walks chunked framing (RFC 9112 7.1) byte by byte: chunk
// size in hex, optional extensions, CRLF, the data, CRLF; after the last
// (0) chunk, trailer lines up to an empty one.
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
	csTrailer
	csTrailerLF
	csEndLF
)

var errChunked = errors.New("malformed chunked body")

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
			case c >= '0' && c <= '9', c >= 'a' && c <= 'f', c >= 'A' && c <= 'F':
				if cs.digits == 15 {
					return n, false, errChunked
				}
				cs.size = cs.size<<4 | int64(unhex(c))
				cs.digits++
			case (c == ';' || c == ' ' || c == '\t') && cs.digits > 0:
				cs.state, cs.line = csExt, 0
			case c == '\r' && cs.digits > 0:
				cs.state = csSizeLF
			case c == '\n' && cs.digits > 0:
				cs.endSize()
			default:
				return n, false, errChunked
			}
		case csExt:
			switch {
			case c == '\r':
				cs.state = csSizeLF
			case c == '\n':
				cs.endSize()
			default:
				if cs.line++; cs.line > maxChunkLine {
					return n, false, errChunked
				}
			}
		case csSizeLF:
			if c != '\n' {
				return n, false, errChunked
			}
			cs.endSize()
		case csDataCR:
			switch c {
			case '\r':
				cs.state = csDataLF
			case '\n':
				cs.state = csSize
			default:
				return n, false, errChunked
			}
		case csDataLF:
			if c != '\n' {
				return n, false, errChunked
			}
			cs.state = csSize
		case csTrailerStart:
			switch c {
			case '\r':
				cs.state = csEndLF
			case '\n':
				return n, true, nil
			default:
				cs.state, cs.line = csTrailer, 1
			}
		case csTrailer:
			switch {
			case c == '\r':
				cs.state = csTrailerLF
			case c == '\n':
				cs.state = csTrailerStart
			default:
				if cs.line++; cs.line > maxChunkLine {
					return n, false, errChunked
				}
			}
		case csTrailerLF:
			if c != '\n' {
				return n, false, errChunked
			}
			cs.state = csTrailerStart
		case csEndLF:
			if c != '\n' {
				return n, false, errChunked
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
