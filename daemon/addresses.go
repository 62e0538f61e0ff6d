package daemon

import (
	"fmt"
	"net"
	"sync/atomic"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	"github.com/vishvananda/netlink"

	"github.com/containernetworking/plugins/pkg/netlinksafe"

	"github.com/loom-cni/loom/delegate"
	"github.com/loom-cni/loom/delegate/npwg"
	"github.com/loom-cni/loom/policy"
	"github.com/loom-cni/loom/policy/source"
)

// ClusterPods is every pod of the cluster with its attachments as its network-status says:
// the policy engine's source (source.ClusterSource) is one. Pods of this node have Node "".
type ClusterPods interface {
	Snapshot() policy.Snapshot
}

// NADCatalog lists every NetworkAttachmentDefinition; Cluster is one.
type NADCatalog interface {
	NADs() ([]*nadv1.NetworkAttachmentDefinition, error)
}

// NetworkSpecs resolves a NetworkAttachmentDefinition into the Spec its pods attach with;
// npwg.Resolver is one.
type NetworkSpecs interface {
	NetworkSpec(nad *nadv1.NetworkAttachmentDefinition) (delegate.Spec, error)
}

// AddressGate is the orchestrator's Gate that refuses a pod's "ips" or "mac" another
// interface has on the same segment (npwg.Segment): an attachment of this node, from the
// ledger (also one still being added), or of any pod of the cluster, from its network-status.
type AddressGate struct {
	nads        NADCatalog
	specs       NetworkSpecs
	defaultLink func() string
	pods        atomic.Pointer[ClusterPods] // nil: the ledger alone
}

var (
	_ delegate.Gate = (*AddressGate)(nil)
	_ ClusterPods   = (*source.ClusterSource)(nil)
)

// NewAddressGate returns the gate. Until SetClusterPods gives it the cluster's pods, it checks
// this node's attachments only. defaultLink returns the node's default-route interface
// (DefaultRouteLink).
func NewAddressGate(nads NADCatalog, specs NetworkSpecs, defaultLink func() string) *AddressGate {
	return &AddressGate{nads: nads, specs: specs, defaultLink: defaultLink}
}

// SetClusterPods makes the gate check the network-status of every pod of the cluster too.
// It may be called at any time.
func (g *AddressGate) SetClusterPods(p ClusterPods) { g.pods.Store(&p) }

// Admit implements delegate.Gate: an *npwg.Error wrapping an *npwg.TakenError when an
// address or MAC the pod asks for is taken.
func (g *AddressGate) Admit(pod delegate.PodRef, specs []delegate.Spec, recorded func() ([]delegate.Record, error)) error {
	// Most pods ask for nothing: they cost no look-up of the default route.
	if len(npwg.Asked(pod, specs, "")) == 0 {
		return nil
	}
	link := g.defaultLink()
	asked := npwg.Asked(pod, specs, link)
	recs, err := recorded()
	if err != nil {
		return fmt.Errorf("check the addresses pod %s asks for: %w", pod, err)
	}
	var held []npwg.Claim
	for _, r := range recs {
		held = append(held, npwg.Recorded(r, link)...)
	}
	cluster, err := g.clusterClaims(asked, link)
	if err != nil {
		return fmt.Errorf("check the addresses pod %s asks for: %w", pod, err)
	}
	return npwg.Taken(asked, append(held, cluster...))
}

// clusterClaims returns what the cluster's pods have, by their network-status, on the
// segments asked names.
func (g *AddressGate) clusterClaims(asked []npwg.Claim, link string) ([]npwg.Claim, error) {
	pods := g.pods.Load()
	if pods == nil || *pods == nil {
		return nil, nil
	}
	wanted := map[npwg.Segment]bool{}
	for _, a := range asked {
		wanted[a.Segment] = true
	}
	nads, err := g.nads.NADs()
	if err != nil {
		return nil, fmt.Errorf("list NetworkAttachmentDefinitions: %w", err)
	}
	// The networks on those segments; a NAD whose configuration does not resolve attaches no pod.
	segments := map[policy.NetworkID]npwg.Segment{}
	for _, nad := range nads {
		s, serr := g.specs.NetworkSpec(nad)
		if serr != nil {
			continue
		}
		if seg := npwg.SegmentOf(s, link); wanted[seg] {
			segments[policy.NetworkID(s.Network)] = seg
		}
	}
	var out []npwg.Claim
	for _, p := range (*pods).Snapshot().Pods {
		for _, ep := range p.Endpoints {
			seg, ok := segments[ep.Network]
			if !ok {
				continue
			}
			out = append(out, npwg.Claim{Pod: p.Namespace + "/" + p.Name, Network: string(ep.Network), Ifname: ep.Interface,
				Node: p.Node, Segment: seg, IPs: ep.IPs, MAC: hardwareAddr(ep.MAC)})
		}
	}
	return out, nil
}

// hardwareAddr converts the policy source's MAC, nil when it is not known.
func hardwareAddr(m fmt.Stringer) net.HardwareAddr {
	hw, err := net.ParseMAC(m.String())
	if err != nil || len(hw) == 0 || string(hw) == string(make([]byte, len(hw))) {
		return nil
	}
	return hw
}

// DefaultRouteLink returns the name of the interface of this network namespace's IPv4
// default route, where macvlan and ipvlan sit when their configuration names no master
// (as those plugins choose it), or "" when there is none.
func DefaultRouteLink() string {
	routes, err := netlinksafe.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return ""
	}
	for _, r := range routes {
		if r.Dst == nil || r.Dst.IP.Equal(net.IPv4zero) && isZeroMask(r.Dst.Mask) {
			if l, lerr := netlink.LinkByIndex(r.LinkIndex); lerr == nil {
				return l.Attrs().Name
			}
		}
	}
	return ""
}

func isZeroMask(m net.IPMask) bool {
	ones, _ := m.Size()
	return ones == 0
}
