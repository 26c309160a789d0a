package e2e

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	samplerInterval = 5 * time.Millisecond // at least every 10ms
	// samplerMaxRun bounds the sampling loop even if Stop is never called.
	samplerMaxRun = 15 * time.Minute
)

// splitBrain is one sample in which more than one node held the VIP.
type splitBrain struct {
	At      time.Time
	Holders []int // 1-based node indices
}

// holderChange is a sample whose set of VIP holders differs from the one
// before: the timeline of who held the VIP.
type holderChange struct {
	At      time.Time
	Holders []int
}

// SamplerReport is what a stopped Sampler saw.
type SamplerReport struct {
	Samples    int
	ReadErrors int
	FirstError string
	Duration   time.Duration
	Violations []splitBrain
	Timeline   []holderChange
}

// Sampler is the split-brain guard: until stopped, it reads every node's
// eth0 every samplerInterval and records each sample in which two or more
// nodes hold the VIP.
type Sampler struct {
	vip    netip.Addr
	reader *eth0AddrReader
	stop   chan struct{}
	done   chan struct{}

	mu     sync.Mutex
	report SamplerReport
}

// StartSampler starts sampling the given node namespaces (node i is
// nodeNS[i-1]). Stopping it and failing the test on a violation is
// registered with t.Cleanup; tests may also call Stop earlier.
func StartSampler(t *testing.T, vip string, nodeNS []string) *Sampler {
	t.Helper()
	s, err := startSampling(vip, nodeNS)
	if err != nil {
		t.Fatalf("sampler: %v", err)
	}
	t.Cleanup(func() { s.Check(t) })
	return s
}

// startSampling starts a Sampler nobody checks; the caller must Stop it.
func startSampling(vip string, nodeNS []string) (*Sampler, error) {
	addr, err := netip.ParseAddr(vip)
	if err != nil {
		return nil, fmt.Errorf("VIP %q: %w", vip, err)
	}
	reader, err := newEth0AddrReader(nodeNS)
	if err != nil {
		return nil, err
	}
	s := &Sampler{vip: addr, reader: reader, stop: make(chan struct{}), done: make(chan struct{})}
	go s.run()
	return s, nil
}

func (s *Sampler) run() {
	defer close(s.done)
	defer s.reader.Close()
	start := time.Now()
	ticker := time.NewTicker(samplerInterval)
	defer ticker.Stop()
	var last []int
	maxSamples := int(samplerMaxRun/samplerInterval) + 1
	for range maxSamples {
		holders, err := s.sample()
		now := time.Now()
		s.mu.Lock()
		s.report.Duration = now.Sub(start)
		if err != nil {
			s.report.ReadErrors++
			if s.report.FirstError == "" {
				s.report.FirstError = err.Error()
			}
		} else {
			s.report.Samples++
			if len(holders) > 1 {
				s.report.Violations = append(s.report.Violations, splitBrain{At: now, Holders: holders})
			}
			if !equalInts(holders, last) || len(s.report.Timeline) == 0 {
				s.report.Timeline = append(s.report.Timeline, holderChange{At: now, Holders: holders})
				last = holders
			}
		}
		s.mu.Unlock()
		select {
		case <-s.stop:
			return
		case <-ticker.C:
		}
	}
}

// sample reads every node once; a failed read spoils the whole sample.
//
// Nodes are read one after another, so a handover that happens between two
// reads (old holder read before it let go, new holder read after it took
// over) would look like two holders. Before reporting several holders the
// earlier ones are read again: one that still holds the VIP held it at the
// same time as the last one read.
func (s *Sampler) sample() ([]int, error) {
	var holders []int
	for i := range s.reader.namespaces {
		held, err := s.reader.Holds(i, s.vip)
		if err != nil {
			return nil, err
		}
		if held {
			holders = append(holders, i+1)
		}
	}
	if len(holders) < 2 {
		return holders, nil
	}
	confirmed := []int{holders[len(holders)-1]}
	for _, node := range holders[:len(holders)-1] {
		held, err := s.reader.Holds(node-1, s.vip)
		if err != nil {
			return nil, err
		}
		if held {
			confirmed = append(confirmed, node)
		}
	}
	slices.Sort(confirmed)
	return confirmed, nil
}

// Stop ends sampling (idempotent) and returns what was seen.
func (s *Sampler) Stop() SamplerReport {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done // the loop checks stop at least every samplerInterval
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.report
	r.Violations = append([]splitBrain(nil), r.Violations...)
	r.Timeline = append([]holderChange(nil), r.Timeline...)
	return r
}

// Check stops the sampler, logs what it saw and fails t on any split brain
// (or if it could not sample at all).
func (s *Sampler) Check(t *testing.T) {
	t.Helper()
	r := s.Stop()
	t.Logf("sampler: %d samples over %s (%d read errors), %d split-brain samples; VIP holders: %s",
		r.Samples, r.Duration.Round(time.Millisecond), r.ReadErrors, len(r.Violations), r.describeTimeline())
	if len(r.Violations) > 0 {
		first, lastV := r.Violations[0], r.Violations[len(r.Violations)-1]
		t.Errorf("split brain: %d samples with several VIP holders, first at %s holders %v, last at %s holders %v",
			len(r.Violations), first.At.Format("15:04:05.000"), first.Holders, lastV.At.Format("15:04:05.000"), lastV.Holders)
	}
	if r.Samples == 0 {
		t.Errorf("sampler took no sample (first error: %s)", r.FirstError)
	}
	if r.ReadErrors > 0 {
		t.Logf("sampler: first read error: %s", r.FirstError)
	}
}

func (r SamplerReport) describeTimeline() string {
	if len(r.Timeline) == 0 {
		return "-"
	}
	const maxShown = 20
	var parts []string
	for i, c := range r.Timeline {
		if i == maxShown {
			parts = append(parts, fmt.Sprintf("... %d more", len(r.Timeline)-maxShown))
			break
		}
		parts = append(parts, fmt.Sprintf("%s=%v", c.At.Format("15:04:05.000"), c.Holders))
	}
	return strings.Join(parts, " ")
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
