package policy

import (
	"fmt"
	"net"
	"net/netip"

	networkingv1 "k8s.io/api/networking/v1"
)

// NetworkID names a network a pod is attached to: Primary for Loom's own network, else the
// "namespace/name" of a NetworkAttachmentDefinition.
type NetworkID string

// Primary is the pod's primary network.
const Primary NetworkID = ""

// PodKey names a pod.
type PodKey struct {
	Namespace string
	Name      string
}

func (k PodKey) String() string { return k.Namespace + "/" + k.Name }

// Snapshot is everything the engine knows about the cluster: Compile's whole input.
type Snapshot struct {
	// ClusterCIDRs are the primary network's pod ranges, at most one per address family: on
	// the primary network an address in one is a pod (or a node's VTEP, listed in Hosts),
	// anything else is outside the cluster.
	ClusterCIDRs []netip.Prefix
	// Hosts are node-owned addresses inside ClusterCIDRs (VTEP addresses): host traffic, which
	// every pod may exchange on the primary network, like the platform's.
	Hosts      []netip.Addr
	Tenants    []Tenant
	Namespaces []Namespace
	Networks   []Network
	Pods       []Pod
	Policies   []Policy
}

// Tenant is what policy needs of a tenant: its name, its peers, and the primary-network
// blocks labelled for it (its pods' addresses are matched by prefix, not one by one).
type Tenant struct {
	Name   string
	Peers  []string // tenants it names as peers; traffic flows only when both name each other
	Blocks []netip.Prefix
}

// Namespace is a namespace with its labels and its tenant ("" for the platform).
type Namespace struct {
	Name   string
	Labels map[string]string
	Tenant string
}

// Network is a secondary network: the subnets its IPAM hands out (from the NAD's ipam
// configuration), so an address of a pod not yet known is still recognised as a pod's.
type Network struct {
	ID      NetworkID
	Subnets []netip.Prefix
}

// Pod is a pod anywhere in the cluster, with the addresses of each of its attachments.
type Pod struct {
	PodKey
	Node   string
	Labels map[string]string
	Tenant string // "" for the platform
	// Ports are the pod's named container ports, for policies that name a port.
	Ports     []NamedPort
	Endpoints []Endpoint
}

// NamedPort is a container port with a name.
type NamedPort struct {
	Name     string
	Protocol string // TCP, UDP or SCTP
	Port     uint16
}

// Endpoint is one attachment of a pod.
type Endpoint struct {
	Network NetworkID
	// Interface is the interface name inside the pod (eth0, net1…).
	Interface string
	// HostInterface is the host side of the primary network's veth; empty on secondaries.
	HostInterface string
	IPs           []netip.Addr
	// MAC is the pod's hardware address on the attachment; zero when not known. On a
	// secondary network, where pods share a link layer, the tenant guard also keeps frames
	// apart by it, and a local pod sends no frame from another.
	MAC MAC
	// LinkLocal are the IPv6 link-local addresses the interface has, as its ADD found them:
	// known for local pods only, where they are the link-local sources the pod may use.
	LinkLocal []netip.Addr
}

// MAC is an Ethernet hardware address; the zero MAC means "not known".
type MAC [6]byte

// ParseMAC reads an Ethernet address in any form net.ParseMAC accepts.
func ParseMAC(s string) (MAC, error) {
	hw, err := net.ParseMAC(s)
	if err != nil {
		return MAC{}, err
	}
	if len(hw) != len(MAC{}) {
		return MAC{}, fmt.Errorf("parse MAC %q: not a 6-byte Ethernet address", s)
	}
	return MAC(hw), nil
}

// IsZero reports whether the MAC is not known.
func (m MAC) IsZero() bool { return m == MAC{} }

func (m MAC) String() string { return net.HardwareAddr(m[:]).String() }

// MarshalText writes the MAC as String does.
func (m MAC) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText reads a MAC as ParseMAC does.
func (m *MAC) UnmarshalText(b []byte) (err error) {
	*m, err = ParseMAC(string(b))
	return err
}

// PolicyKind tells a Kubernetes NetworkPolicy from a MultiNetworkPolicy.
type PolicyKind string

const (
	KindNetworkPolicy      PolicyKind = "NetworkPolicy"
	KindMultiNetworkPolicy PolicyKind = "MultiNetworkPolicy"
)

// Policy is a NetworkPolicy (on the primary network) or a MultiNetworkPolicy (on the networks
// its policy-for annotation names), validated. Problems lists what could not be used; the
// parts it names only ever narrow what the policy allows.
//
// Build a Policy with FromNetworkPolicy, FromMultiNetworkPolicy or ParseMultiNetworkPolicy and
// treat it as immutable: they keep the validated form Compile uses next to Spec. A Policy
// written by hand is validated by Compile on every call instead.
type Policy struct {
	Kind      PolicyKind
	Namespace string
	Name      string
	Networks  []NetworkID
	// Spec is the policy as written; for a MultiNetworkPolicy, the parts of it that could be
	// decoded at all.
	Spec     networkingv1.NetworkPolicySpec
	Problems []string

	valid *validPolicy // Spec validated; nil for a Policy written by hand
}

// Ruleset is what one node enforces: tenants and policies compiled for the pods on that node.
type Ruleset struct {
	// Host holds the rules for the local pods' primary endpoints, enforced on the host side of
	// their veths.
	Host Table
	// Pods holds, for every local pod with an interface, the rules enforced inside its
	// network namespace: its secondary endpoints' rules and every interface's link rules.
	Pods map[PodKey]Table
}

// Table is one enforcement point: the address sets its rules refer to, and the rules of each
// endpoint enforced there.
type Table struct {
	Sets      map[string]AddrSet
	Endpoints []EndpointRules // sorted by Interface
	// Links are the link-layer rules of a pod's interfaces, in a pod's table only: sorted
	// by Interface.
	Links []LinkRules
}

// LinkRules keep one of a pod's interfaces honest at the link layer, for every frame
// whatever its ethertype: the pod sends only from its own hardware and network addresses
// (ARP and neighbour advertisements included), and on a shared link layer exchanges frames
// only with the pods its tenant guard allows.
type LinkRules struct {
	Pod       PodKey
	Network   NetworkID
	Interface string
	// Routed is true on the primary network, routed through the node: nothing but IPv4,
	// IPv6 and ARP has anywhere to go there.
	Routed bool
	// MAC is the only source hardware address the interface may send from; zero when not
	// known, and then not checked.
	MAC MAC
	// Sources are the only network addresses the interface may send from: its addresses
	// and its IPv6 link-local ones. With no link-local known, any link-local source passes.
	Sources []netip.Addr
	// Guard, when set, drops frames from and to hardware addresses in Universe that are not
	// in Allowed: the tenant boundary on a shared link layer.
	Guard Guard
}

// AddrSet is a named set of addresses and prefixes, sorted and without duplicates. A guard's
// set on a secondary network also holds the pods' hardware addresses, which the link-layer
// guard matches.
type AddrSet struct {
	Addrs    []netip.Addr
	Prefixes []netip.Prefix
	MACs     []MAC
}

// EndpointRules are the rules for the traffic of one endpoint.
type EndpointRules struct {
	Pod     PodKey
	Network NetworkID
	// Interface is what the rules match on: the host side of the veth for the primary network,
	// the interface inside the pod for a secondary one.
	Interface string
	Ingress   Direction // traffic to the endpoint; peer = source
	Egress    Direction // traffic from the endpoint; peer = destination
}

// Direction is the rules for one direction of an endpoint's traffic, evaluated in order:
// the tenant guard, then, if a policy isolates the endpoint, its rules.
type Direction struct {
	// Guard drops traffic whose peer is in the set Universe but not in the set Allowed: the
	// tenant boundary. Empty Universe: no guard (the platform on the primary network).
	Guard Guard
	// Isolated is true when some policy selects the endpoint for this direction: only what
	// one of Rules matches passes.
	Isolated bool
	Rules    []Rule
}

// Guard names the two sets of a tenant boundary.
type Guard struct {
	Universe string
	Allowed  string
}

// Rule allows traffic with a peer on some ports.
type Rule struct {
	Peer  Peer
	Ports []Port // empty: every port and protocol
	// Policy is the "namespace/name" of the policy the rule comes from.
	Policy string
}

// Peer is who a rule allows: everyone (Any), the members of a set, or a CIDR minus excepts.
type Peer struct {
	Any    bool
	Set    string
	CIDR   netip.Prefix
	Except []netip.Prefix
}

// Port is a protocol with a port or a port range; Port 0 means every port of the protocol.
type Port struct {
	Protocol string // TCP, UDP or SCTP
	Port     uint16
	EndPort  uint16 // 0: just Port
}
