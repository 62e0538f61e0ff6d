package vxlan

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Sync makes the kernel's routes, neighbour entries and FDB entries match peers, the complete
// list of remote nodes: it reads the current state once, writes what is missing or different,
// and deletes what no longer belongs (a removed node, a released block, a peer's old MAC). A
// Sync that changes nothing writes nothing. The VTEP must exist (Ensure).
//
// A peer whose claims are unusable (not IPv4, a multicast MAC, a block or VTEP already claimed
// by another node…) is left out, or only the offending block is; the rest are programmed and
// the returned error lists what was left out as *PeerError values. A failed write does not
// stop the others either.
//
// Sync also makes the GuardTable admit VXLAN from the underlay addresses of exactly these
// peers (all of them, also those left out), in one nft transaction when the set changed.
//
// The peers are remembered for Run's repairs.
func (b *Backend) Sync(peers []Peer) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.peers = make([]Peer, len(peers))
	for i, p := range peers {
		b.peers[i] = p.clone()
	}
	b.synced = true
	_, err := b.sync(b.peers)
	return err
}

// sync is Sync with b.mu held. It returns the writes it attempted.
func (b *Backend) sync(peers []Peer) (plan, error) {
	l, err := b.local()
	if err != nil {
		return plan{}, err
	}
	want, errs := desired(peers, l)
	st := want.status(l, len(errs))
	b.status.Store(&st)
	have, err := b.observe(l.vtep)
	if err != nil {
		return plan{}, err
	}
	p := diff(want, have, l.vtep)
	errs = append(errs, b.apply(p)...)
	if err := b.guard.set(peers); err != nil {
		errs = append(errs, err)
	}
	b.log.Debug("synced peers", "peers", len(peers), "routes", len(want.routes), "writes", p.writes())
	if len(errs) > 0 {
		return p, fmt.Errorf("sync %d peers: %w", len(peers), errors.Join(errs...))
	}
	return p, nil
}

// local reads what the desired state depends on from the kernel: link indexes and, in
// crosssubnet mode, the underlay subnet.
func (b *Backend) local() (local, error) {
	vtep, err := b.h.LinkByName(b.cfg.Name)
	if err != nil {
		return local{}, fmt.Errorf("look up vtep %s: %w", b.cfg.Name, err)
	}
	under, err := b.h.LinkByName(b.cfg.Underlay)
	if err != nil {
		return local{}, fmt.Errorf("look up underlay link %s: %w", b.cfg.Underlay, err)
	}
	l := local{
		vtep:     vtep.Attrs().Index,
		underlay: under.Attrs().Index,
		addr:     b.cfg.Addr,
		ip:       b.cfg.LocalIP,
	}
	if b.cfg.CrossSubnet {
		if l.subnet, err = b.underlaySubnet(under); err != nil {
			return local{}, err
		}
	}
	return l, nil
}

// observe reads the routes of ours and the VTEP's neighbour and FDB entries.
func (b *Backend) observe(vtep int) (observed, error) {
	var (
		have observed
		err  error
	)
	have.routes, err = dump(func() ([]netlink.Route, error) {
		filter := &netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}
		return b.h.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return observed{}, fmt.Errorf("list routes of protocol %d: %w", RouteProtocol, err)
	}
	have.neighs, err = dump(func() ([]netlink.Neigh, error) { return b.h.NeighList(vtep, netlink.FAMILY_V4) })
	if err != nil {
		return observed{}, fmt.Errorf("list neighbours of vtep %s: %w", b.cfg.Name, err)
	}
	have.fdb, err = dump(func() ([]netlink.Neigh, error) { return b.h.NeighList(vtep, unix.AF_BRIDGE) })
	if err != nil {
		return observed{}, fmt.Errorf("list fdb entries of vtep %s: %w", b.cfg.Name, err)
	}
	return have, nil
}

// apply makes the writes of p in order and returns the errors of those that failed. Deleting
// what is already gone is not an error.
func (b *Backend) apply(p plan) []error {
	var errs []error
	fail := func(err error, format string, args ...any) {
		if err != nil {
			errs = append(errs, fmt.Errorf(format+": %w", append(args, err)...))
		}
	}
	for i := range p.setFDB {
		n := &p.setFDB[i]
		fail(b.h.NeighSet(n), "set fdb entry %s dst %s", n.HardwareAddr, n.IP)
	}
	for i := range p.setNeighs {
		n := &p.setNeighs[i]
		fail(b.h.NeighSet(n), "set neighbour %s lladdr %s", n.IP, n.HardwareAddr)
	}
	for i := range p.setRoutes {
		r := &p.setRoutes[i]
		fail(b.h.RouteReplace(r), "replace route %s via %s", r.Dst, r.Gw)
	}
	for i := range p.delRoutes {
		r := &p.delRoutes[i]
		fail(ignoreGone(b.h.RouteDel(r)), "delete route %s via %s", r.Dst, r.Gw)
	}
	for i := range p.delNeighs {
		n := &p.delNeighs[i]
		fail(ignoreGone(b.h.NeighDel(n)), "delete neighbour %s", n.IP)
	}
	for i := range p.delFDB {
		n := &p.delFDB[i]
		fail(ignoreGone(b.h.NeighDel(n)), "delete fdb entry %s dst %s", n.HardwareAddr, n.IP)
	}
	return errs
}

// ignoreGone treats the errors that say a deleted object does not exist as success.
func ignoreGone(err error) error {
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
}

// dump runs a netlink dump again when the kernel interrupted it because the table changed
// while it was being read, which makes the result inconsistent.
func dump[T any](list func() ([]T, error)) ([]T, error) {
	const attempts = 5
	var err error
	for range attempts {
		var v []T
		if v, err = list(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return nil, err
}
