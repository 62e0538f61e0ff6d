package vxlan

import (
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// observed is the kernel state Sync reads before it writes anything.
type observed struct {
	routes []netlink.Route // IPv4 routes with RouteProtocol in the main table
	neighs []netlink.Neigh // IPv4 neighbour entries of the VTEP
	fdb    []netlink.Neigh // FDB entries of the VTEP
}

// plan is the writes that take the kernel from what it has to what Sync wants. Applied in
// field order, each object exists before anything that depends on it is written (an FDB entry
// before the neighbour that resolves to its MAC, a neighbour before the route that uses it as
// next hop), and deletions go in the reverse order.
type plan struct {
	setFDB    []netlink.Neigh
	setNeighs []netlink.Neigh
	setRoutes []netlink.Route
	delRoutes []netlink.Route
	delNeighs []netlink.Neigh
	delFDB    []netlink.Neigh
}

// writes is the number of kernel writes p makes.
func (p plan) writes() int {
	return len(p.setFDB) + len(p.setNeighs) + len(p.setRoutes) +
		len(p.delRoutes) + len(p.delNeighs) + len(p.delFDB)
}

// diff plans the writes from have to want for the VTEP with link index vtep.
func diff(want state, have observed, vtep int) plan {
	var p plan
	p.routes(want.routes, have.routes)
	p.neighs(want.neighs, have.neighs, vtep)
	p.fdb(want.fdb, have.fdb, vtep)
	return p
}

// routes plans the route writes. A kernel route holds the slot of its destination (table,
// destination, TOS and priority identify a route) and is replaced in place when it differs
// from what is wanted; any other route of ours is deleted.
func (p *plan) routes(want map[netip.Prefix]route, have []netlink.Route) {
	held := make(map[netip.Prefix]bool, len(have))
	for _, r := range have {
		dst, ok := routeDst(r)
		w, wanted := want[dst]
		if !ok || !wanted || held[dst] || r.Tos != 0 || r.Priority != 0 {
			p.delRoutes = append(p.delRoutes, r)
			continue
		}
		held[dst] = true
		if !w.matches(r) {
			p.setRoutes = append(p.setRoutes, w.netlink(dst))
		}
	}
	for dst, w := range want {
		if !held[dst] {
			p.setRoutes = append(p.setRoutes, w.netlink(dst))
		}
	}
}

// routeDst returns the destination of an IPv4 route; netlink reports the default route with
// a nil Dst.
func routeDst(r netlink.Route) (netip.Prefix, bool) {
	if r.Dst == nil {
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0), true
	}
	return prefixOf(r.Dst)
}

// neighs plans the neighbour writes. Permanent entries that are not wanted are deleted; the
// kernel's own (reachable, stale, failed…) entries are left to its garbage collection.
func (p *plan) neighs(want map[netip.Addr]mac, have []netlink.Neigh, vtep int) {
	ok := make(map[netip.Addr]bool, len(have))
	for _, n := range have {
		ip := addrOf(n.IP)
		m, wanted := want[ip]
		switch {
		case wanted && n.State == netlink.NUD_PERMANENT && len(n.HardwareAddr) == 6 &&
			mac(n.HardwareAddr) == m:
			ok[ip] = true
		case wanted:
			// Replaced by the set below.
		case n.State&netlink.NUD_PERMANENT != 0:
			p.delNeighs = append(p.delNeighs, n)
		}
	}
	for ip, m := range want {
		if !ok[ip] {
			p.setNeighs = append(p.setNeighs, netlink.Neigh{
				LinkIndex:    vtep,
				Family:       netlink.FAMILY_V4,
				State:        netlink.NUD_PERMANENT,
				Type:         unix.RTN_UNICAST,
				IP:           ip.AsSlice(),
				HardwareAddr: net.HardwareAddr(m[:]),
			})
		}
	}
}

// fdb plans the FDB writes. The kernel keeps, for each MAC, a list of remotes and reports
// each as an entry; the wanted state is exactly one remote per MAC. Setting an entry (create
// or replace) rewrites the first remote in place, so a peer whose underlay address changed
// never loses its entry; the remaining remotes are deleted one by one.
func (p *plan) fdb(want map[mac]netip.Addr, have []netlink.Neigh, vtep int) {
	byMAC := make(map[mac][]netlink.Neigh, len(have))
	for _, n := range have {
		if len(n.HardwareAddr) == 6 {
			m := mac(n.HardwareAddr)
			byMAC[m] = append(byMAC[m], n)
		}
	}
	for m, entries := range byMAC {
		dst, wanted := want[m]
		if !wanted {
			p.delFDB = append(p.delFDB, entries...)
			continue
		}
		keep := -1
		for i, n := range entries {
			if addrOf(n.IP) == dst && n.VNI == 0 {
				keep = i
				break
			}
		}
		switch {
		case keep < 0:
			p.setFDB = append(p.setFDB, fdbEntry(vtep, m, dst))
			keep = 0
		case entries[keep].State != netlink.NUD_PERMANENT:
			p.setFDB = append(p.setFDB, fdbEntry(vtep, m, dst))
		}
		for i, n := range entries {
			if i != keep {
				p.delFDB = append(p.delFDB, n)
			}
		}
	}
	for m, dst := range want {
		if _, ok := byMAC[m]; !ok {
			p.setFDB = append(p.setFDB, fdbEntry(vtep, m, dst))
		}
	}
}

// fdbEntry is the FDB entry that sends frames for m to the underlay address dst.
func fdbEntry(vtep int, m mac, dst netip.Addr) netlink.Neigh {
	return netlink.Neigh{
		LinkIndex:    vtep,
		Family:       unix.AF_BRIDGE,
		Flags:        netlink.NTF_SELF,
		State:        netlink.NUD_PERMANENT,
		IP:           dst.AsSlice(),
		HardwareAddr: net.HardwareAddr(m[:]),
	}
}
