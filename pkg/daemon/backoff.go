package daemon

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/jonboulle/clockwork"
)

// Retry delays: etcd or the kernel failing is retried forever, never fatal.
const (
	minBackoff = time.Second
	maxBackoff = 30 * time.Second
)

// backoff doubles a delay from minBackoff up to maxBackoff, with up to 20%
// added at random so that nodes do not retry in step after an etcd outage.
type backoff struct {
	clock clockwork.Clock
	cur   time.Duration
}

func newBackoff(clock clockwork.Clock) *backoff { return &backoff{clock: clock} }

func (b *backoff) reset() { b.cur = 0 }

func (b *backoff) next() time.Duration {
	switch {
	case b.cur == 0:
		b.cur = minBackoff
	case b.cur < maxBackoff:
		b.cur = min(2*b.cur, maxBackoff)
	}
	return b.cur + rand.N(b.cur/5+1)
}

// wait sleeps for the next delay; false when ctx ended first.
func (b *backoff) wait(ctx context.Context) bool {
	return sleep(ctx, b.clock, b.next())
}

// sleep waits d on clock; false when ctx ended first.
func sleep(ctx context.Context, clock clockwork.Clock, d time.Duration) bool {
	t := clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.Chan():
		return true
	}
}
