package main

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/loom-cni/loom/e2e/sim"
)

// writeAnnouncement writes a BIRD configuration that is the router's own (DIR/bird.conf,
// included, untouched) plus a static protocol that originates every fake node's block on the
// router's link to node's subnet, and returns its path. BIRD announces such routes to node
// with its own address on that link as next hop: node's Gateway, the fake nodes' underlay
// address.
func writeAnnouncement(c *sim.Cluster, node sim.Node, fakes []fakeNode) (string, error) {
	link, err := linkWithAddr(c.Router().NetNS, node.Gateway)
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Written by fabricbench: the router's configuration and the blocks of %d simulated nodes.\n", len(fakes))
	fmt.Fprintf(&b, "include %q;\n\nprotocol static fabricbench {\n\tipv4;\n", filepath.Join(c.Dir(), "bird.conf"))
	for _, f := range fakes {
		fmt.Fprintf(&b, "\troute %s via %q;\n", f.block, link)
	}
	b.WriteString("}\n")
	path := filepath.Join(c.Dir(), "fabricbench-bird.conf")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return "", err
	}
	return path, nil
}

// linkWithAddr names the link that holds addr in the named network namespace.
func linkWithAddr(netnsName string, addr netip.Addr) (string, error) {
	ns, err := netns.GetFromName(netnsName)
	if err != nil {
		return "", fmt.Errorf("open netns %s: %w", netnsName, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return "", fmt.Errorf("netlink in netns %s: %w", netnsName, err)
	}
	defer h.Close()
	addrs, err := h.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return "", fmt.Errorf("list the addresses of netns %s: %w", netnsName, err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == addr {
			l, err := h.LinkByIndex(a.LinkIndex)
			if err != nil {
				return "", err
			}
			return l.Attrs().Name, nil
		}
	}
	return "", fmt.Errorf("no link in netns %s holds %s", netnsName, addr)
}
