package rpc

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

const smapsSample = `55d4c0000000-55d4c0400000 r--p 00000000 fd:01 1234                       /usr/bin/keep-vip-elector
Size:               4096 kB
Rss:                4096 kB
Anonymous:             0 kB
VmFlags: rd mr mw me dw sd
55d4c0400000-55d4c0a00000 r-xp 00400000 fd:01 1234                       /usr/bin/keep-vip-elector
Size:               6144 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me dw sd
55d4c0a00000-55d4c0c00000 r--p 00a00000 fd:01 1234                       /usr/bin/keep-vip-elector
Size:               2048 kB
Anonymous:          1800 kB
VmFlags: rd mr mw me ac sd
55d4c0c00000-55d4c0c10000 rw-p 00c00000 fd:01 1234                       /usr/bin/keep-vip-elector
Size:                 64 kB
Anonymous:             0 kB
VmFlags: rd wr mr mw me ac sd
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
Size:               1024 kB
Anonymous:          1024 kB
7f0000100000-7f0000200000 r-xp 00000000 fd:01 99                         /usr/lib/other lib.so
Anonymous:             0 kB
7f0000200000-7f0000300000 r-xp 00000000 fd:01 1234                       /usr/bin/keep-vip-elector (deleted)
Anonymous:             0 kB
`

func TestDroppableExeMappings(t *testing.T) {
	for _, tc := range []struct {
		name, exe string
		want      []exeMapping
	}{
		// The read-only data and the code; not the relocated read-only
		// data (anonymous pages), the writable data, the heap or a library.
		{"running binary", "/usr/bin/keep-vip-elector", []exeMapping{
			{0x55d4c0000000, 0x55d4c0400000}, {0x55d4c0400000, 0x55d4c0a00000},
		}},
		{"replaced binary", "/usr/bin/keep-vip-elector (deleted)", []exeMapping{{0x7f0000200000, 0x7f0000300000}}},
		{"path with a space", "/usr/lib/other lib.so", []exeMapping{{0x7f0000100000, 0x7f0000200000}}},
		{"no such file", "/usr/bin/none", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := droppableExeMappings(strings.NewReader(smapsSample), tc.exe)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %x, want %x", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("mapping %d: got %x, want %x", i, got[i], tc.want[i])
				}
			}
		})
	}
}

func TestDroppableExeMappingsMissingAnonymous(t *testing.T) {
	// A kernel that does not say how many anonymous pages a mapping holds
	// gets nothing dropped.
	in := "55d4c0400000-55d4c0a00000 r-xp 00400000 fd:01 1234 /bin/x\nSize: 4 kB\n"
	got, err := droppableExeMappings(strings.NewReader(in), "/bin/x")
	if err != nil || len(got) != 0 {
		t.Fatalf("got %v, %v; want nothing", got, err)
	}
}

func TestDroppableExeMappingsBadRange(t *testing.T) {
	in := "zz-55d4c0a00000 r-xp 00400000 fd:01 1234 /bin/x\n"
	if _, err := droppableExeMappings(strings.NewReader(in), "/bin/x"); err == nil {
		t.Fatal("want an error for a bad range")
	}
}

// TestDropStartupCode drops this test binary's clean pages and goes on
// running: its file-backed RSS falls, and code runs again from the page
// cache.
func TestDropStartupCode(t *testing.T) {
	before := rssFileKB(t)
	n, err := dropStartupCode()
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("nothing dropped")
	}
	after := rssFileKB(t)
	t.Logf("advised away %d kB of address space; RssFile %d kB -> %d kB", n/1024, before, after)
	if after >= before {
		t.Errorf("RssFile did not fall: %d kB -> %d kB", before, after)
	}
	// Code and read-only data mapped again on use.
	if got := strings.Repeat(strconv.Itoa(42), 2); got != "4242" {
		t.Fatalf("after the drop: %q", got)
	}
}

func rssFileKB(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}
