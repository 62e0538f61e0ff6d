package sim

// The underlay is what a data centre's network is to real nodes: two subnets, each a bridge
// (a rack's switch) in the network namespace loomS-underlay, joined by a router.
//
//	subnet A, 198.18.S.0/24 on br0: the root namespace's link loomS-ul (198.18.S.1, where
//	    the API server listens), nodes 1 to ceil(N/2) at 198.18.S.(10+i), the router at .254
//	subnet B, 198.19.S.0/24 on br1: the other nodes at 198.19.S.(10+i), the router at .254
//
// Each node plugs its eth0 into its subnet's bridge (a veth named after the node in the
// underlay namespace) and routes the other subnet through the router; the root namespace
// routes subnet B through it too, so that the API server answers the nodes there. The
// router (router.go) also leads to a network outside the cluster. Nothing in the sim has a
// default route but that external network, whose only way out is the router: nothing the
// sim sends can leave the machine.
//
// In ModeBridge the sim routes every node's pod CIDR as well: directly to a node on the same
// subnet, through the router to one on the other, and from the router to each node. In
// Loom's own modes pod addresses are loomd's to route (VXLAN, or BGP with the router as
// route reflector).

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// underlaySubnet is one underlay subnet: its bridge, and the router's leg on it.
type underlaySubnet struct {
	prefix netip.Prefix
	bridge string
	// routerPort is the router's veth on the bridge, routerLink its other end in the router.
	routerPort string
	routerLink string
}

// gateway is the router's address on the subnet, the last but one: 198.18.S.254.
func (u underlaySubnet) gateway() netip.Addr {
	a := u.prefix.Addr().As4()
	a[3] = 254
	return netip.AddrFrom4(a)
}

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

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
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

// addVeth creates a veth pair: name in the handle's namespace, peer in peerNS.
func addVeth(h *netlink.Handle, name, peer string, peerNS netns.NsHandle) error {
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: name},
		PeerName:      peer,
		PeerNamespace: netlink.NsFd(int(peerNS)),
	}
	if err := h.LinkAdd(veth); err != nil {
		return fmt.Errorf("add link %s (peer %s): %w", name, peer, err)
	}
	return nil
}

// addressUp gives a link its address and sets it up.
func addressUp(h *netlink.Handle, name string, addr netip.Prefix) (netlink.Link, error) {
	l, err := h.LinkByName(name)
	if err != nil {
		return nil, err
	}
	if err := h.AddrAdd(l, prefixOf(addr.Addr(), addr.Bits())); err != nil {
		return nil, fmt.Errorf("address %s on %s: %w", addr, name, err)
	}
	return linkUp(h, name)
}

// addRoute routes dst via gw out of link.
func addRoute(h *netlink.Handle, link netlink.Link, dst netip.Prefix, gw netip.Addr) error {
	r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipNet(dst), Gw: gw.AsSlice()}
	if err := h.RouteAdd(r); err != nil {
		return fmt.Errorf("route %s via %s dev %s: %w", dst, gw, link.Attrs().Name, err)
	}
	return nil
}

// buildUnderlay creates the underlay namespace, one bridge per subnet, and the root
// namespace's link into subnet A with its route to subnet B. The route goes with the link.
func buildUnderlay(ipCmd string, s slotDir, sriov bool) error {
	if err := addNetNS(ipCmd, s.underlayNetNS()); err != nil {
		return err
	}
	// A switch does not run the host's firewall: with br_netfilter loaded, every bridged
	// frame would otherwise go through the (empty) iptables hooks of the underlay namespace.
	out, err := exec.Command(ipCmd, "netns", "exec", s.underlayNetNS(), "sysctl", "-q", "-e",
		"net.bridge.bridge-nf-call-iptables=0", "net.bridge.bridge-nf-call-ip6tables=0",
		"net.bridge.bridge-nf-call-arptables=0").CombinedOutput()
	if err != nil {
		return fmt.Errorf("turn off bridge netfilter in %s: %s: %w", s.underlayNetNS(), strings.TrimSpace(string(out)), err)
	}
	ul, err := openNetNS(s.underlayNetNS())
	if err != nil {
		return err
	}
	defer ul.close()
	bridges := []string{s.subnets()[0].bridge, s.subnets()[1].bridge}
	if sriov {
		bridges = append(bridges, sriovBridge)
	}
	for _, br := range bridges {
		if err = ul.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: br}}); err != nil {
			return fmt.Errorf("add bridge %s: %w", br, err)
		}
		if _, err = linkUp(ul.Handle, br); err != nil {
			return err
		}
	}
	host, err := netlink.NewHandle()
	if err != nil {
		return err
	}
	defer host.Close()
	a, b := s.subnets()[0], s.subnets()[1]
	if err = addVeth(host, s.hostLink(), "host", ul.ns); err != nil {
		return err
	}
	l, err := addressUp(host, s.hostLink(), netip.PrefixFrom(s.apiServerIP(), a.prefix.Bits()))
	if err != nil {
		return err
	}
	if err = attachToBridge(ul.Handle, "host", a.bridge); err != nil {
		return err
	}
	return addRoute(host, l, b.prefix, a.gateway())
}

func attachToBridge(h *netlink.Handle, name, bridge string) error {
	br, err := h.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("attach %s to %s: %w", name, bridge, err)
	}
	l, err := h.LinkByName(name)
	if err == nil {
		err = h.LinkSetMaster(l, br)
	}
	if err == nil {
		err = h.LinkSetUp(l)
	}
	if err != nil {
		return fmt.Errorf("attach %s to %s: %w", name, bridge, err)
	}
	return nil
}

// buildNodeNetwork creates node n's network namespace, plugs its eth0 into its subnet and
// routes the other subnet through the router; in ModeBridge it also routes the other
// nodes' pod CIDRs. With o.SRIOV it gives the node its simulated SR-IOV NIC.
func buildNodeNetwork(ipCmd string, s slotDir, o Options, n Node, all []Node) error {
	mode := o.Mode
	u, ok := s.subnetOf(n.UnderlayIP)
	if !ok {
		return fmt.Errorf("%s: underlay address %s is on no subnet of slot %d", n.Name, n.UnderlayIP, s.slot)
	}
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
	if err = addVeth(ul.Handle, n.Name, "eth0", node.ns); err != nil {
		return err
	}
	if err = attachToBridge(ul.Handle, n.Name, u.bridge); err != nil {
		return err
	}
	if _, err = linkUp(node.Handle, "lo"); err != nil {
		return err
	}
	eth0, err := addressUp(node.Handle, "eth0", netip.PrefixFrom(n.UnderlayIP, u.prefix.Bits()))
	if err != nil {
		return fmt.Errorf("%s: %w", n.Name, err)
	}
	for _, other := range s.subnets() {
		if other.prefix != u.prefix {
			if err := addRoute(node.Handle, eth0, other.prefix, n.Gateway); err != nil {
				return fmt.Errorf("%s: %w", n.Name, err)
			}
		}
	}
	if o.SRIOV {
		if err := buildSimNIC(ul, node, n); err != nil {
			return err
		}
	}
	if mode.loomNetwork() {
		return nil
	}
	for _, peer := range all {
		if peer.Name == n.Name {
			continue
		}
		gw := peer.UnderlayIP
		if peer.Subnet != n.Subnet {
			gw = n.Gateway
		}
		if err := addRoute(node.Handle, eth0, peer.PodCIDR, gw); err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
	}
	return nil
}

// setSysctl writes a sysctl (a path under /proc/sys) of a named network namespace.
// /proc/sys/net shows the network namespace of the thread that opens it, so a thread moves
// into the namespace to write it; that thread is never unlocked, and Go ends a locked thread
// when its goroutine returns, so no other goroutine runs in the namespace.
func setSysctl(nsName, path, value string) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		ns, err := netns.GetFromName(nsName)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", nsName, err)
			return
		}
		defer ns.Close()
		if err = netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", nsName, err)
			return
		}
		if err = os.WriteFile(path, []byte(value), 0o644); err != nil {
			err = fmt.Errorf("set %s in netns %s: %w", path, nsName, err)
		}
		errc <- err
	}()
	return <-errc
}
