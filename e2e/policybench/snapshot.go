package main

// The cluster both benchmarks enforce policy for is made up, not watched: a policy.Snapshot
// as the engine's Source would hand it over, large enough for the targets.
//
// Address plan, inside the cluster CIDR 10.0.0.0/8:
//
//	10.0.0.0/24     the nodes' own addresses (VTEPs), Snapshot.Hosts
//	10.64.0.0/10    tenant blocks: a /26 for each tenant with an even index
//	10.128.0.0/9    the default pool, which tenants without blocks draw from in turn
//
// Tenant i runs in namespace t<i>-app and names tenant i^1 as its peer, so pairs of tenants
// reach each other and no one else. Pod k of the cluster belongs to tenant k mod tenants and
// runs on node (tenant + its number in the tenant) mod nodes: a tenant's pods are spread
// over consecutive nodes and every node runs pods of many tenants. Node 0 is the bench node,
// the one whose rules are compiled, applied and measured: it carries its share of the
// cluster's pods besides the pods the benchmarks add.

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/loom-cni/loom/fabric/podnet"
	"github.com/loom-cni/loom/policy"
)

// benchNode is the node whose rules the benchmarks compile and apply.
const benchNode = "bench-node"

var (
	clusterCIDR = netip.MustParsePrefix("10.0.0.0/8")
	hostRange   = netip.MustParsePrefix("10.0.0.0/24")
	blockRange  = netip.MustParsePrefix("10.64.0.0/10")
	defaultPool = netip.MustParsePrefix("10.128.0.0/9")
)

// blockBits is the prefix length of a tenant's block.
const blockBits = 26

// Slots are positions in a tenant's block. The cluster's own pods take the first ones; the
// benchmarks' pods take theirs from firstBenchSlot on, so they never collide.
const (
	maxPodsPerTenant = 48
	firstBenchSlot   = 50
	lastSlot         = 61 // the block's last addresses stay unused
)

// shape is the size of the made-up cluster.
type shape struct {
	tenants int
	pods    int
	nodes   int
}

func (s shape) validate() error {
	switch {
	case s.tenants < 4 || s.pods < 1 || s.nodes < 1:
		return fmt.Errorf("cluster of %d tenants, %d pods, %d nodes: want at least 4 tenants, 1 pod and 1 node", s.tenants, s.pods, s.nodes)
	case (s.pods+s.tenants-1)/s.tenants > maxPodsPerTenant:
		return fmt.Errorf("%d pods in %d tenants: at most %d pods per tenant fit a tenant's /%d", s.pods, s.tenants, maxPodsPerTenant, blockBits)
	case (s.tenants+1)/2 > 1<<(blockBits-blockRange.Bits()):
		return fmt.Errorf("%d tenants: more blocks than %s holds", s.tenants, blockRange)
	case s.pods+1000 > 1<<(32-defaultPool.Bits())-2:
		return fmt.Errorf("%d pods: more than the default pool %s holds", s.pods, defaultPool)
	case s.nodes > 1<<(32-hostRange.Bits())-2:
		return fmt.Errorf("%d nodes: more than %s holds", s.nodes, hostRange)
	}
	return nil
}

// cluster is a made-up cluster: the snapshot and what adding pods to it needs.
type cluster struct {
	shape
	snap policy.Snapshot
	// nextDefault is the default pool's next free address.
	nextDefault netip.Addr
}

// synthesize makes the cluster of shape s: its tenants, their namespaces and NetworkPolicies,
// and its pods on the primary network. The result depends on s alone.
func synthesize(s shape) (*cluster, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	c := &cluster{shape: s, nextDefault: defaultPool.Addr().Next()}
	c.snap.ClusterCIDRs = []netip.Prefix{clusterCIDR}
	for n := range s.nodes {
		c.snap.Hosts = append(c.snap.Hosts, offset(hostRange.Addr(), 1+n))
	}
	c.snap.Namespaces = append(c.snap.Namespaces, policy.Namespace{Name: "kube-system",
		Labels: map[string]string{"kubernetes.io/metadata.name": "kube-system"}})
	for t := range s.tenants {
		pt := policy.Tenant{Name: tenantName(t), Peers: []string{tenantName(t ^ 1)}}
		if b, ok := tenantBlock(t); ok {
			pt.Blocks = []netip.Prefix{b}
		}
		c.snap.Tenants = append(c.snap.Tenants, pt)
		ns := tenantNamespace(t)
		c.snap.Namespaces = append(c.snap.Namespaces, policy.Namespace{Name: ns, Tenant: pt.Name,
			Labels: map[string]string{"kubernetes.io/metadata.name": ns}})
		c.snap.Policies = append(c.snap.Policies, tenantPolicy(ns))
	}
	for k := range s.pods {
		t, slot := k%s.tenants, k/s.tenants
		app := "web"
		if slot%2 == 1 {
			app = "client"
		}
		c.snap.Pods = append(c.snap.Pods, c.newPod(t, slot, fmt.Sprintf("pod-%d", slot), nodeName((t+slot)%s.nodes), map[string]string{"app": app}))
	}
	return c, nil
}

// newPod returns a pod of tenant t on node with its primary endpoint: at slot of the
// tenant's block if it has one, else at the default pool's next address. Its host
// interface is named as Loom names it, after its container ID.
func (c *cluster) newPod(t, slot int, name, node string, labels map[string]string) policy.Pod {
	key := policy.PodKey{Namespace: tenantNamespace(t), Name: name}
	var ip netip.Addr
	if b, ok := tenantBlock(t); ok {
		ip = offset(b.Addr(), 1+slot)
	} else {
		ip = c.nextDefault
		c.nextDefault = c.nextDefault.Next()
	}
	return policy.Pod{
		PodKey: key,
		Node:   node,
		Labels: labels,
		Tenant: tenantName(t),
		Endpoints: []policy.Endpoint{{
			Network:       policy.Primary,
			Interface:     "eth0",
			HostInterface: podnet.HostVethName(containerID(key), "eth0"),
			IPs:           []netip.Addr{ip},
		}},
	}
}

// localPods returns the pods of the snapshot on node as their ADDs registered them.
func (c *cluster) localPods(node string) []policy.LocalPod {
	var out []policy.LocalPod
	for _, p := range c.snap.Pods {
		if p.Node == node {
			out = append(out, policy.LocalPod{ContainerID: containerID(p.PodKey), Pod: p})
		}
	}
	return out
}

// extraPod is the i-th pod the apply benchmark adds on the bench node: each in another
// tenant, alternately with and without a block, and by twos selected by its namespace's
// policy and a peer of it. The default pool's addresses it takes are never
// given back, so no two extra pods share one.
func (c *cluster) extraPod(i int) policy.LocalPod {
	t := (i * 7) % c.tenants
	app := "web"
	if (i/2)%2 == 1 {
		app = "client"
	}
	p := c.newPod(t, firstBenchSlot+2+i%(lastSlot-firstBenchSlot-1), fmt.Sprintf("extra-%d", i), benchNode, map[string]string{"app": app})
	return policy.LocalPod{ContainerID: containerID(p.PodKey), Pod: p}
}

// tenantPolicy is the NetworkPolicy of every tenant namespace: its web pods take TCP 80-90
// from the namespace's client pods and TCP 443 from an office range, less one subnet.
func tenantPolicy(ns string) policy.Policy {
	tcp := corev1.ProtocolTCP
	port80, port443, end := intstr.FromInt32(80), intstr.FromInt32(443), int32(90)
	return policy.FromNetworkPolicy(&networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port80, EndPort: &end}},
			}, {
				From:  []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "192.168.0.0/16", Except: []string{"192.168.1.0/24"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port443}},
			}},
		},
	})
}

func tenantName(t int) string      { return fmt.Sprintf("t%04d", t) }
func tenantNamespace(t int) string { return tenantName(t) + "-app" }

func nodeName(n int) string {
	if n == 0 {
		return benchNode
	}
	return fmt.Sprintf("node-%02d", n)
}

// tenantBlock is tenant t's block on the primary network; tenants with an odd index have
// none and draw from the default pool.
func tenantBlock(t int) (netip.Prefix, bool) {
	if t%2 == 1 {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(offset(blockRange.Addr(), (t/2)<<(32-blockBits)), blockBits), true
}

// containerID is the made-up container ID of a pod, which names its host interface.
func containerID(k policy.PodKey) string { return "policybench-" + k.Namespace + "-" + k.Name }

// offset returns the IPv4 address n after a.
func offset(a netip.Addr, n int) netip.Addr {
	b := a.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
