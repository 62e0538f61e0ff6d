// Package podnet plumbs a pod's interface on Loom's primary network: a veth pair whose pod end
// carries the pod's address as a /32 and a default route through a link-local gateway, and
// whose host end answers for that gateway and carries the route back to the pod.
//
// Every mode of the primary network (vxlan, bgp, vxlan-crosssubnet) uses the same plumbing:
// a pod never sees how its packets leave the node. The host end holds 169.254.1.1/32 with
// link scope, so the pod's ARP request for its gateway is answered by the host end itself.
// Unlike proxy ARP, that works on nodes without a default route and with arp_ignore=1, and it
// never changes the source address the node picks for traffic of its own.
//
// This package imports no Kubernetes client: the loom CNI binary links it to remove a pod's
// interface when loomd is down.
package podnet

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Kind is the attachment kind of Loom's primary network; the loom binary uses it to remove
// the primary network's interfaces from the ledger when loomd is down.
const Kind = "loom-primary"

// Gateway is the link-local address every pod routes through.
var Gateway = netip.MustParseAddr("169.254.1.1")

// RouteProtocol marks the host routes to pods, so that routes left by a pod that is gone can
// be told apart from anyone else's.
const RouteProtocol netlink.RouteProtocol = 0x4c

// HostVethName is the host end's name for a pod interface: "loom" and 11 hex digits of a hash
// of the container and interface, so it is stable across loomd restarts and the ledger need
// not record it.
func HostVethName(containerID, ifname string) string {
	sum := sha256.Sum256([]byte(containerID + "/" + ifname))
	return "loom" + hex.EncodeToString(sum[:])[:11]
}

// Interfaces are the two ends of a pod's veth pair as a CNI result reports them.
type Interfaces struct {
	Host, Pod *current.Interface
}

// Add creates the veth pair for a pod interface: ifname with addr/32 in the pod's network
// namespace, the host end in the current one. On failure nothing is left behind.
func Add(netnsPath, containerID, ifname string, addr netip.Addr, mtu int) (Interfaces, error) {
	podNS, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return Interfaces{}, fmt.Errorf("open netns %s: %w", netnsPath, err)
	}
	defer podNS.Close()
	pod, err := netlink.NewHandleAt(podNS)
	if err != nil {
		return Interfaces{}, fmt.Errorf("netlink in netns %s: %w", netnsPath, err)
	}
	defer pod.Close()

	hostName := HostVethName(containerID, ifname)
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: hostName, MTU: mtu},
		PeerName:      ifname,
		PeerNamespace: netlink.NsFd(int(podNS)),
	}
	if err = netlink.LinkAdd(veth); err != nil {
		return Interfaces{}, fmt.Errorf("create veth %s for %s in %s: %w", hostName, ifname, netnsPath, err)
	}
	ok := false
	defer func() {
		if !ok {
			deleteLink(hostName)
		}
	}()
	podLink, err := pod.LinkByName(ifname)
	if err != nil {
		return Interfaces{}, fmt.Errorf("find %s in %s: %w", ifname, netnsPath, err)
	}
	if err = configurePodSide(pod, podLink, addr, mtu); err != nil {
		return Interfaces{}, fmt.Errorf("configure %s in %s: %w", ifname, netnsPath, err)
	}
	hostLink, err := configureHostSide(hostName, addr)
	if err != nil {
		return Interfaces{}, err
	}
	ok = true
	return Interfaces{
		Host: &current.Interface{Name: hostName, Mac: hostLink.Attrs().HardwareAddr.String()},
		Pod:  &current.Interface{Name: ifname, Mac: podLink.Attrs().HardwareAddr.String(), Sandbox: netnsPath},
	}, nil
}

func configurePodSide(h *netlink.Handle, link netlink.Link, addr netip.Addr, mtu int) error {
	if mtu > 0 && link.Attrs().MTU != mtu {
		if err := h.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("set MTU %d: %w", mtu, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("set up: %w", err)
	}
	if err := h.AddrAdd(link, &netlink.Addr{IPNet: hostPrefix(addr)}); err != nil {
		return fmt.Errorf("add address %s: %w", addr, err)
	}
	gw := hostPrefix(Gateway)
	idx := link.Attrs().Index
	if err := h.RouteAdd(&netlink.Route{LinkIndex: idx, Dst: gw, Scope: netlink.SCOPE_LINK}); err != nil {
		return fmt.Errorf("add route to gateway %s: %w", Gateway, err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: idx, Gw: gw.IP}); err != nil {
		return fmt.Errorf("add default route via %s: %w", Gateway, err)
	}
	return nil
}

func configureHostSide(hostName string, addr netip.Addr) (netlink.Link, error) {
	link, err := netlink.LinkByName(hostName)
	if err != nil {
		return nil, fmt.Errorf("find host interface %s: %w", hostName, err)
	}
	gw := &netlink.Addr{IPNet: hostPrefix(Gateway), Scope: int(netlink.SCOPE_LINK)}
	if err = netlink.AddrAdd(link, gw); err != nil {
		return nil, fmt.Errorf("add gateway address to %s: %w", hostName, err)
	}
	if err = netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("set %s up: %w", hostName, err)
	}
	r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: hostPrefix(addr), Scope: netlink.SCOPE_LINK, Protocol: RouteProtocol}
	if err = netlink.RouteReplace(r); err != nil {
		return nil, fmt.Errorf("add route to pod %s via %s: %w", addr, hostName, err)
	}
	return link, nil
}

// Check verifies a pod interface: the host end exists and routes to addr, and the pod end
// exists in the namespace with addr.
func Check(netnsPath, containerID, ifname string, addr netip.Addr) error {
	hostName := HostVethName(containerID, ifname)
	link, err := netlink.LinkByName(hostName)
	if err != nil {
		return fmt.Errorf("host interface %s: %w", hostName, err)
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: link.Attrs().Index, Dst: hostPrefix(addr)},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_DST)
	if err != nil || len(routes) == 0 {
		return fmt.Errorf("host route to pod %s via %s is missing", addr, hostName)
	}
	return ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			return fmt.Errorf("interface %s: %w", ifname, err)
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if a.IP.Equal(addr.AsSlice()) {
				return nil
			}
		}
		return fmt.Errorf("interface %s does not carry %s", ifname, addr)
	})
}

// Del removes a pod interface. Deleting the host end deletes the pair; a pair already gone,
// or a namespace already gone, is success.
func Del(containerID, ifname string) error {
	return deleteLink(HostVethName(containerID, ifname))
}

func deleteLink(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil
		}
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := netlink.LinkDel(link); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

func hostPrefix(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
}

// HostLinks lists the host ends of pod interfaces on this node, by name. GC uses it to find
// interfaces whose pods are gone.
func HostLinks() ([]string, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var names []string
	for _, l := range links {
		if _, ok := l.(*netlink.Veth); ok && isHostVeth(l.Attrs().Name) {
			names = append(names, l.Attrs().Name)
		}
	}
	return names, nil
}

func isHostVeth(name string) bool {
	if len(name) != 15 || name[:4] != "loom" {
		return false
	}
	_, err := hex.DecodeString(name[4:] + "0")
	return err == nil
}

// DeleteHostLink removes a pod interface by its host end's name; one already gone is success.
func DeleteHostLink(name string) error { return deleteLink(name) }

// AddressOf returns the pod address in a result that Add's caller returned.
func AddressOf(prev types.Result) (netip.Addr, error) {
	if prev == nil {
		return netip.Addr{}, errors.New("no recorded result to check against")
	}
	res, err := current.NewResultFromResult(prev)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("read recorded result: %w", err)
	}
	for _, ipc := range res.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok {
			return a.Unmap(), nil
		}
	}
	return netip.Addr{}, errors.New("recorded result has no address")
}

// LinkLocals returns the IPv6 link-local addresses a pod's interface ifname (of any
// network) has in the network namespace at netnsPath: the link-local sources the pod may
// send from. The kernel gives them when the link comes up, from the hardware address it had
// then, so they are read rather than derived. None found (IPv6 off, the link not up yet, the
// namespace gone) is no error: the policy engine then accepts any link-local source there.
func LinkLocals(netnsPath, ifname string) []netip.Addr {
	if netnsPath == "" || ifname == "" {
		return nil
	}
	var out []netip.Addr
	_ = ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipn.IP); ok && ip.Unmap().Is6() && ip.IsLinkLocalUnicast() {
					out = append(out, ip)
				}
			}
		}
		return nil
	})
	return out
}
