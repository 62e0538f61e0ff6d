package main

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// watchBuffer is the receive buffer of the route subscription, room for far more than the
// routes of a thousand nodes arriving at once: an overflow ends the subscription.
const watchBuffer = 32 << 20

// routeWatch follows the main table's routes of one protocol in a network namespace, as the
// kernel announces them, and tells when the routes to a set of destinations were all there,
// or all gone. Subscribing, rather than dumping the table again and again, takes no CPU from
// the loomd being measured, and times each route to the moment the kernel reported it.
type routeWatch struct {
	want  map[netip.Prefix]bool
	proto netlink.RouteProtocol
	ns    netns.NsHandle
	done  chan struct{}

	mu      sync.Mutex
	have    map[netip.Prefix]bool
	first   time.Time // when the first wanted route appeared since reset
	all     time.Time // when the last one did
	err     error
	changed chan struct{} // closed and replaced on every change
}

// watchRoutes starts watching the routes of protocol proto to the destinations want in the
// named network namespace; close stops it.
func watchRoutes(netnsName string, proto netlink.RouteProtocol, want []netip.Prefix) (*routeWatch, error) {
	ns, err := netns.GetFromName(netnsName)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", netnsName, err)
	}
	w := &routeWatch{
		want: map[netip.Prefix]bool{}, proto: proto, ns: ns, done: make(chan struct{}),
		have: map[netip.Prefix]bool{}, changed: make(chan struct{}),
	}
	for _, p := range want {
		w.want[p] = true
	}
	updates := make(chan netlink.RouteUpdate, 4096)
	err = netlink.RouteSubscribeWithOptions(updates, w.done, netlink.RouteSubscribeOptions{
		Namespace:              &ns,
		ListExisting:           true,
		ReceiveBufferSize:      watchBuffer,
		ReceiveBufferForceSize: true,
		ErrorCallback:          w.fail,
	})
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("subscribe to the routes of netns %s: %w", netnsName, err)
	}
	go w.follow(updates)
	return w, nil
}

func (w *routeWatch) close() {
	close(w.done)
	w.ns.Close()
}

func (w *routeWatch) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = fmt.Errorf("route watch: %w", err)
	}
	w.notify()
}

func (w *routeWatch) follow(updates <-chan netlink.RouteUpdate) {
	for u := range updates {
		now := time.Now()
		dst, ok := prefixOf(u.Route)
		if !ok || !w.want[dst] || u.Route.Protocol != w.proto || u.Route.Table != unix.RT_TABLE_MAIN {
			continue
		}
		w.mu.Lock()
		switch u.Type {
		case unix.RTM_NEWROUTE:
			if w.first.IsZero() {
				w.first = now
			}
			w.have[dst] = true
			if len(w.have) == len(w.want) && w.all.IsZero() {
				w.all = now
			}
		case unix.RTM_DELROUTE:
			delete(w.have, dst)
		}
		w.notify()
		w.mu.Unlock()
	}
}

// notify wakes the waiters; w.mu is held.
func (w *routeWatch) notify() {
	close(w.changed)
	w.changed = make(chan struct{})
}

// reset forgets when routes appeared, so that the next waitAll times only what comes next.
func (w *routeWatch) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.first, w.all = time.Time{}, time.Time{}
}

// waitAll waits until every wanted route is there, and returns when the first and the last
// of them appeared since the last reset.
func (w *routeWatch) waitAll(ctx context.Context, timeout time.Duration) (first, all time.Time, err error) {
	err = w.wait(ctx, timeout, func() bool { return len(w.have) == len(w.want) && !w.all.IsZero() })
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.first, w.all, err
}

// waitNone waits until none of the wanted routes is left.
func (w *routeWatch) waitNone(ctx context.Context, timeout time.Duration) error {
	return w.wait(ctx, timeout, func() bool { return len(w.have) == 0 })
}

// wait waits until done, called with w.mu held, says so.
func (w *routeWatch) wait(ctx context.Context, timeout time.Duration, done func() bool) error {
	deadline := time.After(timeout)
	for {
		w.mu.Lock()
		ok, err, changed, n := done(), w.err, w.changed, len(w.have)
		w.mu.Unlock()
		switch {
		case err != nil:
			return err
		case ok:
			return nil
		}
		select {
		case <-changed:
		case <-deadline:
			return fmt.Errorf("%d of the %d routes there after %s", n, len(w.want), timeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// verify dumps the table and checks that every wanted route is in it, with the protocol
// watched: what the subscription reported is what the kernel holds.
func (w *routeWatch) verify() error {
	h, err := netlink.NewHandleAt(w.ns)
	if err != nil {
		return err
	}
	defer h.Close()
	filter := &netlink.Route{Protocol: w.proto, Table: unix.RT_TABLE_MAIN}
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	found := 0
	for _, r := range routes {
		if dst, ok := prefixOf(r); ok && w.want[dst] {
			found++
		}
	}
	if found != len(w.want) {
		return fmt.Errorf("the kernel holds %d of the %d routes the watch saw", found, len(w.want))
	}
	return nil
}

func prefixOf(r netlink.Route) (netip.Prefix, bool) {
	if r.Dst == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(r.Dst.IP)
	ones, _ := r.Dst.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), ok
}
