package fabric

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/loom-cni/loom/delegate"
	"github.com/loom-cni/loom/fabric/ipam"
	"github.com/loom-cni/loom/fabric/podnet"
)

// Kind is the attachment kind of the primary network, and the plugin type that names it in a
// network configuration ({"type": "loom-primary"}).
const Kind = podnet.Kind

// Allocator hands out pod addresses from this node's blocks.
type Allocator interface {
	Allocate(ctx context.Context, pool ipam.Pool, owner ipam.Owner) (netip.Addr, netip.Prefix, error)
	Release(ctx context.Context, containerID, ifname string) error
}

// Primary is the primary network's Attachment: an address from the node's block of the pod's
// pool and a veth pair routed by the node. It holds no per-pod state.
type Primary struct {
	alloc Allocator
	pool  func(namespace string) ipam.Pool
	mtu   func() int
	ready func() error
	log   *slog.Logger
}

var (
	_ delegate.Attachment     = (*Primary)(nil)
	_ delegate.Collector      = (*Primary)(nil)
	_ delegate.StatusReporter = (*Primary)(nil)
)

// NewPrimary returns the primary network's attachment; pool says which pool a namespace's
// pods draw from. ready reports whether the node's dataplane is up; ADD waits for nothing and
// fails while it is not.
func NewPrimary(alloc Allocator, pool func(namespace string) ipam.Pool, mtu func() int, ready func() error, log *slog.Logger) *Primary {
	return &Primary{alloc: alloc, pool: pool, mtu: mtu, ready: ready, log: log}
}

// Add allocates the pod's address and plumbs its interface. On failure the address is
// released and no interface is left.
func (p *Primary) Add(ctx context.Context, c delegate.Call) (types.Result, error) {
	if err := p.ready(); err != nil {
		return nil, fmt.Errorf("primary network not ready on this node: %w", err)
	}
	owner := ipam.Owner{Kind: ipam.OwnerPod, Namespace: c.Pod.Namespace, Name: c.Pod.Name, UID: string(c.Pod.UID),
		ContainerID: string(c.ContainerID), Ifname: c.Ifname}
	addr, _, err := p.alloc.Allocate(ctx, p.pool(c.Pod.Namespace), owner)
	if err != nil {
		return nil, err
	}
	ifs, err := podnet.Add(c.Netns, string(c.ContainerID), c.Ifname, addr, p.mtu())
	if err != nil {
		if rerr := p.alloc.Release(context.WithoutCancel(ctx), string(c.ContainerID), c.Ifname); rerr != nil {
			err = errors.Join(err, fmt.Errorf("release %s (the node's reconciliation retries): %w", addr, rerr))
		}
		return nil, err
	}
	gw := net.IP(podnet.Gateway.AsSlice())
	podIdx := 1
	return &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{ifs.Host, ifs.Pod},
		IPs: []*current.IPConfig{{
			Interface: &podIdx,
			Address:   net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(32, 32)},
			Gateway:   gw,
		}},
		Routes: []*types.Route{{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: gw}},
	}, nil
}

// Check verifies the pod's interface against the address Add returned.
func (p *Primary) Check(_ context.Context, c delegate.Call, prev types.Result) error {
	addr, err := podnet.AddressOf(prev)
	if err != nil {
		return err
	}
	return podnet.Check(c.Netns, string(c.ContainerID), c.Ifname, addr)
}

// Del removes the pod's interface and releases its address. When the address cannot be
// released now (the API server is unreachable), DEL still succeeds: the address belongs to a
// container the ledger no longer knows, and the node's reconciliation releases it later.
func (p *Primary) Del(ctx context.Context, c delegate.Call, _ types.Result) error {
	if err := podnet.Del(string(c.ContainerID), c.Ifname); err != nil {
		return err
	}
	if err := p.alloc.Release(ctx, string(c.ContainerID), c.Ifname); err != nil {
		p.log.Warn("address not released yet; reconciliation will release it", "containerID", c.ContainerID,
			"pod", c.Pod, "ifname", c.Ifname, "error", err)
	}
	return nil
}

// GC removes host interfaces whose pods no attachment holds any more. Addresses are
// reconciled by the Network against the whole ledger.
func (p *Primary) GC(_ context.Context, _ []delegate.Spec, live []delegate.Call) error {
	keep := map[string]bool{}
	for _, c := range live {
		keep[podnet.HostVethName(string(c.ContainerID), c.Ifname)] = true
	}
	names, err := podnet.HostLinks()
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range names {
		if keep[name] {
			continue
		}
		p.log.Info("removing the interface of a pod that is gone", "link", name)
		if err := podnet.DeleteHostLink(name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Status reports whether the node's dataplane is up.
func (p *Primary) Status(context.Context, delegate.Spec) error { return p.ready() }
