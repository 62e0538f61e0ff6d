package sim

// The underlay is what a rack switch is to real nodes: a bridge (br0) in the network
// namespace loomS-underlay, with one veth per node (eth0 in the node, NAME in the underlay)
// and one to the root namespace (loomS-ul, 198.18.S.1/24), which is where the API server
// listens. Nodes reach each other's pod CIDRs through static routes via the other node's
// underlay address, so the default network works across nodes without an overlay. Nodes
// get no default route: nothing they send can leave the machine.

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

const underlayBridge = "br0"

// netHandle is a netlink handle and namespace file of one named network namespace.
type netHandle struct {
	*netlink.Handle
	ns netns.NsHandle
}

func openNetNS(name string) (netHandle, error) {
	ns, err := netns.GetFromName(name)
	if err != nil {
		return netHandle{}, fmt.Errorf("open netns %s: %w", name, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return netHandle{}, fmt.Errorf("netlink in netns %s: %w", name, err)
	}
	return netHandle{h, ns}, nil
}

func (h netHandle) close() {
	h.Handle.Close()
	h.ns.Close()
}

func addNetNS(ipCmd, name string) error {
	out, err := exec.Command(ipCmd, "netns", "add", name).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip netns add %s: %s: %w", name, strings.TrimSpace(string(out)), err)
	}
	return nil
}

func prefixOf(a netip.Addr, bits int) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, a.BitLen())}}
}

// linkUp sets a link up, looking it up by name in the handle's namespace.
func linkUp(h *netlink.Handle, name string) (netlink.Link, error) {
	l, err := h.LinkByName(name)
	if err == nil {
		err = h.LinkSetUp(l)
	}
	if err != nil {
		return nil, fmt.Errorf("set %s up: %w", name, err)
	}
	return l, nil
}

// buildUnderlay creates the underlay namespace, its bridge and the root namespace's link.
func buildUnderlay(ipCmd string, s slotDir) error {
	if err := addNetNS(ipCmd, s.underlayNetNS()); err != nil {
		return err
	}
	ul, err := openNetNS(s.underlayNetNS())
	if err != nil {
		return err
	}
	defer ul.close()
	if err = ul.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: underlayBridge}}); err != nil {
		return fmt.Errorf("add bridge %s: %w", underlayBridge, err)
	}
	br, err := linkUp(ul.Handle, underlayBridge)
	if err != nil {
		return err
	}
	host, err := netlink.NewHandle()
	if err != nil {
		return err
	}
	defer host.Close()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: s.hostLink()},
		PeerName:      "host",
		PeerNamespace: netlink.NsFd(int(ul.ns)),
	}
	if err = host.LinkAdd(veth); err != nil {
		return fmt.Errorf("add link %s: %w", s.hostLink(), err)
	}
	l, err := host.LinkByName(s.hostLink())
	if err != nil {
		return err
	}
	if err := host.AddrAdd(l, prefixOf(s.apiServerIP(), 24)); err != nil {
		return fmt.Errorf("address %s: %w", s.hostLink(), err)
	}
	if _, err := linkUp(host, s.hostLink()); err != nil {
		return err
	}
	return attachToBridge(ul.Handle, "host", br)
}

func attachToBridge(h *netlink.Handle, name string, br netlink.Link) error {
	l, err := h.LinkByName(name)
	if err == nil {
		err = h.LinkSetMaster(l, br)
	}
	if err == nil {
		err = h.LinkSetUp(l)
	}
	if err != nil {
		return fmt.Errorf("attach %s to %s: %w", name, br.Attrs().Name, err)
	}
	return nil
}

// buildNodeNetwork creates node n's network namespace, plugs its eth0 into the underlay
// and routes the other nodes' pod CIDRs to them.
func buildNodeNetwork(ipCmd string, s slotDir, n Node, all []Node) error {
	if err := addNetNS(ipCmd, n.NetNS); err != nil {
		return err
	}
	ul, err := openNetNS(s.underlayNetNS())
	if err != nil {
		return err
	}
	defer ul.close()
	node, err := openNetNS(n.NetNS)
	if err != nil {
		return err
	}
	defer node.close()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: n.Name},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(int(node.ns)),
	}
	if err = ul.LinkAdd(veth); err != nil {
		return fmt.Errorf("add link %s: %w", n.Name, err)
	}
	br, err := ul.LinkByName(underlayBridge)
	if err != nil {
		return err
	}
	if err = attachToBridge(ul.Handle, n.Name, br); err != nil {
		return err
	}
	if _, err = linkUp(node.Handle, "lo"); err != nil {
		return err
	}
	eth0, err := node.LinkByName("eth0")
	if err != nil {
		return err
	}
	if err := node.AddrAdd(eth0, prefixOf(n.UnderlayIP, 24)); err != nil {
		return fmt.Errorf("address eth0 of %s: %w", n.Name, err)
	}
	if _, err := linkUp(node.Handle, "eth0"); err != nil {
		return err
	}
	for _, peer := range all {
		if peer.Name == n.Name {
			continue
		}
		dst := &net.IPNet{IP: peer.PodCIDR.Addr().AsSlice(), Mask: net.CIDRMask(peer.PodCIDR.Bits(), 32)}
		r := &netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: dst, Gw: peer.UnderlayIP.AsSlice()}
		if err := node.RouteAdd(r); err != nil {
			return fmt.Errorf("route %s via %s in %s: %w", peer.PodCIDR, peer.UnderlayIP, n.Name, err)
		}
	}
	return nil
}
