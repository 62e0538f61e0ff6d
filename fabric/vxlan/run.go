package vxlan

import (
	"context"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
)

// resubscribeDelay is how long Run waits before subscribing to link updates again after the
// subscription failed or ended (the kernel drops a subscriber whose buffer overflows).
const resubscribeDelay = time.Second

// Run keeps the dataplane repaired until ctx is done. It watches link updates in the
// backend's namespace: when the VTEP or the underlay link is deleted, goes down or otherwise
// changes, it runs Ensure and replays the last Sync, which restores what the kernel removed
// with the VTEP. Every resync period (none if resync is not positive) it does the same
// unconditionally, which repairs routes and entries deleted by hand and rewrites the
// GuardTable; both are no-ops on routes and entries when nothing is broken. Failures are logged and retried at the next update or period.
func (b *Backend) Run(ctx context.Context, resync time.Duration) {
	kick := make(chan struct{}, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { b.watch(ctx, kick) })

	var tick <-chan time.Time
	if resync > 0 {
		t := time.NewTicker(resync)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-kick:
			b.repair("link update")
		case <-tick:
			b.repair("periodic resync")
		}
	}
}

// repair runs Ensure and replays the last Sync, logging what it had to change.
func (b *Backend) repair(trigger string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	// Nothing reports a change to the guard's table: rewrite it on every repair.
	b.guard.forget()
	if _, err := b.ensure(); err != nil {
		b.log.Error("repair vtep", "trigger", trigger, "err", err)
		return
	}
	if !b.synced {
		return
	}
	p, err := b.sync(b.peers)
	if n := p.writes(); n > 0 {
		b.log.Info("repaired dataplane", "trigger", trigger, "writes", n)
	}
	if err != nil {
		b.log.Error("repair dataplane", "trigger", trigger, "err", err)
	}
}

// watch subscribes to link updates and signals kick for every update of the VTEP or the
// underlay link, and once after each (re)subscription since updates may have been missed. It
// resubscribes whenever the subscription ends, until ctx is done.
func (b *Backend) watch(ctx context.Context, kick chan<- struct{}) {
	for {
		updates := make(chan netlink.LinkUpdate, 64)
		done := make(chan struct{})
		err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
			Namespace: b.cfg.Netns,
			ErrorCallback: func(err error) {
				if ctx.Err() == nil {
					b.log.Warn("receive link updates", "err", err)
				}
			},
		})
		if err != nil {
			b.log.Error("subscribe to link updates", "err", err)
		} else {
			signal(kick)
			b.forward(ctx, updates, kick)
			close(done)
			for range updates {
				// Drain until the subscription's reader sees the closed socket and exits.
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(resubscribeDelay):
		}
	}
}

// forward signals kick for the updates that concern the backend's links, until ctx is done
// or the subscription ends.
func (b *Backend) forward(ctx context.Context, updates <-chan netlink.LinkUpdate, kick chan<- struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case u, ok := <-updates:
			if !ok {
				return
			}
			if name := u.Attrs().Name; name == b.cfg.Name || name == b.cfg.Underlay {
				signal(kick)
			}
		}
	}
}

// signal sends on a channel of capacity one without blocking: a pending signal already says
// everything a second one would.
func signal(c chan<- struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
