package connectivity

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/loom-cni/loom/policy"
)

const lan = policy.NetworkID("infra/lan")

// smallCluster: tenants acme and globex (not peers) and the platform namespace infra.
// acme/web (app=web, container port http TCP 8080) and acme/client have both families on the
// primary network, globex/g IPv4 only; acme/web, acme/client and globex/g share infra/lan
// (IPv4). infra/dns is on the primary network only; acme/pending has no node yet. A
// NetworkPolicy lets acme's pods reach web on TCP 80, the named port http and 9000-9001; a
// MultiNetworkPolicy on infra/lan names UDP 53.
func smallCluster() policy.Snapshot {
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	end := int32(9001)
	ep := func(n policy.NetworkID, ifname string, addrs ...string) policy.Endpoint {
		e := policy.Endpoint{Network: n, Interface: ifname}
		for _, a := range addrs {
			e.IPs = append(e.IPs, netip.MustParseAddr(a))
		}
		return e
	}
	pod := func(ns, name string, labels map[string]string, eps ...policy.Endpoint) policy.Pod {
		return policy.Pod{PodKey: policy.PodKey{Namespace: ns, Name: name}, Node: "n1", Labels: labels, Endpoints: eps}
	}
	web := pod("acme", "web", map[string]string{"app": "web"},
		ep(policy.Primary, "eth0", "10.244.1.2", "fd00:244::2"), ep(lan, "net1", "192.168.9.2"))
	web.Ports = []policy.NamedPort{{Name: "http", Protocol: "TCP", Port: 8080}}
	pending := pod("acme", "pending", nil, ep(policy.Primary, "eth0", "10.244.1.9"))
	pending.Node = ""
	return policy.Snapshot{
		Tenants: []policy.Tenant{{Name: "acme"}, {Name: "globex"}},
		Namespaces: []policy.Namespace{
			{Name: "acme", Tenant: "acme", Labels: map[string]string{"kubernetes.io/metadata.name": "acme"}},
			{Name: "globex", Tenant: "globex", Labels: map[string]string{"kubernetes.io/metadata.name": "globex"}},
			{Name: "infra", Labels: map[string]string{"kubernetes.io/metadata.name": "infra"}},
		},
		Pods: []policy.Pod{
			web,
			pod("acme", "client", nil, ep(policy.Primary, "eth0", "10.244.1.3", "fd00:244::3"), ep(lan, "net1", "192.168.9.3")),
			pod("globex", "g", nil, ep(policy.Primary, "eth0", "10.244.2.2"), ep(lan, "net1", "192.168.9.4")),
			pod("infra", "dns", nil, ep(policy.Primary, "eth0", "10.244.3.2", "fd00:244::5")),
			pending,
		},
		Policies: []policy.Policy{
			{
				Kind: policy.KindNetworkPolicy, Namespace: "acme", Name: "web", Networks: []policy.NetworkID{policy.Primary},
				Spec: networkingv1.NetworkPolicySpec{
					PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
					Ingress: []networkingv1.NetworkPolicyIngressRule{{
						From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{}}},
						Ports: []networkingv1.NetworkPolicyPort{
							{Protocol: &tcp, Port: ptr(intstr.FromInt32(80))},
							{Protocol: &tcp, Port: ptr(intstr.FromString("http"))},
							{Protocol: &tcp, Port: ptr(intstr.FromInt32(9000)), EndPort: &end},
						},
					}},
				},
			},
			{
				Kind: policy.KindMultiNetworkPolicy, Namespace: "infra", Name: "dns", Networks: []policy.NetworkID{lan},
				Spec: networkingv1.NetworkPolicySpec{
					Egress: []networkingv1.NetworkPolicyEgressRule{{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: ptr(intstr.FromInt32(53))}}}},
				},
			},
		},
	}
}

func everyPod(policy.Pod) bool { return true }

// key names a probe: "acme/client acme/web primary 4 TCP/80".
func key(p Probe) string {
	return fmt.Sprintf("%s %s %s %d %s/%d", p.From, p.To, Network(p.Network), p.Family, p.Protocol, p.Port)
}

func TestPlanProbes(t *testing.T) {
	s := smallCluster()
	probes := Plan(&s, everyPod)
	byKey := map[string]Probe{}
	for _, p := range probes {
		k := key(p)
		if _, dup := byKey[k]; dup {
			t.Errorf("probe %s planned twice", k)
		}
		byKey[k] = p
		if p.From == p.To {
			t.Errorf("probe %s: a pod probing itself", k)
		}
		if p.From.Name == "pending" || p.To.Name == "pending" {
			t.Errorf("probe %s: acme/pending runs on no node", k)
		}
		if p.Source.Is4() != (p.Family == 4) || p.Address.Is4() != (p.Family == 4) {
			t.Errorf("probe %s: addresses %s → %s are not of its family", k, p.Source, p.Address)
		}
	}
	// Towards acme/web on the primary network: ICMP, and TCP and UDP on 80, 8080 (http on
	// web), 9000 and 9001 and the unnamed 7007, in each family both have.
	var got []string
	for _, p := range probes {
		if p.From.Name == "client" && p.To.Name == "web" && p.Network == policy.Primary && p.Family == 6 {
			got = append(got, fmt.Sprintf("%s/%d", p.Protocol, p.Port))
		}
	}
	want := []string{"ICMP/0", "TCP/80", "TCP/7007", "TCP/8080", "TCP/9000", "TCP/9001", "UDP/80", "UDP/7007", "UDP/8080", "UDP/9000", "UDP/9001"}
	if !slices.Equal(got, want) {
		t.Errorf("acme/client → acme/web on primary over IPv6: %v, want %v", got, want)
	}
	// http is web's port only: towards client it is not probed; the unnamed port is.
	for _, k := range []string{"acme/web acme/client primary 4 TCP/8080", "acme/web acme/client primary 6 TCP/8080", "acme/client globex/g primary 6 ICMP/0", "acme/client infra/dns infra/lan 4 ICMP/0"} {
		if _, ok := byKey[k]; ok {
			t.Errorf("probe %s planned: want none", k)
		}
	}
	for _, k := range []string{"acme/web acme/client primary 4 TCP/7007", "acme/web acme/client primary 6 UDP/80", "acme/client globex/g infra/lan 4 UDP/53", "globex/g acme/web infra/lan 4 TCP/7007"} {
		if _, ok := byKey[k]; !ok {
			t.Errorf("probe %s not planned", k)
		}
	}
	// 4 pods: 12 ordered pairs on the primary network, 6 on infra/lan. Primary ports: 80,
	// 7007, 9000, 9001, and 8080 towards web; lan: 53, 7007. IPv6 where both have it: the
	// pairs among web, client and dns.
	primary := 0
	for _, from := range []string{"web", "client", "g", "dns"} {
		for _, to := range []string{"web", "client", "g", "dns"} {
			if from == to {
				continue
			}
			ports := 4
			if to == "web" {
				ports = 5
			}
			families := 1
			if from != "g" && to != "g" {
				families = 2
			}
			primary += families * (1 + 2*ports)
		}
	}
	if want := primary + 6*(1+2*2); len(probes) != want {
		t.Errorf("%d probes, want %d", len(probes), want)
	}
}

func TestPlanVerdictsFromTheOracle(t *testing.T) {
	s := smallCluster()
	byKey := map[string]Probe{}
	for _, p := range Plan(&s, everyPod) {
		byKey[key(p)] = p
	}
	for k, allowed := range map[string]bool{
		// The NetworkPolicy selects web for ingress: its ports only, TCP only.
		"acme/client acme/web primary 4 TCP/80":   true,
		"acme/client acme/web primary 6 TCP/8080": true,
		"acme/client acme/web primary 4 TCP/9001": true,
		"acme/client acme/web primary 4 UDP/80":   false,
		"acme/client acme/web primary 4 TCP/7007": false,
		"acme/client acme/web primary 4 ICMP/0":   false,
		// Its peer is a podSelector: pods of acme only; the platform is not one.
		"infra/dns acme/web primary 4 TCP/80": false,
		// client is not selected: the tenant rules alone decide.
		"acme/web acme/client primary 6 UDP/7007": true,
		"infra/dns acme/client primary 4 ICMP/0":  true,
		"acme/client globex/g primary 4 ICMP/0":   false,
		"acme/client globex/g infra/lan 4 UDP/53": false,
		"acme/web acme/client infra/lan 4 TCP/53": true,
	} {
		p, ok := byKey[k]
		if !ok {
			t.Errorf("probe %s not planned", k)
			continue
		}
		if p.Expected.Allowed != allowed || p.Expected.Reason == "" {
			t.Errorf("probe %s: expected %+v, want allowed=%v with a reason", k, p.Expected, allowed)
		}
	}
}

func TestPlanIncludeAndUnnamedPort(t *testing.T) {
	s := smallCluster()
	// A policy on another network names 7007 and a pod names 7008: the unnamed port is 7009.
	tcp := corev1.ProtocolTCP
	s.Policies = append(s.Policies, policy.Policy{Kind: policy.KindMultiNetworkPolicy, Namespace: "infra", Name: "other", Networks: []policy.NetworkID{"infra/other"},
		Spec: networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: ptr(intstr.FromInt32(7007))}}}}}})
	s.Pods[1].Ports = []policy.NamedPort{{Name: "metrics", Protocol: "TCP", Port: 7008}}
	probes := Plan(&s, func(p policy.Pod) bool { return p.Namespace == "acme" })
	if len(probes) == 0 {
		t.Fatal("no probes between acme's pods")
	}
	for _, p := range probes {
		if p.From.Namespace != "acme" || p.To.Namespace != "acme" {
			t.Errorf("probe %s: outside acme", key(p))
		}
		if p.Protocol != ICMP && p.Network == lan && p.Port != 53 && p.Port != 7009 {
			t.Errorf("probe %s: on infra/lan want ports 53 and 7009", key(p))
		}
		if strings.HasSuffix(key(p), "/7007") {
			t.Errorf("probe %s: 7007 is named by a policy of another network only", key(p))
		}
	}
}

func TestListeners(t *testing.T) {
	s := smallCluster()
	ls := listeners(Plan(&s, everyPod))
	web := ls[policy.PodKey{Namespace: "acme", Name: "web"}]
	if want := []uint16{53, 80, 7007, 8080, 9000, 9001}; !slices.Equal(web.TCP, want) || !slices.Equal(web.UDP, want) {
		t.Errorf("acme/web listens on %+v, want TCP and UDP on %v", web, want)
	}
	dns := ls[policy.PodKey{Namespace: "infra", Name: "dns"}]
	if want := []uint16{80, 7007, 9000, 9001}; !slices.Equal(dns.TCP, want) {
		t.Errorf("infra/dns listens on %+v, want TCP on %v", dns, want)
	}
}
