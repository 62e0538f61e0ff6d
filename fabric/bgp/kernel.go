package bgp

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RouteProtocol marks the kernel routes KernelRoutes owns ("proto bgp" in ip route).
const RouteProtocol = netlink.RouteProtocol(unix.RTPROT_BGP)

// dumpRetries bounds how often a route dump that the kernel interrupted is repeated.
const dumpRetries = 3

// KernelRoutes is the RouteSink that programs the main routing table through a netlink
// handle, with protocol bgp so that its routes are told from every other route. It owns
// only those: Delete and Sweep never remove a route of another protocol.
//
// Linux has no recursive routes. When a next hop is not on a directly connected subnet
// (a peer on another underlay subnet behind a router), Replace looks up the kernel's route
// to the next hop and installs the route via that route's gateway, as BIRD's "gateway
// recursive" does. The gateway is resolved when the route is installed: if the underlay
// route to the next hop changes later, the route follows only when it is replaced again.
type KernelRoutes struct {
	h   *netlink.Handle
	log *slog.Logger
}

var _ RouteSink = (*KernelRoutes)(nil)

// NewKernelRoutes returns a sink programming the namespace h is bound to.
func NewKernelRoutes(h *netlink.Handle, log *slog.Logger) *KernelRoutes {
	return &KernelRoutes{h: h, log: log}
}

// Replace installs "dst via nextHop proto bgp", resolving a next hop that is not directly
// connected through the kernel's route to it.
func (k *KernelRoutes) Replace(dst netip.Prefix, nextHop netip.Addr) error {
	gw, link, err := k.resolve(nextHop)
	if err != nil {
		return fmt.Errorf("install route %s via %s: %w", dst, nextHop, err)
	}
	r := &netlink.Route{
		Dst:       prefixNet(dst),
		Gw:        gw.AsSlice(),
		LinkIndex: link,
		Protocol:  RouteProtocol,
		Table:     unix.RT_TABLE_MAIN,
		Scope:     netlink.SCOPE_UNIVERSE,
	}
	if err := k.h.RouteReplace(r); err != nil {
		return fmt.Errorf("install route %s via %s: %w", dst, gw, err)
	}
	return nil
}

// resolve returns the gateway and link a route via nextHop must use: nextHop itself when it
// is on a connected subnet, otherwise the gateway of the kernel's route to it.
func (k *KernelRoutes) resolve(nextHop netip.Addr) (netip.Addr, int, error) {
	routes, err := k.h.RouteGet(nextHop.AsSlice())
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("look up route to next hop: %w", err)
	}
	if len(routes) == 0 {
		return netip.Addr{}, 0, errors.New("look up route to next hop: no route")
	}
	r := routes[0]
	if r.Type == unix.RTN_LOCAL {
		return netip.Addr{}, 0, errors.New("next hop is an address of this node")
	}
	gw, ok := netip.AddrFromSlice(r.Gw)
	if !ok {
		return nextHop, r.LinkIndex, nil
	}
	gw = gw.Unmap()
	k.log.Debug("resolved bgp next hop through a gateway", "nextHop", nextHop.String(), "gateway", gw.String())
	return gw, r.LinkIndex, nil
}

// Delete removes the protocol bgp route for dst; a route already gone is not an error.
func (k *KernelRoutes) Delete(dst netip.Prefix) error {
	r := &netlink.Route{Dst: prefixNet(dst), Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}
	if err := k.h.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("delete route %s: %w", dst, err)
	}
	return nil
}

// Sweep removes the protocol bgp routes of the main table whose destination is not in
// keep: after a restart, the routes of the previous run that were not learned again. It
// goes on past a failed deletion and reports every failure.
func (k *KernelRoutes) Sweep(keep []netip.Prefix) error {
	kept := make(map[netip.Prefix]bool, len(keep))
	for _, p := range keep {
		kept[p] = true
	}
	routes, err := k.list()
	if err != nil {
		return err
	}
	var errs []error
	removed := 0
	for _, r := range routes {
		dst := netPrefix(r.Dst)
		if kept[dst] {
			continue
		}
		if err := k.h.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete stale route %s: %w", dst, err))
			continue
		}
		removed++
	}
	if removed > 0 {
		k.log.Info("removed stale bgp routes", "routes", removed)
	}
	return errors.Join(errs...)
}

// list returns the protocol bgp IPv4 routes of the main table.
func (k *KernelRoutes) list() ([]netlink.Route, error) {
	filter := &netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}
	mask := netlink.RT_FILTER_PROTOCOL | netlink.RT_FILTER_TABLE
	var err error
	for range dumpRetries {
		var routes []netlink.Route
		routes, err = k.h.RouteListFiltered(netlink.FAMILY_V4, filter, mask)
		if err == nil {
			return routes, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return nil, fmt.Errorf("list bgp routes: %w", err)
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// netPrefix converts a route destination; nil is the default route.
func netPrefix(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	addr, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(addr.Unmap(), ones)
}
