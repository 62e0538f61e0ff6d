package attach

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"

	"github.com/loom-cni/loom/delegate"
	"github.com/loom-cni/loom/sriov"
	"github.com/loom-cni/loom/sriov/vf"
)

// Kind is the attachment kind of SR-IOV VFs, and the plugin type that names it in a network
// configuration ({"type": "loom-sriov"}).
const Kind = "loom-sriov"

// DefaultStateDir is where claims are kept when Config names no directory.
const DefaultStateDir = "/var/lib/loom/sriov"

// releaseTimeout bounds the rollback of a failed ADD, which runs even when the caller's
// context is done: a VF must not stay half attached.
const releaseTimeout = time.Minute

// ErrInUse is wrapped by the error of an ADD for a VF that another interface holds.
var ErrInUse = errors.New("vf is in use by another pod")

// Config is the environment of an Attachment.
type Config struct {
	// SysfsRoot is the directory holding the sys/ tree VFs are looked up in; "/" when empty.
	SysfsRoot string
	// PF writes VF settings on their PFs, which live in HostNetns. When nil, vf.Netlink(),
	// which finds PFs in the namespace of the calling thread: right for loomd, which runs in
	// the host's; give vf.NetlinkAt a handle in HostNetns otherwise.
	PF vf.Configurator
	// StateDir holds a claim per VF in use; DefaultStateDir when empty. It must survive a
	// restart of loomd.
	StateDir string
	// CNIPath lists the directories IPAM plugins are found in.
	CNIPath []string
	// HostNetns is the path of the network namespace VF netdevs are in when no pod holds
	// them; the namespace of the process when empty.
	HostNetns string
	// Exec runs IPAM plugins; nil runs them as processes.
	Exec invoke.Exec
	// Logger gets what DEL and GC skip or cannot undo; nil discards it.
	Logger *slog.Logger
}

// Attachment attaches SR-IOV VFs to pods. It keeps nothing in memory: what it must remember
// about a VF in use is in the VF's claim, in the state directory.
type Attachment struct {
	scanner   *sriov.Scanner
	pf        vf.Configurator
	claims    claims
	cniPath   []string
	hostNetns string
	exec      invoke.Exec
	log       *slog.Logger
	now       func() time.Time
}

var (
	_ delegate.Attachment     = (*Attachment)(nil)
	_ delegate.Collector      = (*Attachment)(nil)
	_ delegate.DeviceReporter = (*Attachment)(nil)
)

// New returns the loom-sriov Attachment for cfg, defaulting what it leaves empty.
func New(cfg Config) *Attachment {
	a := &Attachment{
		scanner:   sriov.NewScanner(cfg.SysfsRoot),
		pf:        cfg.PF,
		claims:    claims{dir: cfg.StateDir},
		cniPath:   cfg.CNIPath,
		hostNetns: cfg.HostNetns,
		exec:      cfg.Exec,
		log:       cfg.Logger,
		now:       time.Now,
	}
	if cfg.SysfsRoot == "" {
		a.scanner = sriov.NewScanner("/")
	}
	if a.pf == nil {
		a.pf = vf.Netlink()
	}
	if a.claims.dir == "" {
		a.claims.dir = DefaultStateDir
	}
	if a.hostNetns == "" {
		a.hostNetns = "/proc/self/ns/net"
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	return a
}

// Add claims the VF the kubelet allocated to the pod, configures it on its PF, and, for a
// netdev VF, moves it into the pod as c.Ifname with its MAC, MTU and the IPAM plugin's
// addresses. On failure everything done is undone and the VF's claim dropped.
func (a *Attachment) Add(ctx context.Context, call delegate.Call) (types.Result, error) {
	n, mac, err := a.config(call)
	if err != nil {
		return nil, err
	}
	if err = checkDevice(call, n); err != nil {
		return nil, err
	}
	fn, err := a.scanner.Function(n.deviceID)
	if err != nil {
		return nil, fmt.Errorf("device %s allocated to pod %s for network %s: %w", n.deviceID, call.Pod, call.Network, err)
	}
	switch {
	case fn.DPDK && n.ipamType != "":
		return nil, fmt.Errorf("network %s gives pod %s %s, bound to the userspace driver %s, which has no netdev to carry addresses: remove \"ipam\" from the network, or use a pool of VFs with a kernel driver",
			call.Network, call.Pod, fn.VF, fn.Driver)
	case fn.PFNetdev == "":
		return nil, fmt.Errorf("%s: its PF has no netdev, through which its settings are written: bind the PF to its kernel driver", fn.VF)
	}

	unlock, err := a.claims.lock(ctx, fn.Address)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if fn, err = a.takeOver(ctx, call, fn); err != nil {
		return nil, err
	}
	host, err := a.openHost()
	if err != nil {
		return nil, err
	}
	defer host.Close()
	c, err := a.newClaim(call, fn, host, mac)
	if err != nil {
		return nil, err
	}
	if err = a.claims.create(c); err != nil {
		return nil, err
	}

	ok := false
	defer func() {
		if !ok {
			a.rollback(ctx, &c, call)
		}
	}()
	res, err := a.attach(ctx, call, n, &c, host)
	if err != nil {
		return nil, err
	}
	ok = true
	return res, nil
}

// checkDevice checks that the call's VF came from the kubelet's allocation, and says what to
// fix when it did not.
func checkDevice(call delegate.Call, n network) error {
	switch {
	case call.Resource == "" && n.deviceID == "":
		return fmt.Errorf("NetworkAttachmentDefinition %s has no resourceName annotation, or the pod requested no device: pod %s got no VF for it; annotate the NetworkAttachmentDefinition with k8s.v1.cni.cncf.io/resourceName naming an SR-IOV pool",
			call.Network, call.Pod)
	case call.Resource == "":
		return fmt.Errorf("NetworkAttachmentDefinition %s names VF %s in deviceID but has no resourceName annotation: a pod gets a VF only from the kubelet's allocation; remove deviceID and annotate it with k8s.v1.cni.cncf.io/resourceName",
			call.Network, n.deviceID)
	case n.deviceID == "":
		return fmt.Errorf("NetworkAttachmentDefinition %s has no resourceName annotation, or the pod requested no device: pod %s requested no %s; add %s to the requests and limits of one of its containers",
			call.Network, call.Pod, call.Resource, call.Resource)
	}
	return nil
}

// takeOver deals with a claim the VF has already. Another interface's claim is an error
// naming it: the VF is serving that pod. The call's own is what a runtime retrying ADD finds;
// it is released first, so that ADD starts again from the VF as it was before the first try.
func (a *Attachment) takeOver(ctx context.Context, call delegate.Call, fn sriov.Function) (sriov.Function, error) {
	c, ok, err := a.claims.load(fn.Address)
	if err != nil || !ok {
		return fn, err
	}
	if !c.heldBy(call) {
		return fn, fmt.Errorf("pod %s cannot have %s: it is held by %s; a VF serves one pod at a time, so either the kubelet allocated it twice or that pod's DEL has not released it yet: %w",
			call.Pod, fn.VF, c.owner(), ErrInUse)
	}
	a.log.Info("releasing a VF an earlier ADD of this interface left claimed", callAttrs(call, fn.Address)...)
	if err := a.release(ctx, c, call.Netns); err != nil {
		return fn, fmt.Errorf("release %s, claimed by an earlier ADD of this interface: %w", fn.VF, err)
	}
	return a.scanner.Function(fn.Address)
}

// newClaim reads what DEL is to give back: the VF's settings on its PF and, for a netdev VF,
// its netdev as it is in the host. mac is the MAC the network or the pod asks for, "" for
// none: the netdev keeps its own, and a DPDK VF what its PF holds.
func (a *Attachment) newClaim(call delegate.Call, fn sriov.Function, host *nsHandle, mac string) (claim, error) {
	saved, err := a.pf.State(fn.PFNetdev, fn.Index)
	if err != nil {
		return claim{}, fmt.Errorf("read the settings of %s on pf %s: %w", fn.VF, fn.PFNetdev, err)
	}
	c := claim{
		ContainerID: call.ContainerID, Ifname: call.Ifname, Pod: call.Pod, Netns: call.Netns, Spec: call.Spec,
		Created: a.now().UTC(), VF: fn.Address, PF: fn.PF, PFNetdev: fn.PFNetdev, Index: fn.Index, DPDK: fn.DPDK,
		Saved: saved, PodMAC: mac,
	}
	if fn.DPDK {
		if c.PodMAC == "" {
			c.PodMAC = saved.MAC
		}
		return c, nil
	}
	if fn.Netdev == "" {
		return claim{}, fmt.Errorf("%s has no netdev in the host (driver %q): bind it to its kernel driver, or find the pod that holds it outside Loom", fn.VF, fn.Driver)
	}
	l, err := host.link(fn.Netdev)
	if err != nil {
		return claim{}, err
	}
	if l == nil {
		return claim{}, fmt.Errorf("netdev %s of %s is not in netns %s", fn.Netdev, fn.VF, host.path)
	}
	orig := attrsOf(l)
	c.Netdev, c.MAC, c.MTU, c.Up = orig.name, orig.mac, orig.mtu, orig.up
	if c.PodMAC == "" {
		c.PodMAC = orig.mac
	}
	return c, nil
}

// attach configures the claimed VF: its settings on the PF, then its netdev in the pod, then
// its addresses. It records in c what DEL will have to release.
func (a *Attachment) attach(ctx context.Context, call delegate.Call, n network, c *claim, host *nsHandle) (types.Result, error) {
	want := n.pf
	want.MAC = c.PodMAC
	if err := a.pf.Set(c.PFNetdev, c.Index, want); err != nil {
		return nil, fmt.Errorf("configure %s on pf %s: %w", c, c.PFNetdev, err)
	}
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	if c.DPDK {
		return res.GetAsVersion(n.cniVersion)
	}

	pod, gone, err := openNS(call.Netns)
	if err != nil {
		return nil, err
	}
	if gone {
		return nil, fmt.Errorf("netns %s of pod %s does not exist", call.Netns, call.Pod)
	}
	defer pod.Close()
	l, err := host.link(c.Netdev)
	if err != nil {
		return nil, err
	}
	if l == nil {
		return nil, fmt.Errorf("netdev %s of %s left netns %s", c.Netdev, c, host.path)
	}
	if err = host.nl.LinkSetDown(l); err != nil {
		return nil, fmt.Errorf("set %s down: %w", c.Netdev, err)
	}
	if l, err = host.move(c.Netdev, pod); err != nil {
		return nil, err
	}
	if err = pod.setAttrs(l, linkAttrs{name: call.Ifname, mac: c.PodMAC, mtu: n.mtu}); err != nil {
		return nil, err
	}
	if err = pod.nl.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("set %s up in netns %s: %w", call.Ifname, call.Netns, err)
	}
	res.Interfaces = []*current.Interface{{Name: call.Ifname, Mac: c.PodMAC, Sandbox: call.Netns}}
	if n.ipamType == "" {
		return res.GetAsVersion(n.cniVersion)
	}

	// The claim says IPAM may hold an address before the plugin runs: a crash in between
	// leaves a DEL of an address never given, which IPAM plugins take as success.
	c.IPAM = true
	if err = a.claims.save(*c); err != nil {
		return nil, err
	}
	r, err := a.ipam(ctx, n, ipamCall{command: "ADD", containerID: call.ContainerID, netns: call.Netns,
		ifname: call.Ifname, pod: call.Pod, capabilityArgs: call.CapabilityArgs})
	if err != nil {
		c.IPAM = false // a plugin whose ADD failed holds nothing (CNI: it cleans up itself)
		return nil, err
	}
	ipamRes, err := current.NewResultFromResult(r)
	if err != nil {
		return nil, fmt.Errorf("ipam %s of network %s: result: %w", n.ipamType, n.name, err)
	}
	res.IPs, res.Routes, res.DNS = ipamRes.IPs, ipamRes.Routes, ipamRes.DNS
	for _, ipc := range res.IPs {
		ipc.Interface = current.Int(0)
	}
	if err := pod.configure(l, res); err != nil {
		return nil, fmt.Errorf("configure addresses of %s in netns %s: %w", call.Ifname, call.Netns, err)
	}
	return res.GetAsVersion(n.cniVersion)
}

// rollback undoes a failed ADD as DEL would. What it cannot undo stays in the claim, for the
// DEL that the orchestrator runs after a failed ADD, or for GC.
func (a *Attachment) rollback(ctx context.Context, c *claim, call delegate.Call) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	err := a.release(ctx, *c, call.Netns)
	if err == nil {
		return
	}
	if serr := a.claims.save(*c); serr != nil {
		err = errors.Join(err, serr)
	}
	a.log.Error("undoing a failed ADD is incomplete; DEL or GC releases the rest", append(callAttrs(call, c.VF), "error", err)...)
}

// Check verifies that the call's interface still holds its VF as Add left it: the claim is
// the interface's, the PF holds the settings the network asks for, and the netdev is in the
// pod with its MAC, MTU, addresses and routes. prev is Add's result.
func (a *Attachment) Check(ctx context.Context, call delegate.Call, prev types.Result) error {
	n, _, err := a.config(call)
	if err != nil {
		return err
	}
	if n.deviceID == "" {
		return fmt.Errorf("network %s has no deviceID: pod %s holds no VF of it", call.Network, call.Pod)
	}
	c, ok, err := a.claims.load(n.deviceID)
	switch {
	case err != nil:
		return err
	case !ok:
		return fmt.Errorf("vf %s of pod %s is not claimed", n.deviceID, call.Pod)
	case !c.heldBy(call):
		return fmt.Errorf("vf %s of pod %s is held by %s", n.deviceID, call.Pod, c.owner())
	}
	want := n.pf
	want.MAC = c.PodMAC
	got, err := a.pf.State(c.PFNetdev, c.Index)
	if err != nil {
		return fmt.Errorf("read the settings of %s on pf %s: %w", c, c.PFNetdev, err)
	}
	if got != want {
		return fmt.Errorf("pf %s holds %+v for %s, but network %s asks for %+v", c.PFNetdev, got, c, call.Network, want)
	}
	if c.DPDK {
		return nil
	}
	var prevRes *current.Result
	if prev != nil {
		if prevRes, err = current.NewResultFromResult(prev); err != nil {
			return fmt.Errorf("read the result of ADD: %w", err)
		}
	}
	if err = checkNetdev(call, n, c, prevRes); err != nil {
		return err
	}
	if n.ipamType == "" || !supportsCheck(n.cniVersion) {
		return nil
	}
	_, err = a.ipam(ctx, n, ipamCall{command: "CHECK", containerID: call.ContainerID, netns: call.Netns,
		ifname: call.Ifname, pod: call.Pod, capabilityArgs: call.CapabilityArgs, prev: prev})
	return err
}

// Del releases the VF the call's interface holds: the IPAM plugin's addresses, the netdev
// back into the host with its name, MAC and MTU, and the PF's settings for the VF as they
// were before ADD. A VF without a claim, or whose claim is another interface's, is left
// alone. Del keeps going past a failure; the claim stays until everything is released.
func (a *Attachment) Del(ctx context.Context, call delegate.Call, _ types.Result) error {
	addr := deviceIDOf(call.Config)
	if addr == "" {
		// A configuration that no longer names the VF: look for the interface's claim.
		var err error
		if addr, err = a.claims.find(call); err != nil || addr == "" {
			return err
		}
	}
	unlock, err := a.claims.lock(ctx, addr)
	if err != nil {
		return err
	}
	defer unlock()
	c, ok, err := a.claims.load(addr)
	switch {
	case err != nil:
		return err
	case !ok:
		return nil
	case !c.heldBy(call):
		a.log.Debug("DEL leaves alone a VF another interface holds", append(callAttrs(call, addr), "holder", c.owner())...)
		return nil
	}
	return a.release(ctx, c, call.Netns)
}

// GC releases every claim that no attachment in live holds: claims left by a container whose
// DEL never came, or failed for good. Claims are released whatever their network, known
// or not: one no live attachment holds is a leak, and it carries everything needed to
// release it. A claim made after GC started is left for the next GC: its ADD may have begun
// after live was listed.
func (a *Attachment) GC(ctx context.Context, _ []delegate.Spec, live []delegate.Call) error {
	start := a.now()
	held := map[[2]string]bool{}
	for _, call := range live {
		held[[2]string{string(call.ContainerID), call.Ifname}] = true
	}
	addrs, err := a.claims.list()
	if err != nil {
		return err
	}
	var errs []error
	for _, addr := range addrs {
		if err := a.collect(ctx, addr, held, start); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (a *Attachment) collect(ctx context.Context, addr string, held map[[2]string]bool, start time.Time) error {
	unlock, err := a.claims.lock(ctx, addr)
	if err != nil {
		return err
	}
	defer unlock()
	c, ok, err := a.claims.load(addr)
	if err != nil || !ok || held[[2]string{string(c.ContainerID), c.Ifname}] || c.Created.After(start) {
		return err
	}
	a.log.Info("releasing a VF no live attachment holds", "vf", addr, "containerID", c.ContainerID,
		"ifname", c.Ifname, "pod", c.Pod.Name, "namespace", c.Pod.Namespace, "network", c.Spec.Network)
	if err := a.release(ctx, c, c.Netns); err != nil {
		return fmt.Errorf("release %s of %s: %w", c, c.owner(), err)
	}
	return nil
}

// DeviceInfo returns the NPWG device-info of the call's VF: a PCI device and its PF.
func (a *Attachment) DeviceInfo(call delegate.Call, _ types.Result) (json.RawMessage, error) {
	addr := deviceIDOf(call.Config)
	if addr == "" {
		return nil, fmt.Errorf("device-info of network %s: the configuration names no VF", call.Network)
	}
	fn, err := a.scanner.Function(addr)
	if err != nil {
		return nil, fmt.Errorf("device-info of network %s: %w", call.Network, err)
	}
	return json.Marshal(nadv1.DeviceInfo{
		Type:    nadv1.DeviceInfoTypePCI,
		Version: nadv1.DeviceInfoVersion,
		Pci:     &nadv1.PciDevice{PciAddress: fn.Address, PfPciAddress: fn.PF},
	})
}

// Claimed returns the PCI addresses of the VFs attached to a pod interface (those with a
// claim), in no particular order. It reads one directory: metrics call it.
func (a *Attachment) Claimed() ([]string, error) { return a.claims.list() }

// config parses the call's network configuration and returns it with the MAC the interface
// is to get: the pod's (runtimeConfig "mac", when the network declares the capability), else
// the network's, else "".
func (a *Attachment) config(call delegate.Call) (network, string, error) {
	n, err := parse(call.Config)
	if err != nil {
		return network{}, "", fmt.Errorf("configuration of network %s for pod %s: %w", call.Network, call.Pod, err)
	}
	mac := n.pf.MAC
	if v, ok := call.CapabilityArgs["mac"]; ok && n.capabilities["mac"] {
		s, _ := v.(string)
		m, err := vf.ParseMAC(s)
		if err != nil {
			return network{}, "", fmt.Errorf("pod %s asks for a MAC on network %s: %w", call.Pod, call.Network, err)
		}
		mac = m.String()
	}
	return n, mac, nil
}

func (a *Attachment) openHost() (*nsHandle, error) {
	h, gone, err := openNS(a.hostNetns)
	if err == nil && gone {
		err = fmt.Errorf("host netns %s does not exist", a.hostNetns)
	}
	return h, err
}

func callAttrs(call delegate.Call, vfAddr string) []any {
	return []any{"vf", vfAddr, "containerID", call.ContainerID, "ifname", call.Ifname,
		"pod", call.Pod.Name, "namespace", call.Pod.Namespace, "network", call.Network}
}
