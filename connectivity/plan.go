package connectivity

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/loom-cni/loom/policy"
	"github.com/loom-cni/loom/policy/oracle"
)

// Protocols a probe speaks.
const (
	ICMP = "ICMP"
	TCP  = "TCP"
	UDP  = "UDP"
)

// firstUnnamedPort is where the search for a port no policy names starts.
const firstUnnamedPort = 7007

// Probe is one connection to try, with the verdict the oracle gives it.
type Probe struct {
	oracle.Connection
	// From and To's addresses of Family on Network, the ones the oracle decides about.
	Source, Address netip.Addr
	Expected        oracle.Verdict
}

// Plan lists the probes for the pods of s that include accepts and that run on a node,
// ordered by source, destination, network, family, protocol and port. For each ordered pair
// and each network both have an endpoint on, and each family both have an address of there:
// ICMP, and TCP and UDP on every port a policy applying on that network names (a range by its
// first and last port; a named port as the destination pod's container port of that name, if
// it has one) and on one port no policy names anywhere.
func Plan(s *policy.Snapshot, include func(policy.Pod) bool) []Probe {
	var pods []policy.Pod
	for _, p := range s.Pods {
		if p.Node != "" && include(p) {
			pods = append(pods, p)
		}
	}
	slices.SortFunc(pods, func(a, b policy.Pod) int { return cmp.Compare(a.PodKey.String(), b.PodKey.String()) })
	unnamed := unnamedPort(s)
	var probes []Probe
	for _, from := range pods {
		for _, to := range pods {
			if from.PodKey == to.PodKey {
				continue
			}
			for _, n := range sharedNetworks(from, to) {
				ports := portsOn(s, n, to, unnamed)
				for _, f := range []oracle.Family{4, 6} {
					src, ok1 := address(from, n, f)
					dst, ok2 := address(to, n, f)
					if !ok1 || !ok2 {
						continue
					}
					c := oracle.Connection{From: from.PodKey, To: to.PodKey, Network: n, Family: f, Protocol: ICMP}
					probes = append(probes, Probe{Connection: c, Source: src, Address: dst, Expected: oracle.Decide(s, c)})
					for _, proto := range []string{TCP, UDP} {
						for _, port := range ports {
							c.Protocol, c.Port = proto, port
							probes = append(probes, Probe{Connection: c, Source: src, Address: dst, Expected: oracle.Decide(s, c)})
						}
					}
				}
			}
		}
	}
	return probes
}

// sharedNetworks are the networks both pods have an endpoint on, primary first.
func sharedNetworks(a, b policy.Pod) []policy.NetworkID {
	var out []policy.NetworkID
	for _, ea := range a.Endpoints {
		for _, eb := range b.Endpoints {
			if ea.Network == eb.Network && !slices.Contains(out, ea.Network) {
				out = append(out, ea.Network)
			}
		}
	}
	slices.Sort(out)
	return out
}

// address is pod p's first address of family f on network n, as the oracle reads it.
func address(p policy.Pod, n policy.NetworkID, f oracle.Family) (netip.Addr, bool) {
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

// portsOn are the ports to probe on network n towards pod dst: every port a policy applying
// on n names, resolved on dst, and the unnamed one; sorted, without duplicates.
func portsOn(s *policy.Snapshot, n policy.NetworkID, dst policy.Pod, unnamed uint16) []uint16 {
	ports := []uint16{unnamed}
	for _, pol := range s.Policies {
		if !appliesOn(pol, n) {
			continue
		}
		for _, pp := range policyPorts(pol) {
			switch {
			case pp.Port == nil:
			case pp.Port.Type == intstr.String:
				proto := string(corev1.ProtocolTCP)
				if pp.Protocol != nil {
					proto = string(*pp.Protocol)
				}
				if port := containerPort(dst, pp.Port.StrVal, proto); port != 0 {
					ports = append(ports, port)
				}
			default:
				ports = append(ports, numbered(pp)...)
			}
		}
	}
	slices.Sort(ports)
	return slices.Compact(ports)
}

// numbered are the first and last port of a numeric policy port; nothing outside 1-65535.
func numbered(pp networkingv1.NetworkPolicyPort) []uint16 {
	var out []uint16
	ends := []int32{pp.Port.IntVal}
	if pp.EndPort != nil {
		ends = append(ends, *pp.EndPort)
	}
	for _, p := range ends {
		if p >= 1 && p <= 65535 {
			out = append(out, uint16(p))
		}
	}
	return out
}

// appliesOn: a NetworkPolicy applies on the primary network, a MultiNetworkPolicy on the
// networks its policy-for annotation names.
func appliesOn(p policy.Policy, n policy.NetworkID) bool {
	if p.Kind == policy.KindNetworkPolicy {
		return n == policy.Primary
	}
	return n != policy.Primary && slices.Contains(p.Networks, n)
}

// containerPort is pod p's container port called name for protocol; 0 if it has none.
func containerPort(p policy.Pod, name, protocol string) uint16 {
	for _, np := range p.Ports {
		proto := cmp.Or(np.Protocol, string(corev1.ProtocolTCP))
		if np.Name == name && proto == protocol {
			return np.Port
		}
	}
	return 0
}

// unnamedPort is the first port from firstUnnamedPort up that no policy's port or range
// covers and no pod names.
func unnamedPort(s *policy.Snapshot) uint16 {
	taken := func(port uint16) bool {
		for _, pol := range s.Policies {
			for _, pp := range policyPorts(pol) {
				if pp.Port == nil || pp.Port.Type == intstr.String {
					continue
				}
				end := pp.Port.IntVal
				if pp.EndPort != nil {
					end = *pp.EndPort
				}
				if int32(port) >= pp.Port.IntVal && int32(port) <= end {
					return true
				}
			}
		}
		for _, p := range s.Pods {
			for _, np := range p.Ports {
				if np.Port == port {
					return true
				}
			}
		}
		return false
	}
	port := uint16(firstUnnamedPort)
	for taken(port) && port < 65535 {
		port++
	}
	return port
}

// policyPorts are the ports of every rule of p, in both directions.
func policyPorts(p policy.Policy) []networkingv1.NetworkPolicyPort {
	var out []networkingv1.NetworkPolicyPort
	for _, r := range p.Spec.Ingress {
		out = append(out, r.Ports...)
	}
	for _, r := range p.Spec.Egress {
		out = append(out, r.Ports...)
	}
	return out
}

// String names the probe as the report does: "a/x → b/y on primary, IPv4 TCP/80 (10.0.0.2)".
func (p Probe) String() string {
	return fmt.Sprintf("%s (%s)", p.Connection, p.Address)
}
