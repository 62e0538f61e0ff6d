// Package oracle is the reference Loom's compiled policy is judged against: it decides
// whether one pod may open a connection to another, on one network, from the cluster's
// objects as written, following the Kubernetes NetworkPolicy documentation
// (https://kubernetes.io/docs/concepts/services-networking/network-policies/), the NPWG
// MultiNetworkPolicy semantics and the tenant rules of Loom's README.
//
// It must stay naive. Its worth is that it shares nothing with the compiler but the input
// types: no indexes, no caches, no sets, no validated forms; every question re-reads the
// snapshot from the start and converts every label selector again. A faster or cleverer
// oracle would only repeat the compiler's mistakes. It decides for pods that are known and
// for policies that the Kubernetes API server would accept; it is not a validator.
//
// What it decides, in order:
//
//   - A pod cannot block traffic to itself.
//   - Both pods need an address of the family on the network.
//   - Tenants. On the primary network a tenant's pod reaches pods of its own tenant, of
//     tenants that it and that name each other as peers, and of the platform (namespaces in
//     no tenant); a platform pod there has no tenant boundary. On a secondary network a
//     tenant's pod reaches its own tenant and its mutual peers only and the platform's pods
//     reach only one another, unless no tenant's pod is on that network: then there is no
//     boundary on it at all.
//   - Policies. A NetworkPolicy applies on the primary network only; a MultiNetworkPolicy on
//     the secondary networks its k8s.v1.cni.cncf.io/policy-for annotation names (Policy.
//     Networks) only. The source's egress must allow the connection and the destination's
//     ingress must allow it. A direction is isolated when a policy of the pod's namespace
//     selects the pod and has that policy type (policyTypes default to Ingress, plus Egress
//     when the policy has egress rules); an isolated direction allows what at least one rule
//     of the selecting policies allows. A rule allows a peer that one of its from/to entries
//     matches (none listed: every peer) on a port one of its ports matches (none listed:
//     every port and protocol). ICMP and other protocols without ports are allowed only by
//     rules that list no ports.
package oracle

import (
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/loom-cni/loom/policy"
)

// Family is an address family: 4 or 6.
type Family int

// Connection is one attempt to open a connection: from a pod to a pod's address of Family
// on Network, with Protocol ("TCP", "UDP", "SCTP", or "ICMP" and any other protocol without
// ports) to Port.
type Connection struct {
	From, To policy.PodKey
	Network  policy.NetworkID
	Family   Family
	Protocol string
	Port     uint16
}

func (c Connection) String() string {
	n := string(c.Network)
	if n == "" {
		n = "primary"
	}
	return fmt.Sprintf("%s → %s on %s, IPv%d %s/%d", c.From, c.To, n, c.Family, c.Protocol, c.Port)
}

// Verdict is the oracle's answer with the reason for it, in words.
type Verdict struct {
	Allowed bool
	Reason  string
}

func allow(format string, args ...any) Verdict {
	return Verdict{Allowed: true, Reason: fmt.Sprintf(format, args...)}
}

func deny(format string, args ...any) Verdict {
	return Verdict{Reason: fmt.Sprintf(format, args...)}
}

// Decide says whether the connection c may be opened in the cluster s.
func Decide(s *policy.Snapshot, c Connection) Verdict {
	src, ok := findPod(s, c.From)
	if !ok {
		return deny("no pod %s", c.From)
	}
	dst, ok := findPod(s, c.To)
	if !ok {
		return deny("no pod %s", c.To)
	}
	if c.From == c.To {
		return allow("a pod cannot block traffic to itself")
	}
	srcIP, ok := address(src, c.Network, c.Family)
	if !ok {
		return deny("%s has no IPv%d address on the network", c.From, c.Family)
	}
	dstIP, ok := address(dst, c.Network, c.Family)
	if !ok {
		return deny("%s has no IPv%d address on the network", c.To, c.Family)
	}
	if v := tenantBoundary(s, src, dst, c.Network); !v.Allowed {
		return v
	}
	// The source's egress: its policies decide about the destination.
	if v := direction(s, src, dst, dstIP, c, networkingv1.PolicyTypeEgress); !v.Allowed {
		return v
	}
	// The destination's ingress: its policies decide about the source.
	if v := direction(s, dst, src, srcIP, c, networkingv1.PolicyTypeIngress); !v.Allowed {
		return v
	}
	return allow("tenants and policies allow it")
}

func findPod(s *policy.Snapshot, key policy.PodKey) (policy.Pod, bool) {
	for _, p := range s.Pods {
		if p.PodKey == key {
			return p, true
		}
	}
	return policy.Pod{}, false
}

// address is pod p's first address of family f on network n.
func address(p policy.Pod, n policy.NetworkID, f Family) (netip.Addr, bool) {
	for _, ep := range p.Endpoints {
		if ep.Network != n {
			continue
		}
		for _, a := range ep.IPs {
			if (f == 4 && a.Is4()) || (f == 6 && a.Is6() && !a.Is4In6()) {
				return a, true
			}
		}
	}
	return netip.Addr{}, false
}

// tenantOf is the tenant of pod p's namespace, "" for the platform.
func tenantOf(s *policy.Snapshot, p policy.Pod) string {
	for _, ns := range s.Namespaces {
		if ns.Name == p.Namespace {
			return ns.Tenant
		}
	}
	return p.Tenant
}

func namespaceLabels(s *policy.Snapshot, name string) map[string]string {
	for _, ns := range s.Namespaces {
		if ns.Name == name {
			return ns.Labels
		}
	}
	return nil
}

// names reports whether tenant a names tenant b as a peer.
func names(s *policy.Snapshot, a, b string) bool {
	for _, t := range s.Tenants {
		if t.Name == a {
			return slices.Contains(t.Peers, b)
		}
	}
	return false
}

// tenantBoundary applies the README's tenant rules to a connection from src to dst on n.
func tenantBoundary(s *policy.Snapshot, src, dst policy.Pod, n policy.NetworkID) Verdict {
	ts, td := tenantOf(s, src), tenantOf(s, dst)
	if n == policy.Primary && (ts == "" || td == "") {
		return allow("the platform is reachable from and reaches every tenant on the primary network")
	}
	if n != policy.Primary {
		// Where no tenant's pod is, there is no boundary; between two pods that is the
		// platform's pods reaching one another.
		if ts == "" && td == "" {
			return allow("the platform's pods reach one another")
		}
		if ts == "" || td == "" {
			return deny("the platform and a tenant do not meet on a secondary network")
		}
	}
	if ts == td {
		return allow("same tenant")
	}
	if names(s, ts, td) && names(s, td, ts) {
		return allow("tenants %s and %s name each other as peers", ts, td)
	}
	return deny("tenant %s and tenant %s are not mutual peers", ts, td)
}

// direction decides one direction for pod self, whose policies apply, with the pod at the
// other end of the connection: egress when self is the source, ingress when it is the
// destination.
func direction(s *policy.Snapshot, self, other policy.Pod, otherIP netip.Addr, c Connection, d networkingv1.PolicyType) Verdict {
	dst := other
	if d == networkingv1.PolicyTypeIngress {
		dst = self
	}
	isolated := false
	for _, pol := range s.Policies {
		if pol.Namespace != self.Namespace || !appliesOn(pol, c.Network) || !selectorMatches(&pol.Spec.PodSelector, self.Labels) {
			continue
		}
		if !hasType(pol.Spec, d) {
			continue
		}
		isolated = true
		for i, r := range rulesOf(pol.Spec, d) {
			if peersMatch(s, r.peers, pol.Namespace, other, otherIP) && portsMatch(r.ports, dst, c.Protocol, c.Port) {
				return allow("%s/%s %s rule %d allows it", pol.Namespace, pol.Name, d, i)
			}
		}
	}
	if isolated {
		return deny("%s is isolated for %s and no rule allows it", self.PodKey, d)
	}
	return allow("no policy isolates %s for %s", self.PodKey, d)
}

// appliesOn: a NetworkPolicy applies on the primary network, a MultiNetworkPolicy on the
// secondary networks it names.
func appliesOn(p policy.Policy, n policy.NetworkID) bool {
	if p.Kind == policy.KindNetworkPolicy {
		return n == policy.Primary
	}
	return n != policy.Primary && slices.Contains(p.Networks, n)
}

// hasType says whether the policy has policy type d, defaulted as the API documents:
// Ingress always, Egress when the policy has egress rules.
func hasType(spec networkingv1.NetworkPolicySpec, d networkingv1.PolicyType) bool {
	if len(spec.PolicyTypes) == 0 {
		return d == networkingv1.PolicyTypeIngress || len(spec.Egress) > 0
	}
	return slices.Contains(spec.PolicyTypes, d)
}

type rule struct {
	peers []networkingv1.NetworkPolicyPeer
	ports []networkingv1.NetworkPolicyPort
}

func rulesOf(spec networkingv1.NetworkPolicySpec, d networkingv1.PolicyType) []rule {
	var out []rule
	if d == networkingv1.PolicyTypeIngress {
		for _, r := range spec.Ingress {
			out = append(out, rule{peers: r.From, ports: r.Ports})
		}
		return out
	}
	for _, r := range spec.Egress {
		out = append(out, rule{peers: r.To, ports: r.Ports})
	}
	return out
}

// selectorMatches converts sel as the API does; a selector that does not convert selects
// nothing.
func selectorMatches(sel *metav1.LabelSelector, set map[string]string) bool {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false
	}
	return s.Matches(labels.Set(set))
}

// peersMatch: an empty list matches every peer; otherwise one entry must match pod p at
// address ip. A podSelector alone selects pods of the policy's namespace; with a
// namespaceSelector, pods of the namespaces it selects; an ipBlock matches the address.
func peersMatch(s *policy.Snapshot, peers []networkingv1.NetworkPolicyPeer, policyNS string, p policy.Pod, ip netip.Addr) bool {
	if len(peers) == 0 {
		return true
	}
	for _, peer := range peers {
		switch {
		case peer.IPBlock != nil:
			if ipBlockMatches(peer.IPBlock, ip) {
				return true
			}
		case peer.NamespaceSelector != nil:
			if selectorMatches(peer.NamespaceSelector, namespaceLabels(s, p.Namespace)) &&
				(peer.PodSelector == nil || selectorMatches(peer.PodSelector, p.Labels)) {
				return true
			}
		case peer.PodSelector != nil:
			if p.Namespace == policyNS && selectorMatches(peer.PodSelector, p.Labels) {
				return true
			}
		}
	}
	return false
}

func ipBlockMatches(b *networkingv1.IPBlock, ip netip.Addr) bool {
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil || !cidr.Masked().Contains(ip) {
		return false
	}
	for _, e := range b.Except {
		ex, err := netip.ParsePrefix(e)
		if err != nil || ex.Masked().Contains(ip) {
			return false
		}
	}
	return true
}

// portsMatch: an empty list matches every port and protocol; otherwise one entry must match.
// A named port is the destination pod's container port of that name and protocol.
func portsMatch(ports []networkingv1.NetworkPolicyPort, dst policy.Pod, protocol string, port uint16) bool {
	if len(ports) == 0 {
		return true
	}
	for _, pp := range ports {
		proto := string(corev1.ProtocolTCP)
		if pp.Protocol != nil {
			proto = string(*pp.Protocol)
		}
		if proto != protocol {
			continue
		}
		switch {
		case pp.Port == nil:
			return true
		case pp.Port.Type == intstr.String:
			if containerPort(dst, pp.Port.StrVal, proto) == port && port != 0 {
				return true
			}
		default:
			end := pp.Port.IntVal
			if pp.EndPort != nil {
				end = *pp.EndPort
			}
			if int32(port) >= pp.Port.IntVal && int32(port) <= end {
				return true
			}
		}
	}
	return false
}

// containerPort is the number of pod p's container port called name for protocol (TCP when
// the pod does not say); 0 if it has none.
func containerPort(p policy.Pod, name, protocol string) uint16 {
	for _, np := range p.Ports {
		proto := np.Protocol
		if proto == "" {
			proto = string(corev1.ProtocolTCP)
		}
		if np.Name == name && proto == protocol {
			return np.Port
		}
	}
	return 0
}
