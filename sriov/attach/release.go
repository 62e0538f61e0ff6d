package attach

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/vishvananda/netlink"

	"github.com/loom-cni/loom/delegate"
)

// release gives back everything the claim c records, in the reverse order of ADD: the IPAM
// plugin's addresses, the netdev (from the netns at netnsPath, or wherever it is now), the
// PF's settings. It keeps going past a failure, and drops the claim only when all is done.
func (a *Attachment) release(ctx context.Context, c claim, netnsPath string) error {
	if netnsPath == "" {
		netnsPath = c.Netns
	}
	var errs []error
	if c.IPAM {
		if err := a.releaseIPAM(ctx, c, netnsPath); err != nil {
			errs = append(errs, err)
		}
	}
	if !c.DPDK {
		if err := a.returnNetdev(c, netnsPath); err != nil {
			errs = append(errs, fmt.Errorf("return the netdev of %s to the host: %w", c, err))
		}
	}
	if err := a.pf.Set(c.PFNetdev, c.Index, c.Saved); err != nil {
		errs = append(errs, fmt.Errorf("restore the settings of %s on pf %s: %w", c, c.PFNetdev, err))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return a.claims.remove(c.VF)
}

// releaseIPAM runs the IPAM plugin's DEL with the configuration ADD ran it with.
func (a *Attachment) releaseIPAM(ctx context.Context, c claim, netnsPath string) error {
	n, err := parse(c.Spec.Config)
	if err != nil {
		return fmt.Errorf("release the addresses of %s: configuration of network %s: %w", c.owner(), c.Spec.Network, err)
	}
	if n.ipamType == "" {
		return nil
	}
	_, err = a.ipam(ctx, n, ipamCall{command: "DEL", containerID: c.ContainerID, netns: netnsPath,
		ifname: c.Ifname, pod: c.Pod, capabilityArgs: c.Spec.CapabilityArgs})
	return err
}

// returnNetdev puts the VF's netdev back into the host as it was before ADD: its name, MAC
// and MTU, up or down. It looks for it in the pod's netns under the pod's name for it (or its
// own, when ADD stopped between moving and renaming it), and then in the host: when a netns
// dies the kernel returns the VF's netdev to the host under the name it had in the pod, or a
// kernel-made one when that is taken, and sysfs names it wherever it is. A netdev found in
// neither place is logged and left.
func (a *Attachment) returnNetdev(c claim, netnsPath string) error {
	host, err := a.openHost()
	if err != nil {
		return err
	}
	defer host.Close()
	orig := linkAttrs{name: c.Netdev, mac: c.MAC, mtu: c.MTU}

	pod, gone, err := openNS(netnsPath)
	if err != nil {
		return err
	}
	var l netlink.Link
	if !gone {
		defer pod.Close()
		if l, err = pod.link(c.Ifname, c.Netdev); err != nil {
			return err
		}
	}
	if l != nil {
		if err = pod.nl.LinkSetDown(l); err != nil {
			return fmt.Errorf("set %s down in netns %s: %w", l.Attrs().Name, netnsPath, err)
		}
		if err = pod.setAttrs(l, orig); err != nil {
			return err
		}
		if l, err = pod.move(c.Netdev, host); err != nil {
			return err
		}
		return a.setUp(host, l, c)
	}
	if l, err = a.findInHost(host, c); err != nil {
		return err
	}
	if l == nil {
		a.log.Warn("the VF's netdev is in neither the pod nor the host; nothing to return", "vf", c.VF,
			"netdev", c.Netdev, "containerID", c.ContainerID, "ifname", c.Ifname, "netnsGone", gone)
		return nil
	}
	if err := host.setAttrs(l, orig); err != nil {
		return err
	}
	return a.setUp(host, l, c)
}

// findInHost finds the VF's netdev in the host: under the name sysfs gives it, under its
// original name, or under the pod's name for it when it has the MAC the pod gave it (another
// netdev may have that name).
func (a *Attachment) findInHost(host *nsHandle, c claim) (netlink.Link, error) {
	var names []string
	if fn, err := a.scanner.Function(c.VF); err == nil && fn.Netdev != "" {
		names = append(names, fn.Netdev)
	}
	l, err := host.link(append(names, c.Netdev)...)
	if err != nil || l != nil {
		return l, err
	}
	l, err = host.link(c.Ifname)
	if err != nil || l == nil || attrsOf(l).mac != c.PodMAC {
		return nil, err
	}
	return l, nil
}

func (a *Attachment) setUp(host *nsHandle, l netlink.Link, c claim) error {
	if !c.Up {
		return nil
	}
	if err := host.nl.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", c.Netdev, err)
	}
	return nil
}

// checkNetdev verifies the VF's netdev in the pod: its MAC and MTU, and the addresses and
// routes of prev when there is one.
func checkNetdev(call delegate.Call, n network, c claim, prev *current.Result) error {
	pod, gone, err := openNS(call.Netns)
	if err != nil {
		return err
	}
	if gone {
		return fmt.Errorf("netns %s of pod %s does not exist", call.Netns, call.Pod)
	}
	defer pod.Close()
	l, err := pod.link(call.Ifname)
	if err != nil {
		return err
	}
	if l == nil {
		return fmt.Errorf("pod %s has no interface %s", call.Pod, call.Ifname)
	}
	got := attrsOf(l)
	if got.mac != c.PodMAC {
		return fmt.Errorf("interface %s of pod %s has mac %s, not %s", call.Ifname, call.Pod, got.mac, c.PodMAC)
	}
	if n.mtu != 0 && got.mtu != n.mtu {
		return fmt.Errorf("interface %s of pod %s has mtu %d, not %d", call.Ifname, call.Pod, got.mtu, n.mtu)
	}
	if prev == nil {
		return nil
	}
	for _, i := range prev.Interfaces {
		if i.Name == call.Ifname && i.Mac != "" && i.Mac != got.mac {
			return fmt.Errorf("interface %s of pod %s has mac %s, but ADD reported %s", call.Ifname, call.Pod, got.mac, i.Mac)
		}
	}
	addrs, err := pod.addrs(l, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	for _, ipc := range prev.IPs {
		if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return a.IPNet.String() == ipc.Address.String() }) {
			return fmt.Errorf("interface %s of pod %s lost address %s", call.Ifname, call.Pod, &ipc.Address)
		}
	}
	routes, err := pod.routes(l)
	if err != nil {
		return err
	}
	for _, r := range prev.Routes {
		if !slices.ContainsFunc(routes, func(kr netlink.Route) bool { return sameRoute(kr, r) }) {
			return fmt.Errorf("interface %s of pod %s lost its route to %s", call.Ifname, call.Pod, &r.Dst)
		}
	}
	return nil
}

// sameRoute reports whether the kernel's route kr is r: same destination, and the same
// gateway when r names one.
func sameRoute(kr netlink.Route, r *types.Route) bool {
	dst := "0.0.0.0/0"
	if r.Dst.IP.To4() == nil {
		dst = "::/0"
	}
	if kr.Dst != nil {
		dst = kr.Dst.String()
	}
	return dst == r.Dst.String() && (r.GW == nil || r.GW.Equal(kr.Gw))
}

// supportsCheck reports whether plugins of cniVersion know CHECK (0.4.0 and later).
func supportsCheck(cniVersion string) bool {
	ok, err := version.GreaterThanOrEqualTo(cniVersion, "0.4.0")
	return err == nil && ok
}
