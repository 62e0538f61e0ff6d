package policy

import (
	"fmt"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// benchSnapshot is a large cluster: tenants of one namespace and 10 pods each, tenant i
// peering with tenant i^1, a /26 block per tenant on the primary network, half of each
// tenant's pods also on the tenant's own secondary network, pods spread over 100 nodes, and
// one policy per namespace: a NetworkPolicy for four namespaces of five, a
// MultiNetworkPolicy for the fifth. The platform has ten pods in kube-system.
func benchSnapshot(tenants int) Snapshot {
	s := Snapshot{ClusterCIDRs: []netip.Prefix{pfx("10.0.0.0/8")}}
	for n := range 100 {
		s.Hosts = append(s.Hosts, netip.AddrFrom4([4]byte{10, 255, 0, byte(n)}))
	}
	s.Namespaces = append(s.Namespaces, Namespace{Name: "kube-system", Labels: map[string]string{"kubernetes.io/metadata.name": "kube-system"}})
	for i := range 10 {
		s.Pods = append(s.Pods, Pod{
			PodKey: PodKey{"kube-system", fmt.Sprintf("dns-%d", i)}, Node: fmt.Sprintf("node-%d", i),
			Labels: map[string]string{"k8s-app": "dns"}, Ports: []NamedPort{{Name: "dns", Protocol: "UDP", Port: 53}},
			Endpoints: []Endpoint{{Network: Primary, Interface: "eth0", HostInterface: fmt.Sprintf("vethdns%d", i),
				IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 254, 0, byte(i)})}}},
		})
	}
	for t := range tenants {
		name, ns := fmt.Sprintf("t%d", t), fmt.Sprintf("ns-%d", t)
		block := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(t >> 2), byte(t&3) << 6, 0}), 26)
		s.Tenants = append(s.Tenants, Tenant{Name: name, Peers: []string{fmt.Sprintf("t%d", t^1)}, Blocks: []netip.Prefix{block}})
		s.Namespaces = append(s.Namespaces, Namespace{Name: ns, Tenant: name, Labels: map[string]string{"tenant": name}})
		network := NetworkID(ns + "/data")
		s.Networks = append(s.Networks, Network{ID: network, Subnets: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16 + byte(t>>8), byte(t), 0}), 24)}})
		for j := range 10 {
			addr := block.Addr().As4()
			addr[3] = byte(j + 1)
			p := Pod{
				PodKey: PodKey{ns, fmt.Sprintf("pod-%d", j)}, Node: fmt.Sprintf("node-%d", (t*10+j)%100), Tenant: name,
				Labels:    map[string]string{"app": fmt.Sprintf("a%d", j%3)},
				Ports:     []NamedPort{{Name: "http", Protocol: "TCP", Port: uint16(8080 + j%2)}},
				Endpoints: []Endpoint{{Network: Primary, Interface: "eth0", HostInterface: fmt.Sprintf("veth%d-%d", t, j), IPs: []netip.Addr{netip.AddrFrom4(addr)}}},
			}
			if j%2 == 0 {
				p.Endpoints = append(p.Endpoints, Endpoint{Network: network, Interface: "net1",
					IPs: []netip.Addr{netip.AddrFrom4([4]byte{172, 16 + byte(t>>8), byte(t), byte(j + 1)})}})
			}
			s.Pods = append(s.Pods, p)
		}
		s.Policies = append(s.Policies, benchPolicy(t, ns, network))
	}
	return s
}

func benchPolicy(t int, ns string, network NetworkID) Policy {
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	http, https, dns := intstr.FromString("http"), intstr.FromInt32(443), intstr.FromString("dns")
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "policy"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "a0"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{
					{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "a1"}}},
					{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tenant": fmt.Sprintf("t%d", t^1)}}},
					{IPBlock: &networkingv1.IPBlock{CIDR: "192.168.0.0/16", Except: []string{"192.168.1.0/24"}}},
				},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &http}, {Protocol: &tcp, Port: &https}},
			}},
			Egress: []networkingv1.NetworkPolicyEgressRule{{
				To:    []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &http}},
			}, {
				To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{
					MatchLabels: map[string]string{"kubernetes.io/metadata.name": "kube-system"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: &dns}},
			}},
		},
	}
	p := FromNetworkPolicy(np)
	if t%5 == 4 {
		p.Kind, p.Networks = KindMultiNetworkPolicy, []NetworkID{network}
	}
	return p
}

// BenchmarkCompile compiles, for one node, a cluster of 10,000 pods in 1,000 tenants with
// 1,000 policies, of which about 100 pods run on the node.
func BenchmarkCompile(b *testing.B) {
	s := benchSnapshot(1000)
	local := 0
	for _, p := range s.Pods {
		if p.Node == "node-0" {
			local++
		}
	}
	b.ReportMetric(float64(len(s.Pods)), "pods")
	b.ReportMetric(float64(local), "local-pods")
	b.ResetTimer()
	for b.Loop() {
		Compile(s, "node-0")
	}
}
