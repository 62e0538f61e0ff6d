package attach

import (
	"errors"
	"fmt"
	"net"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// nsHandle is a network namespace held open and a netlink handle in it. Working through
// handles keeps the calling thread where it is: nothing here switches namespaces.
type nsHandle struct {
	path string
	ns   netns.NsHandle
	nl   *netlink.Handle
}

// openNS opens the namespace at path. A path that is gone, or no longer a namespace (a
// runtime may leave the file of a namespace that died), is reported as gone with a nil error.
func openNS(path string) (h *nsHandle, gone bool, err error) {
	// ns.GetNS tells a missing or stale namespace from other failures.
	probe, err := ns.GetNS(path)
	var notExist ns.NSPathNotExistErr
	var notNS ns.NSPathNotNSErr
	if errors.As(err, &notExist) || errors.As(err, &notNS) {
		return nil, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("open netns %s: %w", path, err)
	}
	defer probe.Close()
	nsh, err := netns.GetFromPath(path)
	if err != nil {
		return nil, false, fmt.Errorf("open netns %s: %w", path, err)
	}
	nl, err := netlink.NewHandleAt(nsh)
	if err != nil {
		nsh.Close()
		return nil, false, fmt.Errorf("netlink in netns %s: %w", path, err)
	}
	return &nsHandle{path: path, ns: nsh, nl: nl}, false, nil
}

func (h *nsHandle) Close() {
	h.nl.Close()
	h.ns.Close()
}

// link returns the first of names that is a link in the namespace, nil when none is.
func (h *nsHandle) link(names ...string) (netlink.Link, error) {
	for _, name := range names {
		if name == "" {
			continue
		}
		l, err := h.nl.LinkByName(name)
		if err == nil {
			return l, nil
		}
		var notFound netlink.LinkNotFoundError
		if !errors.As(err, &notFound) {
			return nil, fmt.Errorf("find %s in netns %s: %w", name, h.path, err)
		}
	}
	return nil, nil
}

// linkAttrs are the attributes of a netdev that ADD changes and DEL gives back.
type linkAttrs struct {
	name string
	mac  string
	mtu  int
	up   bool
}

func attrsOf(l netlink.Link) linkAttrs {
	a := l.Attrs()
	return linkAttrs{name: a.Name, mac: a.HardwareAddr.String(), mtu: a.MTU, up: a.Flags&net.FlagUp != 0}
}

// setAttrs gives the link in h the name, MAC and MTU of want (those that are set), leaving it
// down. A link that has them all is not touched, not even set down.
func (h *nsHandle) setAttrs(l netlink.Link, want linkAttrs) error {
	cur := attrsOf(l)
	rename := want.name != "" && cur.name != want.name
	if !rename && (want.mac == "" || cur.mac == want.mac) && (want.mtu == 0 || cur.mtu == want.mtu) {
		return nil
	}
	if err := h.nl.LinkSetDown(l); err != nil {
		return fmt.Errorf("set %s down in netns %s: %w", cur.name, h.path, err)
	}
	if rename {
		if err := h.nl.LinkSetName(l, want.name); err != nil {
			return fmt.Errorf("rename %s to %s in netns %s: %w", cur.name, want.name, h.path, err)
		}
	}
	if want.mac != "" && cur.mac != want.mac {
		mac, err := net.ParseMAC(want.mac)
		if err != nil {
			return fmt.Errorf("set mac of %s: %w", want.name, err)
		}
		if err := h.nl.LinkSetHardwareAddr(l, mac); err != nil {
			return fmt.Errorf("set mac %s on %s in netns %s: %w", want.mac, want.name, h.path, err)
		}
	}
	if want.mtu != 0 && cur.mtu != want.mtu {
		if err := h.nl.LinkSetMTU(l, want.mtu); err != nil {
			return fmt.Errorf("set mtu %d on %s in netns %s: %w", want.mtu, want.name, h.path, err)
		}
	}
	return nil
}

// move moves the link named name from h into the namespace to, and returns it as seen there.
func (h *nsHandle) move(name string, to *nsHandle) (netlink.Link, error) {
	l, err := h.nl.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("find %s in netns %s: %w", name, h.path, err)
	}
	if err = h.nl.LinkSetNsFd(l, int(to.ns)); err != nil {
		return nil, fmt.Errorf("move %s from netns %s into netns %s: %w", name, h.path, to.path, err)
	}
	moved, err := to.nl.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("find %s in netns %s after moving it there: %w", name, to.path, err)
	}
	return moved, nil
}

// dadTimeout bounds how long configure waits for IPv6 duplicate address detection.
const dadTimeout = 5 * time.Second

// configure gives the link in h the addresses and routes of res (those of res.Interfaces[0],
// which is the link), as the reference plugins' ipam.ConfigureIface does, without switching
// the calling thread into the namespace. Routes without a gateway take the gateway of the
// first address of their family. It waits for IPv6 addresses to leave the tentative state, so
// the pod can use them at once.
func (h *nsHandle) configure(l netlink.Link, res *current.Result) error {
	var v4gw, v6gw net.IP
	v6 := false
	for _, ipc := range res.IPs {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: ipc.Address.IP, Mask: ipc.Address.Mask}}
		if err := h.nl.AddrAdd(l, addr); err != nil {
			return fmt.Errorf("add address %s: %w", addr.IPNet, err)
		}
		switch {
		case ipc.Address.IP.To4() != nil:
			v4gw = cmpOr(v4gw, ipc.Gateway)
		default:
			v6gw, v6 = cmpOr(v6gw, ipc.Gateway), true
		}
	}
	if v6 {
		if err := h.settle(l); err != nil {
			return err
		}
	}
	for _, r := range res.Routes {
		route := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: &net.IPNet{IP: r.Dst.IP, Mask: r.Dst.Mask},
			Gw: r.GW, Priority: r.Priority, MTU: r.MTU, AdvMSS: r.AdvMSS}
		if route.Gw == nil {
			route.Gw = v6gw
			if r.Dst.IP.To4() != nil {
				route.Gw = v4gw
			}
		}
		if r.Table != nil {
			route.Table = *r.Table
		}
		if r.Scope != nil {
			route.Scope = netlink.Scope(*r.Scope)
		}
		if err := h.nl.RouteAdd(route); err != nil {
			return fmt.Errorf("add route to %s via %v: %w", &r.Dst, route.Gw, err)
		}
	}
	return nil
}

func cmpOr(cur, gw net.IP) net.IP {
	if cur == nil {
		return gw
	}
	return cur
}

// settle waits until no IPv6 address of the link is tentative.
func (h *nsHandle) settle(l netlink.Link) error {
	deadline := time.Now().Add(dadTimeout)
	for {
		addrs, err := h.addrs(l, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		tentative := false
		for _, a := range addrs {
			if a.Flags&unix.IFA_F_DADFAILED != 0 {
				return fmt.Errorf("address %s: duplicate address detection failed", a.IPNet)
			}
			tentative = tentative || a.Flags&unix.IFA_F_TENTATIVE != 0
		}
		if !tentative {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ipv6 addresses of %s still tentative after %s", l.Attrs().Name, dadTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// maxDumps bounds the retries of a dump the kernel interrupts because something changed.
const maxDumps = 5

func (h *nsHandle) addrs(l netlink.Link, family int) ([]netlink.Addr, error) {
	var addrs []netlink.Addr
	err := retryDump(func() (err error) { addrs, err = h.nl.AddrList(l, family); return err })
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s in netns %s: %w", l.Attrs().Name, h.path, err)
	}
	return addrs, nil
}

func (h *nsHandle) routes(l netlink.Link) ([]netlink.Route, error) {
	var routes []netlink.Route
	err := retryDump(func() (err error) { routes, err = h.nl.RouteList(l, netlink.FAMILY_ALL); return err })
	if err != nil {
		return nil, fmt.Errorf("list routes of %s in netns %s: %w", l.Attrs().Name, h.path, err)
	}
	return routes, nil
}

func retryDump(dump func() error) error {
	var err error
	for range maxDumps {
		if err = dump(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return err
		}
	}
	return err
}
