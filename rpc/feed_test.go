package rpc

import (
	"context"
	"errors"
	"testing"
	"time"

	pb "github.com/keep-vip/keep-vip/rpc/keepvip/v1"
)

func TestFeed(t *testing.T) {
	errClosed := errors.New("closed")
	f := NewFeed[*pb.Health](errClosed)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	got := make(chan *pb.Health, 16)
	block := make(chan struct{})
	done := make(chan error, 2)
	go func() {
		done <- f.Watch(ctx, func(h *pb.Health) error { got <- h; return nil })
	}()
	// A watcher stuck in send must not hold the publisher or the others.
	go func() {
		done <- f.Watch(ctx, func(*pb.Health) error { <-block; return errors.New("slow watcher gave up") })
	}()

	f.Publish(&pb.Health{Healthy: false})
	if h := <-got; h.Healthy {
		t.Fatalf("first value %v", h)
	}
	for range 50 {
		f.Publish(&pb.Health{Healthy: true})
	}
	// The fast watcher ends on the current value, whatever it skipped.
	deadline := time.After(3 * time.Second)
	for {
		select {
		case h := <-got:
			if h.Healthy {
				goto current
			}
		case <-deadline:
			t.Fatal("watcher never got the current value")
		}
	}
current:
	if v, ok := f.Latest(); !ok || !v.Healthy {
		t.Fatalf("Latest = %v %v", v, ok)
	}
	f.Reset()
	if _, ok := f.Latest(); ok {
		t.Fatal("Reset kept a value")
	}
	close(block)
	if err := <-done; err == nil || err.Error() != "slow watcher gave up" {
		t.Fatalf("slow watcher: %v", err)
	}
	f.Close()
	f.Close()
	if err := <-done; !errors.Is(err, errClosed) {
		t.Fatalf("watch after close: %v", err)
	}
}
