package vxlan

import "net/netip"

// Status is what the last Sync asked of the kernel, for metrics and status output.
type Status struct {
	// Peers counts the remote nodes reached through the VTEP: one neighbour and one FDB
	// entry each.
	Peers int
	// DirectPeers counts the remote nodes reached without encapsulation, through their
	// underlay address (vxlan-crosssubnet mode only).
	DirectPeers int
	// Routes counts the routes to remote blocks through the VTEP, DirectRoutes those
	// through the underlay link.
	Routes, DirectRoutes int
	// Rejected counts what Sync left out because of what peers claim: a *PeerError each, for
	// a whole peer or one of its blocks.
	Rejected int
}

// status summarises s, the state Sync wants, for the VTEP of l; rejected is the number of
// claims desired left out.
func (s state) status(l local, rejected int) Status {
	st := Status{Peers: len(s.fdb), Rejected: rejected}
	direct := map[netip.Addr]bool{}
	for _, r := range s.routes {
		if r.dev == l.vtep {
			st.Routes++
			continue
		}
		st.DirectRoutes++
		direct[r.gw] = true
	}
	st.DirectPeers = len(direct)
	return st
}

// Status returns what the last Sync asked of the kernel; ok is false before the first Sync
// got that far. It never waits for a Sync in progress.
func (b *Backend) Status() (st Status, ok bool) {
	p := b.status.Load()
	if p == nil {
		return Status{}, false
	}
	return *p, true
}
