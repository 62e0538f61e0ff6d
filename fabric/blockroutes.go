package fabric

import (
	"errors"
	"net/netip"
	"sync"

	"github.com/loom-cni/loom/fabric/bgp"
)

// blockRoutes stands between the BGP speaker and the kernel. A route inside the cluster CIDR
// is installed only while an IPBlock assigns exactly that block to the node that advertises
// it (its next hop): a block released by the controller, or a node that is gone, stops being
// routed even while a route reflector still holds its stale path (graceful restart keeps such
// paths for minutes), and nobody can hijack pod addresses by announcing them. Routes outside
// the cluster CIDR (what top-of-rack peers announce) pass unchanged.
type blockRoutes struct {
	kernel  bgp.RouteSink
	cluster netip.Prefix

	mu        sync.Mutex
	owners    map[netip.Prefix]netip.Addr // block → underlay address of its node
	received  map[netip.Prefix]netip.Addr // what the speaker wants installed
	installed map[netip.Prefix]netip.Addr
}

var _ bgp.RouteSink = (*blockRoutes)(nil)

func newBlockRoutes(kernel bgp.RouteSink, cluster netip.Prefix) *blockRoutes {
	return &blockRoutes{kernel: kernel, cluster: cluster, owners: map[netip.Prefix]netip.Addr{},
		received: map[netip.Prefix]netip.Addr{}, installed: map[netip.Prefix]netip.Addr{}}
}

func (b *blockRoutes) Replace(dst netip.Prefix, nextHop netip.Addr) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.received[dst] = nextHop
	return b.apply(dst)
}

func (b *blockRoutes) Delete(dst netip.Prefix) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.received, dst)
	return b.apply(dst)
}

// Sweep deletes the kernel's stale routes: everything not installed now.
func (b *blockRoutes) Sweep(keep []netip.Prefix) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var still []netip.Prefix
	for _, p := range keep {
		if _, ok := b.installed[p]; ok {
			still = append(still, p)
		}
	}
	return b.kernel.Sweep(still)
}

// setOwners records which node owns each block and installs or removes routes accordingly.
func (b *blockRoutes) setOwners(owners map[netip.Prefix]netip.Addr) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.owners = owners
	var errs []error
	for dst := range b.received {
		errs = append(errs, b.apply(dst))
	}
	for dst := range b.installed {
		if _, ok := b.received[dst]; !ok {
			errs = append(errs, b.apply(dst))
		}
	}
	return errors.Join(errs...)
}

// apply makes the kernel agree with what is received and allowed for dst.
func (b *blockRoutes) apply(dst netip.Prefix) error {
	want, ok := b.received[dst]
	if ok && b.cluster.Overlaps(dst) && b.owners[dst] != want {
		ok = false
	}
	have, installed := b.installed[dst]
	switch {
	case ok && (!installed || have != want):
		if err := b.kernel.Replace(dst, want); err != nil {
			return err
		}
		b.installed[dst] = want
	case !ok && installed:
		if err := b.kernel.Delete(dst); err != nil {
			return err
		}
		delete(b.installed, dst)
	}
	return nil
}
