package delegate

import (
	"fmt"
	"net"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// setDefaultRoute makes ifname carry the pod's default route through the given gateways
// ("default-route" in the networks annotation): for each address family named by a gateway,
// every other default route in the pod is removed first. It runs after all attachments, so
// a later delegate cannot put its own default route back.
func setDefaultRoute(netnsPath, ifname string, gateways []string) error {
	return ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		link, err := netlink.LinkByName(ifname)
		if err != nil {
			return fmt.Errorf("set default route: find interface %s: %w", ifname, err)
		}
		for _, g := range gateways {
			gw := net.ParseIP(g)
			if gw == nil {
				return fmt.Errorf("set default route: %q is not an IP address", g)
			}
			family, dst := netlink.FAMILY_V4, &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}
			if gw.To4() == nil {
				family, dst = netlink.FAMILY_V6, &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
			}
			routes, err := netlink.RouteList(nil, family)
			if err != nil {
				return fmt.Errorf("set default route: list routes: %w", err)
			}
			for _, r := range routes {
				if r.Dst == nil || (r.Dst.IP.IsUnspecified() && isZeroMask(r.Dst.Mask)) {
					if err := netlink.RouteDel(&r); err != nil {
						return fmt.Errorf("set default route: remove default route via %s: %w", r.Gw, err)
					}
				}
			}
			route := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst, Gw: gw}
			if err := netlink.RouteAdd(route); err != nil {
				return fmt.Errorf("set default route via %s dev %s: %w", gw, ifname, err)
			}
		}
		return nil
	})
}

func isZeroMask(m net.IPMask) bool {
	ones, _ := m.Size()
	return ones == 0
}
