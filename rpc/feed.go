package rpc

import (
	"context"
	"sync"

	"google.golang.org/protobuf/proto"
)

// Feed holds the latest value of a plugin's stream (a checker's verdict, an
// announcer's interface state) and lets any number of Watch calls follow it.
// Each watcher gets the current value at once, then the newest value each
// time it is ready for one: a slow watcher skips values and never holds the
// publisher or the other watchers up, and the last value it sends is always
// the current one.
type Feed[T proto.Message] struct {
	mu      sync.Mutex
	latest  T
	has     bool
	changed chan struct{} // closed and replaced on every Publish and Reset
	closed  chan struct{}
	err     error
}

// NewFeed returns an empty feed whose Watch calls return closedErr once the
// feed is closed.
func NewFeed[T proto.Message](closedErr error) *Feed[T] {
	return &Feed[T]{changed: make(chan struct{}), closed: make(chan struct{}), err: closedErr}
}

// Publish makes v the current value. v must not be changed afterwards:
// watchers read it concurrently (each sends its own copy).
func (f *Feed[T]) Publish(v T) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.latest, f.has = v, true
	close(f.changed)
	f.changed = make(chan struct{})
}

// Reset empties the feed: watchers wait for the next Publish.
func (f *Feed[T]) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	var zero T
	f.latest, f.has = zero, false
	close(f.changed)
	f.changed = make(chan struct{})
}

// Latest is the current value, if there is one.
func (f *Feed[T]) Latest() (T, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.latest, f.has
}

// Close ends every Watch. It is safe to call twice.
func (f *Feed[T]) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.closed:
	default:
		close(f.closed)
	}
}

// Watch calls send with a copy of the current value, if any, and then with
// the newest value after every change, until ctx ends (ctx.Err()), send
// fails (its error) or the feed is closed (the feed's closed error).
func (f *Feed[T]) Watch(ctx context.Context, send func(T) error) error {
	var sent T
	sentAny := false
	for {
		f.mu.Lock()
		v, has, changed := f.latest, f.has, f.changed
		f.mu.Unlock()
		if has && (!sentAny || any(v) != any(sent)) {
			if err := send(proto.CloneOf(v)); err != nil {
				return err
			}
			sent, sentAny = v, true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-f.closed:
			return f.err
		case <-changed:
		}
	}
}
