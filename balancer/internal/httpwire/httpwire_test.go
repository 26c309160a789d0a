package httpwire

import (
	"bufio"
	"errors"
	"net/http"
	"strings"
	"testing"
)

func TestParseRequestRefusesAmbiguousFraming(t *testing.T) {
	for _, tc := range []struct {
		name, head string
		code       int // 0: accepted
	}{
		{"plain get", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0},
		{"bare LF", "GET / HTTP/1.1\nHost: a\n\n", 0},
		{"sized", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", 0},
		{"same length twice", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 0},
		{"chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 0},
		{"two lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400},
		{"length and chunked", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"signed length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400},
		{"hex length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", 400},
		{"gzip coding", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400},
		{"gzip then chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
		{"chunked twice", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400},
		{"chunked then identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n", 400},
		{"chunked with a parameter", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", 400},
		{"chunked misspelt", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 400},
		{"empty coding list", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,\r\n\r\n", 400},
		{"chunked upper case", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n", 0},
		{"chunked with a tab before", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n\r\n", 0},
		{"chunked with a vertical tab", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \vchunked\r\n\r\n", 400},
		{"length in a list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", 400},
		{"length with inner space", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n", 400},
		{"negative length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400},
		{"empty length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 400},
		{"huge length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400},
		{"length with leading zeros", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 005\r\n\r\n", 0},
		{"length then a bad one", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5x\r\n\r\n", 400},
		{"length hidden by Connection", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: Content-Length\r\n\r\n", 0},
		{"tab before colon", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding\t: chunked\r\n\r\n", 400},
		{"CR in a value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\rX-B: 2\r\n\r\n", 400},
		{"folded with a tab", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\t2\r\n\r\n", 400},
		{"empty name", "GET / HTTP/1.1\r\nHost: a\r\n: 1\r\n\r\n", 400},
		{"control in target", "GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"DEL in target", "GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"fragment in target", "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"relative target", "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"absolute target", "GET http://shop.example/a?b HTTP/1.1\r\nHost: other\r\n\r\n", 0},
		{"absolute target with userinfo", "GET http://u@shop.example/ HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"absolute target, no authority", "GET http:///a HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"absolute target, other scheme", "GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"asterisk outside OPTIONS", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"asterisk in OPTIONS", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 0},
		{"CONNECT", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501},
		{"Host with a slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400},
		{"Host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400},
		{"empty Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", 0},
		{"Host with a port", "GET / HTTP/1.1\r\nHost: a.example:8080\r\n\r\n", 0},
		{"Host an IPv6 literal", "GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n", 0},
		{"Host with an empty port", "GET / HTTP/1.1\r\nHost: a:\r\n\r\n", 0},
		{"Host with two colons", "GET / HTTP/1.1\r\nHost: a:1:2\r\n\r\n", 400},
		{"Host with a named port", "GET / HTTP/1.1\r\nHost: a:http\r\n\r\n", 400},
		{"Host an unclosed IPv6 literal", "GET / HTTP/1.1\r\nHost: [2001:db8::1\r\n\r\n", 400},
		{"Host junk after an IPv6 literal", "GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n", 400},
		{"absolute target with a bad port", "GET http://a:b/ HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"lower-case version", "GET / http/1.1\r\nHost: a\r\n\r\n", 400},
		{"tab in request line", "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"two spaces in request line", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"chunked in 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"space before colon", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n", 400},
		{"folded line", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n", 400},
		{"no colon", "GET / HTTP/1.1\r\nHost: a\r\nX-A\r\n\r\n", 400},
		{"NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n", 400},
		{"HTTP/2 line", "GET / HTTP/2.0\r\n\r\n", 505},
		{"no version", "GET /\r\n\r\n", 400},
		{"space in target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"no host in 1.1", "GET / HTTP/1.1\r\n\r\n", 400},
		{"no host in 1.0", "GET / HTTP/1.0\r\n\r\n", 0},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			end := HeadEnd([]byte(tc.head))
			if end != len(tc.head) {
				t.Fatalf("headEnd = %d, want %d", end, len(tc.head))
			}
			var h RequestHead
			err := ParseRequest([]byte(tc.head), &h)
			var he *Error
			switch {
			case tc.code == 0 && err != nil:
				t.Errorf("refused: %v", err)
			case tc.code != 0 && (!errors.As(err, &he) || he.Code != tc.code):
				t.Errorf("got %v, want a %d", err, tc.code)
			}
		})
	}
}

// The head the backend gets: hop-by-hop headers and those the client named
// in Connection gone, X-Forwarded-For appended to, X-Forwarded-Proto ours.
func TestAppendRequest(t *testing.T) {
	head := "GET /x HTTP/1.0\r\nHost: shop\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\n" +
		"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nAccept: */*\r\n\r\n"
	var h RequestHead
	if err := ParseRequest([]byte(head), &h); err != nil {
		t.Fatal(err)
	}
	got := string(AppendRequest(nil, []byte(head), &h, []byte("198.18.0.9"), func() string { return "198.18.0.1:80" }))
	want := "GET /x HTTP/1.0\r\nHost: shop\r\nAccept: */*\r\nX-Forwarded-For: 203.0.113.7, 198.18.0.9\r\nX-Forwarded-Proto: http\r\nConnection: keep-alive\r\n\r\n"
	if got != want {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
	if !h.KeepAlive {
		t.Error("HTTP/1.0 with Connection: keep-alive not seen as keep-alive")
	}
}

func TestChunkScanner(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		rest       string // after the body
		bad        bool
	}{
		{"two chunks", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "GET", false},
		{"extension and trailer", "5;x=y\r\nhello\r\n0\r\nX-T: 1\r\n\r\n", "", false},
		{"bare LF", "5\nhello\n0\n\n", "next", true},
		{"bare LF after data", "5\r\nhello\n0\r\n\r\n", "", true},
		{"space before extension", "5 ;a=b\r\nhello\r\n0\r\n\r\n", "", true},
		{"space after size", "5 \r\nhello\r\n0\r\n\r\n", "", true},
		{"junk after size", "5 x\r\nhello\r\n0\r\n\r\n", "", true},
		{"LF in extension", "5;a\nb\r\nhello\r\n0\r\n\r\n", "", true},
		{"control in extension", "5;a\x00\r\nhello\r\n0\r\n\r\n", "", true},
		{"negative size", "-5\r\nhello\r\n", "", true},
		{"0x prefix", "0x5\r\nhello\r\n", "", true},
		{"leading zeros", "0005\r\nhello\r\n0\r\n\r\n", "", false},
		{"trailer without colon", "0\r\nX-T\r\n\r\n", "", true},
		{"trailer folded", "0\r\nX-T: 1\r\n 2\r\n\r\n", "", true},
		{"upper hex", "A\r\n0123456789\r\n0\r\n\r\n", "", false},
		{"no size", "\r\nhello\r\n", "", true},
		{"bad size", "5x\r\nhello\r\n", "", true},
		{"data overruns", "5\r\nhello!\r\n0\r\n\r\n", "", true},
		{"huge size", "1000000000000000\r\n", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.body + tc.rest
			// Byte by byte and all at once must agree.
			for _, step := range []int{1, len(in)} {
				var cs chunkScanner
				took, done, failed := 0, false, false
				for took < len(in) && !done {
					end := min(took+step, len(in))
					n, d, err := cs.scan([]byte(in[took:end]))
					took += n
					done = d
					if err != nil {
						failed = true
						break
					}
				}
				if tc.bad {
					if !failed {
						t.Errorf("step %d: accepted", step)
					}
					continue
				}
				if failed || !done || took != len(tc.body) {
					t.Errorf("step %d: took %d done %v failed %v, want %d", step, took, done, failed, len(tc.body))
				}
			}
		})
	}
}

// What the proxy accepts and passes on, net/http reads the same way: the
// same method, target and body framing, and no header the proxy dropped.
// Go's reader stands in for the backend.
func FuzzRequestHead(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /x?y=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: keep-alive, X-A\r\nX-A: 1\r\n\r\n",
		"PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
		"GET / HTTP/1.0\nConnection: keep-alive\n\n",
		"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		end := HeadEnd(in)
		if end < 0 || end > MaxHead {
			return
		}
		var h RequestHead
		if ParseRequest(in[:end], &h) != nil {
			return
		}
		out := AppendRequest(nil, in[:end], &h, []byte("198.18.0.9"), func() string { return "198.18.0.1:80" })
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(string(out))))
		if err != nil {
			// net/http is stricter about some bytes in targets and values; those
			// are the backend's to refuse.
			return
		}
		if req.Method != string(h.Method) || req.RequestURI != string(h.target) {
			t.Fatalf("backend reads %s %s, proxy parsed %s %s", req.Method, req.RequestURI, h.Method, h.target)
		}
		chunked := len(req.TransferEncoding) > 0
		if chunked != h.Body.Chunked {
			t.Fatalf("backend chunked %v, proxy %v\n%q", chunked, h.Body.Chunked, out)
		}
		if !chunked && h.Body.Length >= 0 && req.ContentLength != h.Body.Length {
			t.Fatalf("backend length %d, proxy %d", req.ContentLength, h.Body.Length)
		}
		if !chunked && h.Body.Length < 0 && req.ContentLength > 0 {
			t.Fatalf("backend expects a body of %d the proxy does not send", req.ContentLength)
		}
		for _, hop := range []string{"Keep-Alive", "Proxy-Connection", "Te", "Trailer"} {
			if _, ok := req.Header[hop]; ok {
				t.Fatalf("hop-by-hop %s passed on", hop)
			}
		}
	})
}

// The head the backend gets carries the framing the proxy decided, in one
// canonical form, whatever Connection lists; an absolute-form target
// becomes origin-form with its authority as Host.
func TestAppendRequestReframes(t *testing.T) {
	ip, host := []byte("198.18.0.9"), func() string { return "198.18.0.1:80" }
	for _, tc := range []struct{ name, head, want string }{
		{"Connection cannot remove Content-Length or Host",
			"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 61\r\nConnection: Content-Length, Host, Transfer-Encoding, X-A\r\nX-A: 1\r\n\r\n",
			"POST / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.18.0.9\r\nX-Forwarded-Proto: http\r\nContent-Length: 61\r\n\r\n"},
		{"duplicate lengths become one",
			"POST / HTTP/1.1\r\nContent-Length: 007\r\nHost: x\r\nContent-Length: 7\r\n\r\n",
			"POST / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.18.0.9\r\nX-Forwarded-Proto: http\r\nContent-Length: 7\r\n\r\n"},
		{"chunked re-emitted",
			"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ,Chunked\r\n\r\n",
			"POST / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.18.0.9\r\nX-Forwarded-Proto: http\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"absolute-form",
			"GET http://shop.example:8080?q=1 HTTP/1.1\r\nHost: other\r\n\r\n",
			"GET /?q=1 HTTP/1.1\r\nX-Forwarded-For: 198.18.0.9\r\nX-Forwarded-Proto: http\r\nHost: shop.example:8080\r\n\r\n"},
		{"no upgrade to h2c",
			"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: H2C\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
			"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.18.0.9\r\nX-Forwarded-Proto: http\r\n\r\n"},
		{"HTTP/1.0 with Expect",
			"POST /p HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
			"POST /p HTTP/1.0\r\nX-Forwarded-For: 198.18.0.9\r\nX-Forwarded-Proto: http\r\nHost: 198.18.0.1:80\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h RequestHead
			if err := ParseRequest([]byte(tc.head), &h); err != nil {
				t.Fatal(err)
			}
			if got := string(AppendRequest(nil, []byte(tc.head), &h, ip, host)); got != tc.want {
				t.Errorf("got\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

// A response's framing is decided once and re-emitted: Transfer-Encoding
// wins over Content-Length (and the backend connection is not reused),
// Connection cannot remove either, faulty framing is the backend's fault.
func TestResponseReframes(t *testing.T) {
	for _, tc := range []struct {
		name, head string
		isHead     bool
		want       string // "" : refused
		reusable   bool
	}{
		{"length and chunked", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", false,
			"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"Connection lists the length", "HTTP/1.1 200 OK\r\nConnection: Content-Length, Transfer-Encoding\r\nContent-Length: 5\r\n\r\n", false,
			"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true},
		{"HTTP/1.0 close-delimited", "HTTP/1.0 200 OK\r\nX-A: 1\r\n\r\n", false,
			"HTTP/1.1 200 OK\r\nX-A: 1\r\nConnection: close\r\n\r\n", false},
		{"HEAD keeps its length", "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", true,
			"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", true},
		{"204 loses its length", "HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n", false,
			"HTTP/1.1 204 No Content\r\n\r\n", true},
		{"no reason", "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", false,
			"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", true},
		{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", false, "", false},
		{"signed length", "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n", false, "", false},
		{"gzip only", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false, "", false},
		{"chunked in HTTP/1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false, "", false},
		{"CR in the reason", "HTTP/1.1 200 O\rK\r\nContent-Length: 0\r\n\r\n", false, "", false},
		{"space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n", false, "", false},
		{"status 600", "HTTP/1.1 600 X\r\nContent-Length: 0\r\n\r\n", false, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h ResponseHead
			err := ParseResponse([]byte(tc.head), tc.isHead, &h)
			if tc.want == "" {
				if err == nil {
					t.Fatal("accepted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := string(AppendResponse(nil, []byte(tc.head), &h, !h.CloseDelimited, false)); got != tc.want {
				t.Errorf("got\n%q\nwant\n%q", got, tc.want)
			}
			if h.Reusable != tc.reusable {
				t.Errorf("reusable %v, want %v", h.Reusable, tc.reusable)
			}
		})
	}
}
