package vxlan

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// Ensure creates the VTEP or brings an existing one to the configuration: a VTEP with a wrong
// VNI, port, local address, underlay link, learning or multicast setting, or a link of another
// type under its name, is deleted and recreated; a wrong MTU or MAC is corrected in place. It
// then makes the VTEP address the only IPv4 address on the VTEP and sets the link up. Before
// any of that it installs the GuardTable, admitting no peer, unless the table is there already.
//
// Ensure returns the VTEP's MAC, which peers need. It is derived from Config.LocalIP, so it is
// the same after a recreation or a restart of loomd.
//
// Recreating the VTEP removes the routes and entries through it: call Sync afterwards (Run
// does this by itself).
func (b *Backend) Ensure() (net.HardwareAddr, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ensure()
}

// ensure is Ensure with b.mu held.
func (b *Backend) ensure() (net.HardwareAddr, error) {
	under, err := b.h.LinkByName(b.cfg.Underlay)
	if err != nil {
		return nil, fmt.Errorf("look up underlay link %s: %w", b.cfg.Underlay, err)
	}
	// The local address must be on the underlay link: the VTEP binds to it, and in
	// crosssubnet mode its prefix defines which peers are direct.
	if _, err = b.underlaySubnet(under); err != nil {
		return nil, err
	}
	// The guard goes in before the VTEP can listen: until the first Sync it admits no one.
	if err = b.guard.ensure(); err != nil {
		return nil, fmt.Errorf("guard vtep %s: %w", b.cfg.Name, err)
	}
	want := b.vtepSpec(under)
	link, err := b.ensureLink(want)
	if err != nil {
		return nil, err
	}
	if err = b.ensureAddr(link); err != nil {
		return nil, err
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err = b.h.LinkSetUp(link); err != nil {
			return nil, fmt.Errorf("set vtep %s up: %w", b.cfg.Name, err)
		}
	}
	return want.HardwareAddr, nil
}

// vtepSpec is the VTEP as it should be, on top of the underlay link under.
func (b *Backend) vtepSpec(under netlink.Link) *netlink.Vxlan {
	mtu := b.cfg.MTU
	if mtu == 0 {
		mtu = under.Attrs().MTU - overhead
	}
	return &netlink.Vxlan{
		LinkAttrs: netlink.LinkAttrs{
			Name:         b.cfg.Name,
			MTU:          mtu,
			HardwareAddr: vtepMAC(b.cfg.LocalIP),
		},
		VxlanId:      b.cfg.VNI,
		VtepDevIndex: under.Attrs().Index,
		SrcAddr:      b.cfg.LocalIP.AsSlice(),
		Port:         b.cfg.Port,
		Learning:     false,
	}
}

// vtepMAC derives the VTEP's MAC from the node's underlay address: 0e:6c (locally
// administered, unicast) followed by the address's four bytes. Underlay addresses are unique
// in a cluster, so the MACs are too.
func vtepMAC(local netip.Addr) net.HardwareAddr {
	a := local.As4()
	return net.HardwareAddr{0x0e, 0x6c, a[0], a[1], a[2], a[3]}
}

// ensureLink returns the VTEP link, created, recreated or corrected to match want.
func (b *Backend) ensureLink(want *netlink.Vxlan) (netlink.Link, error) {
	cur, err := b.h.LinkByName(want.Name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		return b.createLink(want)
	case err != nil:
		return nil, fmt.Errorf("look up vtep %s: %w", want.Name, err)
	}
	if reason := mismatch(cur, want); reason != "" {
		b.log.Warn("recreating vtep", "reason", reason)
		if err := b.h.LinkDel(cur); err != nil {
			return nil, fmt.Errorf("delete vtep %s (%s): %w", want.Name, reason, err)
		}
		return b.createLink(want)
	}
	attrs := cur.Attrs()
	if attrs.MTU != want.MTU {
		if err := b.h.LinkSetMTU(cur, want.MTU); err != nil {
			return nil, fmt.Errorf("set vtep %s mtu %d: %w", want.Name, want.MTU, err)
		}
	}
	if !bytes.Equal(attrs.HardwareAddr, want.HardwareAddr) {
		if err := b.h.LinkSetHardwareAddr(cur, want.HardwareAddr); err != nil {
			return nil, fmt.Errorf("set vtep %s mac %s: %w", want.Name, want.HardwareAddr, err)
		}
	}
	return cur, nil
}

// createLink adds the VTEP and returns it as the kernel reports it.
func (b *Backend) createLink(want *netlink.Vxlan) (netlink.Link, error) {
	if err := b.h.LinkAdd(want); err != nil {
		return nil, fmt.Errorf("create vtep %s: %w", want.Name, err)
	}
	link, err := b.h.LinkByName(want.Name)
	if err != nil {
		return nil, fmt.Errorf("look up created vtep %s: %w", want.Name, err)
	}
	b.log.Info("created vtep", "vni", want.VxlanId, "port", want.Port, "mac", want.HardwareAddr.String())
	return link, nil
}

// mismatch says why the existing link cur cannot serve as the VTEP want, or returns "" when it
// can. MTU and MAC are not reasons: they can be changed in place.
func mismatch(cur netlink.Link, want *netlink.Vxlan) string {
	v, ok := cur.(*netlink.Vxlan)
	switch {
	case !ok:
		return fmt.Sprintf("link type %s, want vxlan", cur.Type())
	case v.VxlanId != want.VxlanId:
		return fmt.Sprintf("vni %d, want %d", v.VxlanId, want.VxlanId)
	case v.Port != want.Port:
		return fmt.Sprintf("port %d, want %d", v.Port, want.Port)
	case !v.SrcAddr.Equal(want.SrcAddr):
		return fmt.Sprintf("local address %v, want %v", v.SrcAddr, want.SrcAddr)
	case v.VtepDevIndex != want.VtepDevIndex:
		return fmt.Sprintf("underlay link index %d, want %d", v.VtepDevIndex, want.VtepDevIndex)
	case v.Learning:
		return "learning on"
	case v.Group != nil && !v.Group.IsUnspecified():
		return fmt.Sprintf("remote or group %v set", v.Group)
	case v.FlowBased:
		return "external (flow-based) mode"
	}
	return ""
}

// ensureAddr makes the VTEP address, as a /32, the only IPv4 address on the VTEP.
func (b *Backend) ensureAddr(link netlink.Link) error {
	addrs, err := dump(func() ([]netlink.Addr, error) { return b.h.AddrList(link, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("list addresses of vtep %s: %w", b.cfg.Name, err)
	}
	want := netip.PrefixFrom(b.cfg.Addr, 32)
	found := false
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok && p == want {
			found = true
			continue
		}
		if err := b.h.AddrDel(link, &a); err != nil {
			return fmt.Errorf("delete address %s from vtep %s: %w", a.IPNet, b.cfg.Name, err)
		}
	}
	if found {
		return nil
	}
	if err := b.h.AddrAdd(link, &netlink.Addr{IPNet: ipNet(want)}); err != nil {
		return fmt.Errorf("add address %s to vtep %s: %w", want, b.cfg.Name, err)
	}
	return nil
}

// underlaySubnet returns the subnet of the local underlay address on the underlay link, or an
// error if the address is not configured there.
func (b *Backend) underlaySubnet(under netlink.Link) (netip.Prefix, error) {
	addrs, err := dump(func() ([]netlink.Addr, error) { return b.h.AddrList(under, netlink.FAMILY_V4) })
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("list addresses of underlay %s: %w", b.cfg.Underlay, err)
	}
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok && p.Addr() == b.cfg.LocalIP {
			return p.Masked(), nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("find local address %s on underlay %s: not configured there",
		b.cfg.LocalIP, b.cfg.Underlay)
}
