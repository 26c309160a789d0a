package rpc

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Code a process ran once at start-up stays in its RSS. Every Go package's
// initialiser lives beside that package's code, so running them all faults
// in a page of nearly every package, and the kernel maps the pages around
// each fault too (fault-around): an idle plugin keeps 13–15 MB of its own
// executable mapped although its idle loop runs a few hundred kilobytes of
// it. Those pages are clean copies of the file; dropping our mappings of
// them (MADV_DONTNEED) leaves them in the page cache, where the kernel may
// keep or reclaim them like any file data, and the next use maps them
// again by a minor fault. RSS then shows what the process uses.
//
// Only read-only mappings of the executable itself with no private page
// in them are dropped: a writable or relocated page (a PIE build's
// .data.rel.ro is read-only but was written at load) would lose its
// contents, so a mapping holding any anonymous page is left alone.

// exeMapping is one mapping of the executable that may be dropped.
type exeMapping struct {
	start, end uintptr
}

// droppableExeMappings reads smaps (the format of /proc/self/smaps) and
// returns the mappings of the file at exe (as /proc/self/exe names it,
// " (deleted)" included once the package manager replaced it) that are
// not writable and hold no anonymous page.
func droppableExeMappings(smaps io.Reader, exe string) ([]exeMapping, error) {
	var (
		out    []exeMapping
		cur    exeMapping
		inExe  bool
		anonKB int64 = -1
		sc           = bufio.NewScanner(smaps)
		flush        = func() {
			if inExe && anonKB == 0 {
				out = append(out, cur)
			}
			inExe, anonKB = false, -1
		}
	)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if isMappingHeader(f) {
			flush()
			if len(f) < 6 {
				continue // anonymous: no path
			}
			start, end, ok := parseRange(f[0])
			if !ok {
				return nil, fmt.Errorf("smaps: bad range %q", f[0])
			}
			cur = exeMapping{start: start, end: end}
			perms := f[1]
			inExe = mappingPath(line) == exe && len(perms) >= 2 && perms[1] != 'w'
			continue
		}
		if f[0] == "Anonymous:" && len(f) >= 2 {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("smaps: bad Anonymous %q", f[1])
			}
			anonKB = kb
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("smaps: %w", err)
	}
	flush()
	return out, nil
}

// isMappingHeader tells a mapping's first line ("start-end perms offset
// dev inode [path]") from its "Key: value" lines.
func isMappingHeader(f []string) bool {
	return !strings.HasSuffix(f[0], ":") && strings.Contains(f[0], "-")
}

// mappingPath is what follows the inode field of a header line: the path,
// which may hold spaces.
func mappingPath(line string) string {
	rest := line
	for range 5 {
		rest = strings.TrimLeft(rest, " ")
		i := strings.IndexByte(rest, ' ')
		if i < 0 {
			return ""
		}
		rest = rest[i:]
	}
	return strings.TrimLeft(rest, " ")
}

func parseRange(s string) (start, end uintptr, ok bool) {
	a, b, found := strings.Cut(s, "-")
	if !found {
		return 0, 0, false
	}
	x, err1 := strconv.ParseUint(a, 16, 64)
	y, err2 := strconv.ParseUint(b, 16, 64)
	if err1 != nil || err2 != nil || y <= x {
		return 0, 0, false
	}
	return uintptr(x), uintptr(y), true
}

// dropStartupCode drops this process's mappings of its own executable's
// clean, read-only pages and returns how many bytes of address space it
// advised away (not all of it was resident).
func dropStartupCode() (uint64, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, err
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	maps, err := droppableExeMappings(f, exe)
	if err != nil {
		return 0, err
	}
	var dropped uint64
	for _, m := range maps {
		if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, m.start, m.end-m.start, syscall.MADV_DONTNEED); errno != 0 {
			return dropped, fmt.Errorf("madvise %#x-%#x: %w", m.start, m.end, errno)
		}
		dropped += uint64(m.end - m.start)
	}
	return dropped, nil
}
