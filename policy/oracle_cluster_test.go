package policy_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/loom-cni/loom/policy"
	"github.com/loom-cni/loom/policy/oracle"
)

// A cluster's primary network: a /16 (IPv4) or /48 (IPv6) with a default pool, one block
// per tenant and the nodes' VTEP addresses; secondary network k has 192.168.k.0/24 and
// fd00:20:0:k::/64.
var (
	clusterCIDR = [2]netip.Prefix{netip.MustParsePrefix("10.0.0.0/16"), netip.MustParsePrefix("fd00:10::/48")}
	podLabels   = map[string][]string{"app": {"web", "db", "api"}, "role": {"front", "back"}, "tier": {"1", "2"}}
	nsLabels    = map[string][]string{"team": {"a", "b"}, "env": {"prod", "dev"}}
	// Container ports by name: the numbers a pod may give each, and the protocol ("" is TCP).
	containerPorts = []policy.NamedPort{
		{Name: "http", Protocol: "TCP", Port: 80}, {Name: "http", Protocol: "", Port: 8080},
		{Name: "dns", Protocol: "UDP", Port: 53}, {Name: "dns", Protocol: "UDP", Port: 5353},
		{Name: "metrics", Protocol: "TCP", Port: 9090}, {Name: "sctp", Protocol: "SCTP", Port: 3868},
	}
	portNames = []string{"http", "dns", "metrics", "sctp", "absent"}
	portNums  = []int32{53, 80, 443, 3868, 8080, 9090}
	portRange = [][2]int32{{50, 60}, {8000, 8100}, {9000, 9099}}
)

func familyIndex(f oracle.Family) int { return map[oracle.Family]int{4: 0, 6: 1}[f] }

// addAt adds k to a at bit position shift, counted from the address's last bit.
func addAt(a netip.Addr, k, shift int) netip.Addr {
	b := a.As16()
	carry := k << (shift % 8)
	for i := 15 - shift/8; i >= 0 && carry > 0; i-- {
		sum := int(b[i]) + carry
		b[i], carry = byte(sum), sum>>8
	}
	if a.Is4() {
		return netip.AddrFrom16(b).Unmap()
	}
	return netip.AddrFrom16(b)
}

// nthAddr is the n-th address of p.
func nthAddr(p netip.Prefix, n int) netip.Addr { return addAt(p.Addr(), n, 0) }

// subPrefix is the k-th prefix of length bits inside p.
func subPrefix(p netip.Prefix, bits, k int) netip.Prefix {
	return netip.PrefixFrom(addAt(p.Addr(), k, p.Addr().BitLen()-bits), bits)
}

type generator struct {
	r          *rand.Rand
	s          policy.Snapshot
	families   []oracle.Family
	pools      map[string][2]netip.Prefix // tenant ("" the default pool) → its block per family
	used       map[netip.Prefix]int       // addresses handed out per pool or subnet
	namespaces []string
}

func (g *generator) chance(percent int) bool { return g.r.IntN(100) < percent }

func pick[T any](g *generator, xs []T) T { return xs[g.r.IntN(len(xs))] }

// genCluster makes a random cluster: up to four tenants with random one-sided and mutual
// peers, platform namespaces, labelled namespaces, 2 to 12 pods on 1 to 3 nodes with up to
// three secondary networks, one or both families, named ports, and up to seven policies.
// The error says where Loom read a policy otherwise than the generator wrote it.
func genCluster(r *rand.Rand) (policy.Snapshot, error) {
	g := &generator{r: r, pools: map[string][2]netip.Prefix{}, used: map[netip.Prefix]int{}}
	g.families = pick(g, [][]oracle.Family{{4}, {6}, {4, 6}, {4, 6}})
	for _, f := range g.families {
		g.s.ClusterCIDRs = append(g.s.ClusterCIDRs, clusterCIDR[familyIndex(f)])
	}
	nodes := 1 + r.IntN(3)
	for n := range nodes {
		for _, f := range g.families {
			g.s.Hosts = append(g.s.Hosts, nthAddr(subPrefix(clusterCIDR[familyIndex(f)], cidrBits(f, 24), 255), n+1))
		}
	}
	g.pools[""] = [2]netip.Prefix{subPrefix(clusterCIDR[0], 24, 0), subPrefix(clusterCIDR[1], 64, 0)}
	g.genTenants()
	g.genNetworks()
	g.genPods(nodes)
	for i := range r.IntN(8) {
		p, err := g.genPolicy(i)
		if err != nil {
			return g.s, err
		}
		g.s.Policies = append(g.s.Policies, p)
	}
	return g.s, nil
}

// cidrBits is an IPv4 prefix length, or the IPv6 one for the same place in the plan.
func cidrBits(f oracle.Family, v4 int) int {
	if f == 6 {
		return v4 + 40
	}
	return v4
}

func (g *generator) genTenants() {
	tenants := g.r.IntN(5)
	for i := range tenants {
		t := policy.Tenant{Name: fmt.Sprintf("t%d", i)}
		for j := range tenants + 1 {
			// Tenant "t<tenants>" does not exist: naming it must not matter.
			if j != i && g.chance(45) {
				t.Peers = append(t.Peers, fmt.Sprintf("t%d", j))
			}
		}
		if g.chance(70) {
			blocks := [2]netip.Prefix{subPrefix(clusterCIDR[0], 24, 10+i), subPrefix(clusterCIDR[1], 64, 10+i)}
			g.pools[t.Name] = blocks
			for _, f := range g.families {
				t.Blocks = append(t.Blocks, blocks[familyIndex(f)])
			}
		}
		g.s.Tenants = append(g.s.Tenants, t)
		for k := range 1 + g.r.IntN(2) {
			g.addNamespace(fmt.Sprintf("%s-ns%d", t.Name, k), t.Name)
		}
	}
	for k := range 1 + g.r.IntN(2) {
		g.addNamespace([]string{"kube-system", "infra"}[k], "")
	}
}

func (g *generator) addNamespace(name, tenant string) {
	ls := map[string]string{"kubernetes.io/metadata.name": name} // as the API server sets it
	for _, k := range sortedKeys(nsLabels) {
		if g.chance(60) {
			ls[k] = pick(g, nsLabels[k])
		}
	}
	g.s.Namespaces = append(g.s.Namespaces, policy.Namespace{Name: name, Labels: ls, Tenant: tenant})
	g.namespaces = append(g.namespaces, name)
}

func (g *generator) genNetworks() {
	for k := range g.r.IntN(4) {
		n := policy.Network{ID: policy.NetworkID(fmt.Sprintf("%s/net%d", pick(g, g.namespaces), k))}
		fams := pick(g, [][]oracle.Family{{4}, {6}, {4, 6}})
		for _, f := range fams {
			n.Subnets = append(n.Subnets, secondarySubnet(k, f))
		}
		g.s.Networks = append(g.s.Networks, n)
	}
}

func secondarySubnet(k int, f oracle.Family) netip.Prefix {
	if f == 6 {
		return netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0, 0, 0x20, 0, 0, 0, byte(k + 1)}), 64)
	}
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(k + 1), 0}), 24)
}

// staticRange is where static addresses outside a secondary subnet come from: 172.16.k.0/24
// for 192.168.k.0/24, fd00:30:0:k::/64 for fd00:20:0:k::/64.
func staticRange(subnet netip.Prefix) netip.Prefix {
	b := subnet.Addr().As16()
	if subnet.Addr().Is4() {
		b[12], b[13] = 172, 16
		return netip.PrefixFrom(netip.AddrFrom16(b).Unmap(), subnet.Bits())
	}
	b[3] = 0x30
	return netip.PrefixFrom(netip.AddrFrom16(b), subnet.Bits())
}

// next hands out the next address of p.
func (g *generator) next(p netip.Prefix) netip.Addr {
	g.used[p]++
	return nthAddr(p, g.used[p])
}

func (g *generator) genPods(nodes int) {
	for i := range 2 + g.r.IntN(11) {
		ns := g.s.Namespaces[g.r.IntN(len(g.s.Namespaces))]
		p := policy.Pod{
			PodKey: policy.PodKey{Namespace: ns.Name, Name: fmt.Sprintf("p%d", i)},
			Node:   fmt.Sprintf("n%d", g.r.IntN(nodes)), Tenant: ns.Tenant, Labels: map[string]string{},
		}
		for _, k := range sortedKeys(podLabels) {
			if g.chance(60) {
				p.Labels[k] = pick(g, podLabels[k])
			}
		}
		for _, cp := range containerPorts {
			if g.chance(25) && !slices.ContainsFunc(p.Ports, func(o policy.NamedPort) bool { return o.Name == cp.Name }) {
				p.Ports = append(p.Ports, cp)
			}
		}
		// The primary network: the tenant's block, or the default pool (a tenant without
		// blocks, or a pod from before its tenant had them).
		primary := policy.Endpoint{Network: policy.Primary, Interface: "eth0", HostInterface: fmt.Sprintf("veth%d", i)}
		pool, ok := g.pools[ns.Tenant]
		if !ok || g.chance(10) {
			pool = g.pools[""]
		}
		for _, f := range g.families {
			if len(g.families) == 1 || g.chance(85) {
				primary.IPs = append(primary.IPs, g.next(pool[familyIndex(f)]))
			}
		}
		p.Endpoints = append(p.Endpoints, primary)
		for j, k := range g.r.Perm(len(g.s.Networks))[:g.r.IntN(len(g.s.Networks)+1)] {
			p.Endpoints = append(p.Endpoints, g.secondaryEndpoint(k, fmt.Sprintf("net%d", j+1)))
		}
		g.s.Pods = append(g.s.Pods, p)
	}
}

// secondaryEndpoint attaches to network k: an address of each family its IPAM hands out,
// now and then only one of them, and now and then a static address outside its subnets.
func (g *generator) secondaryEndpoint(k int, ifname string) policy.Endpoint {
	n := g.s.Networks[k]
	ep := policy.Endpoint{Network: n.ID, Interface: ifname}
	for _, subnet := range n.Subnets {
		if len(n.Subnets) > 1 && g.chance(15) {
			continue
		}
		if g.chance(10) {
			subnet = staticRange(subnet)
		}
		ep.IPs = append(ep.IPs, g.next(subnet))
	}
	return ep
}

// genPolicy makes a NetworkPolicy or a MultiNetworkPolicy, of any shape the API server
// accepts, and reads it as Loom does.
func (g *generator) genPolicy(i int) (policy.Policy, error) {
	ns := pick(g, g.namespaces)
	spec := networkingv1.NetworkPolicySpec{PodSelector: *g.selector(podLabels)}
	switch g.r.IntN(4) {
	case 1:
		spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	case 2:
		spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	case 3:
		spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
	}
	for range g.ruleCount() {
		spec.Ingress = append(spec.Ingress, networkingv1.NetworkPolicyIngressRule{From: g.peers(), Ports: g.ports()})
	}
	for range g.ruleCount() {
		spec.Egress = append(spec.Egress, networkingv1.NetworkPolicyEgressRule{To: g.peers(), Ports: g.ports()})
	}
	name := fmt.Sprintf("pol%d", i)
	var p policy.Policy
	var networks []policy.NetworkID
	if len(g.s.Networks) == 0 || g.chance(40) {
		p = policy.FromNetworkPolicy(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec})
		networks = []policy.NetworkID{policy.Primary}
	} else {
		var targets []string
		for _, k := range g.r.Perm(len(g.s.Networks))[:1+g.r.IntN(len(g.s.Networks))] {
			id := string(g.s.Networks[k].ID)
			networks = append(networks, g.s.Networks[k].ID)
			if short, ok := strings.CutPrefix(id, ns+"/"); ok && g.chance(50) {
				id = short // a NAD of the policy's own namespace, by name
			}
			targets = append(targets, id)
		}
		if g.chance(10) {
			targets = append(targets, "elsewhere/absent") // a network no pod is on
			networks = append(networks, "elsewhere/absent")
		}
		p = multiNetworkPolicy(ns, name, strings.Join(targets, ","), spec)
	}
	if len(p.Problems) > 0 || !slices.Equal(slices.Sorted(slices.Values(p.Networks)), slices.Sorted(slices.Values(networks))) {
		return p, fmt.Errorf("%s %s/%s: read with problems %q and networks %q, written for %q", p.Kind, ns, name, p.Problems, p.Networks, networks)
	}
	return p, nil
}

// multiNetworkPolicy is a MultiNetworkPolicy as the API server would hand it over.
func multiNetworkPolicy(ns, name, policyFor string, spec networkingv1.NetworkPolicySpec) policy.Policy {
	data, err := json.Marshal(map[string]any{
		"apiVersion": "k8s.cni.cncf.io/v1beta1", "kind": "MultiNetworkPolicy",
		"metadata": map[string]any{"namespace": ns, "name": name, "annotations": map[string]string{policy.PolicyForAnnotation: policyFor}},
		"spec":     spec,
	})
	if err != nil {
		panic(err)
	}
	return policy.ParseMultiNetworkPolicy(data)
}

// ruleCount: no rules (absent), or one to three.
func (g *generator) ruleCount() int { return []int{0, 0, 1, 1, 2, 3}[g.r.IntN(6)] }

func (g *generator) selector(keys map[string][]string) *metav1.LabelSelector {
	sel := &metav1.LabelSelector{}
	for range g.r.IntN(3) {
		k := pick(g, sortedKeys(keys))
		vs := keys[k]
		if g.chance(50) {
			if sel.MatchLabels == nil {
				sel.MatchLabels = map[string]string{}
			}
			sel.MatchLabels[k] = pick(g, vs)
			continue
		}
		req := metav1.LabelSelectorRequirement{Key: k}
		switch g.r.IntN(4) {
		case 0:
			req.Operator, req.Values = metav1.LabelSelectorOpIn, g.values(vs)
		case 1:
			req.Operator, req.Values = metav1.LabelSelectorOpNotIn, g.values(vs)
		case 2:
			req.Operator = metav1.LabelSelectorOpExists
		case 3:
			req.Operator = metav1.LabelSelectorOpDoesNotExist
		}
		sel.MatchExpressions = append(sel.MatchExpressions, req)
	}
	return sel
}

func (g *generator) values(vs []string) []string {
	out := []string{pick(g, vs)}
	if v := pick(g, vs); g.chance(40) && v != out[0] {
		out = append(out, v)
	}
	return out
}

func (g *generator) tenantNames() []string {
	var out []string
	for _, t := range g.s.Tenants {
		out = append(out, t.Name)
	}
	return out
}

func sortedKeys(m map[string][]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// peers: absent (everyone), or one to three peers of every kind.
func (g *generator) peers() []networkingv1.NetworkPolicyPeer {
	if g.chance(25) {
		return nil
	}
	nsKeys := map[string][]string{"kubernetes.io/metadata.name": g.namespaces}
	for k, vs := range nsLabels {
		nsKeys[k] = vs
	}
	var out []networkingv1.NetworkPolicyPeer
	for range 1 + g.r.IntN(3) {
		switch g.r.IntN(4) {
		case 0:
			out = append(out, networkingv1.NetworkPolicyPeer{PodSelector: g.selector(podLabels)})
		case 1:
			out = append(out, networkingv1.NetworkPolicyPeer{NamespaceSelector: g.selector(nsKeys)})
		case 2:
			out = append(out, networkingv1.NetworkPolicyPeer{PodSelector: g.selector(podLabels), NamespaceSelector: g.selector(nsKeys)})
		case 3:
			out = append(out, networkingv1.NetworkPolicyPeer{IPBlock: g.ipBlock()})
		}
	}
	return out
}

// ipBlock is a CIDR that means something here (everything, the cluster, a pool, a subnet, a
// pod) with, now and then, an except strictly inside it around some pod's address.
func (g *generator) ipBlock() *networkingv1.IPBlock {
	var addrs []netip.Addr
	for _, p := range g.s.Pods {
		for _, ep := range p.Endpoints {
			addrs = append(addrs, ep.IPs...)
		}
	}
	candidates := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	candidates = append(candidates, g.s.ClusterCIDRs...)
	for _, t := range append([]string{""}, g.tenantNames()...) {
		if pool, ok := g.pools[t]; ok {
			candidates = append(candidates, pool[:]...)
		}
	}
	for _, n := range g.s.Networks {
		candidates = append(candidates, n.Subnets...)
	}
	for _, a := range addrs {
		candidates = append(candidates, netip.PrefixFrom(a, a.BitLen()))
	}
	cidr := pick(g, candidates)
	b := &networkingv1.IPBlock{CIDR: cidr.String()}
	for range g.r.IntN(3) {
		inside := slices.DeleteFunc(slices.Clone(addrs), func(a netip.Addr) bool { return !cidr.Contains(a) })
		if len(inside) == 0 {
			break
		}
		a := pick(g, inside)
		bits := a.BitLen() - pick(g, []int{0, 0, 2, 4})
		if bits <= cidr.Bits() {
			break
		}
		b.Except = append(b.Except, netip.PrefixFrom(a, bits).Masked().String())
	}
	return b
}

// ports: absent (every port), or one to three of every kind.
func (g *generator) ports() []networkingv1.NetworkPolicyPort {
	if g.chance(35) {
		return nil
	}
	var out []networkingv1.NetworkPolicyPort
	for range 1 + g.r.IntN(3) {
		var pp networkingv1.NetworkPolicyPort
		if g.chance(70) {
			proto := pick(g, []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP})
			pp.Protocol = &proto
		}
		switch g.r.IntN(4) {
		case 0: // every port of the protocol
		case 1:
			n := intstr.FromInt32(pick(g, portNums))
			pp.Port = &n
		case 2:
			rg := pick(g, portRange)
			n, end := intstr.FromInt32(rg[0]), rg[1]
			pp.Port, pp.EndPort = &n, &end
		case 3:
			n := intstr.FromString(pick(g, portNames))
			pp.Port = &n
		}
		out = append(out, pp)
	}
	return out
}
