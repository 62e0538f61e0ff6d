package vxlan

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// mac is an Ethernet address usable as a map key.
type mac [6]byte

// route is how Sync wants one block to be reached.
type route struct {
	gw     netip.Addr
	dev    int // link index
	onlink bool
}

// netlink returns r as the route to dst that Sync installs.
func (r route) netlink(dst netip.Prefix) netlink.Route {
	nr := netlink.Route{
		Dst:       ipNet(dst),
		Gw:        r.gw.AsSlice(),
		LinkIndex: r.dev,
		Protocol:  RouteProtocol,
		Table:     unix.RT_TABLE_MAIN,
		Scope:     netlink.SCOPE_UNIVERSE,
		Type:      unix.RTN_UNICAST,
	}
	if r.onlink {
		nr.Flags = int(netlink.FLAG_ONLINK)
	}
	return nr
}

// matches reports whether the kernel route have is r, ignoring the destination.
func (r route) matches(have netlink.Route) bool {
	return addrOf(have.Gw) == r.gw &&
		have.LinkIndex == r.dev &&
		have.Flags&int(netlink.FLAG_ONLINK) != 0 == r.onlink &&
		have.Scope == netlink.SCOPE_UNIVERSE &&
		have.Type == unix.RTN_UNICAST &&
		have.Src == nil &&
		len(have.MultiPath) == 0
}

// state is the dataplane Sync wants for its peers.
type state struct {
	routes map[netip.Prefix]route
	neighs map[netip.Addr]mac // peer VTEP address → peer VTEP MAC
	fdb    map[mac]netip.Addr // peer VTEP MAC → peer underlay address
}

// local is what the desired state depends on besides the peers.
type local struct {
	vtep, underlay int        // link indexes
	addr           netip.Addr // this node's VTEP address
	ip             netip.Addr // this node's underlay address
	// subnet is the underlay subnet whose peers get direct routes; invalid unless the
	// backend is in crosssubnet mode.
	subnet netip.Prefix
}

// PeerError reports a peer, or one of its blocks, that Sync left out because of what the peer
// claims. The rest of the peers are programmed regardless.
type PeerError struct {
	// Node is the peer's node name.
	Node string
	// Reason says what is wrong, e.g. `block 10.99.2.0/26 also claimed by node "a"`.
	Reason string
}

func (e *PeerError) Error() string {
	return fmt.Sprintf("skip peer %q: %s", e.Node, e.Reason)
}

// desired computes the state Sync wants from peers. Peers are taken in order of node name, so
// that when two claim the same block, VTEP address or MAC, the same one wins on every node and
// every run; the loser is reported in the returned errors.
func desired(peers []Peer, l local) (state, []error) {
	sorted := slices.SortedStableFunc(slices.Values(peers), func(a, b Peer) int {
		return cmp.Compare(a.Node, b.Node)
	})
	s := state{
		routes: make(map[netip.Prefix]route, len(peers)),
		neighs: make(map[netip.Addr]mac, len(peers)),
		fdb:    make(map[mac]netip.Addr, len(peers)),
	}
	nodes := make(map[string]bool, len(peers))
	vtepOwner := make(map[netip.Addr]string, len(peers))
	macOwner := make(map[mac]string, len(peers))
	blockOwner := make(map[netip.Prefix]string, len(peers))
	var errs []error
	skip := func(p Peer, format string, args ...any) {
		errs = append(errs, &PeerError{Node: p.Node, Reason: fmt.Sprintf(format, args...)})
	}
	for _, p := range sorted {
		direct := l.subnet.IsValid() && l.subnet.Contains(p.UnderlayIP)
		if reason := checkPeer(p, l, direct); reason != "" {
			skip(p, "%s", reason)
			continue
		}
		var m mac
		if !direct {
			m = mac(p.VTEPMAC)
		}
		switch {
		case nodes[p.Node]:
			skip(p, "node listed twice")
			continue
		case !direct && vtepOwner[p.VTEPAddr] != "":
			skip(p, "vtep address %s also claimed by node %q", p.VTEPAddr, vtepOwner[p.VTEPAddr])
			continue
		case !direct && macOwner[m] != "":
			skip(p, "vtep mac %s also claimed by node %q", p.VTEPMAC, macOwner[m])
			continue
		}
		nodes[p.Node] = true
		r := route{gw: p.UnderlayIP, dev: l.underlay}
		if !direct {
			vtepOwner[p.VTEPAddr], macOwner[m] = p.Node, p.Node
			r = route{gw: p.VTEPAddr, dev: l.vtep, onlink: true}
		}
		routed := 0
		for _, blk := range p.Blocks {
			if reason := checkBlock(blk, l); reason != "" {
				skip(p, "%s", reason)
				continue
			}
			if owner := blockOwner[blk]; owner != "" {
				skip(p, "block %s also claimed by node %q", blk, owner)
				continue
			}
			blockOwner[blk] = p.Node
			s.routes[blk] = r
			routed++
		}
		if !direct && routed > 0 {
			s.neighs[p.VTEPAddr] = m
			s.fdb[m] = p.UnderlayIP
		}
	}
	return s, errs
}

// checkPeer says what makes p unusable, or returns "" if nothing does. The VTEP fields matter
// only for peers reached over VXLAN.
func checkPeer(p Peer, l local, direct bool) string {
	switch {
	case p.Node == "":
		return "no node name"
	case !p.UnderlayIP.Is4():
		return fmt.Sprintf("underlay address %v is not IPv4", p.UnderlayIP)
	case p.UnderlayIP == l.ip:
		return fmt.Sprintf("underlay address %s is this node's", p.UnderlayIP)
	case direct:
		return ""
	case len(p.VTEPMAC) != 6:
		return fmt.Sprintf("vtep mac %q is not an Ethernet address", p.VTEPMAC)
	case p.VTEPMAC[0]&1 != 0 || mac(p.VTEPMAC) == mac{}:
		return fmt.Sprintf("vtep mac %s is not unicast", p.VTEPMAC)
	case !p.VTEPAddr.Is4():
		return fmt.Sprintf("vtep address %v is not IPv4", p.VTEPAddr)
	case p.VTEPAddr == l.addr:
		return fmt.Sprintf("vtep address %s is this node's", p.VTEPAddr)
	}
	return ""
}

// checkBlock says what makes blk unusable as a remote block, or returns "" if nothing does.
func checkBlock(blk netip.Prefix, l local) string {
	switch {
	case !blk.IsValid() || !blk.Addr().Is4():
		return fmt.Sprintf("block %v is not an IPv4 prefix", blk)
	case blk != blk.Masked():
		return fmt.Sprintf("block %s has host bits set", blk)
	case blk.Contains(l.addr):
		return fmt.Sprintf("block %s contains this node's vtep address %s", blk, l.addr)
	}
	return ""
}

// ipNet converts a prefix to the form netlink takes.
func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// prefixOf converts an address with its mask, as netlink returns it, to a prefix.
func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a := addrOf(n.IP)
	ones, bits := n.Mask.Size()
	if !a.IsValid() || bits != a.BitLen() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, ones), true
}

// addrOf converts an address as netlink returns it; nil gives the invalid Addr.
func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}
