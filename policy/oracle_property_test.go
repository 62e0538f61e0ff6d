package policy_test

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/loom-cni/loom/policy"
	"github.com/loom-cni/loom/policy/oracle"
)

var (
	oracleSeed     = flag.Uint64("oracle.seed", 0, "TestCompileMatchesOracle: check the cluster of this seed only")
	oracleClusters = flag.Int("oracle.clusters", 300, "TestCompileMatchesOracle: how many random clusters to check")
)

// TestCompileMatchesOracle compiles random clusters and checks, for every ordered pair of
// pods on every network they share, in both address families, for TCP, UDP and SCTP on the
// ports the policies and pods name and one that none names, and for ICMP, that the compiled
// rules of both nodes decide what the oracle, written from the Kubernetes documentation and
// the README, decides.
func TestCompileMatchesOracle(t *testing.T) {
	seeds := make([]uint64, 0, *oracleClusters)
	if *oracleSeed != 0 {
		seeds = append(seeds, *oracleSeed)
	} else {
		n := *oracleClusters
		if testing.Short() {
			n /= 5
		}
		for i := range n {
			seeds = append(seeds, uint64(i+1))
		}
	}
	start := time.Now()
	var total tally
	var failed []uint64
	for _, seed := range seeds {
		s, err := genCluster(rand.New(rand.NewPCG(seed, 0x6c6f6f6d)))
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		n, m := compareWithOracle(s)
		total.checked, total.allowed = total.checked+n.checked, total.allowed+n.allowed
		if m == nil {
			continue
		}
		if failed = append(failed, seed); len(failed) <= 3 {
			t.Errorf("seed %d (replay with -run %s -oracle.seed %d):\n%s", seed, t.Name(), seed, m.report(s))
		}
	}
	if len(failed) > 0 {
		t.Errorf("the compiled rules and the oracle disagree in %d of %d clusters, seeds %v", len(failed), len(seeds), failed)
	}
	t.Logf("%d clusters, %d connections checked (%d allowed) in %v", len(seeds), total.checked, total.allowed,
		time.Since(start).Round(time.Millisecond))
	// The clusters must put both verdicts to the test, or agreeing proves little.
	if len(seeds) > 20 && (total.allowed < total.checked/10 || total.allowed > total.checked*9/10) {
		t.Errorf("the oracle allows %d of %d connections: the clusters do not test both verdicts", total.allowed, total.checked)
	}
}

// mismatch is a connection on which the compiled rules and the oracle disagree.
type mismatch struct {
	conn             oracle.Connection
	want             oracle.Verdict
	egress, ingress  bool   // what the source's egress and the destination's ingress rules say
	missing          string // an endpoint Compile gave no rules for
	sourceIP, destIP netip.Addr
}

func (m *mismatch) String() string {
	if m.missing != "" {
		return fmt.Sprintf("%s: no compiled rules for %s; the oracle says allowed=%v (%s)", m.conn, m.missing, m.want.Allowed, m.want.Reason)
	}
	return fmt.Sprintf("%s (%s → %s): oracle allowed=%v (%s); compiled: source egress allows=%v, destination ingress allows=%v",
		m.conn, m.sourceIP, m.destIP, m.want.Allowed, m.want.Reason, m.egress, m.ingress)
}

// probe is a protocol and port a connection is tried on.
type probe struct {
	protocol string
	port     uint16
}

// tally counts the connections checked and those the oracle allows.
type tally struct{ checked, allowed int }

// compareWithOracle checks every connection of s; it returns what it checked and the first
// connection on which the compiled rules and the oracle disagree.
func compareWithOracle(s policy.Snapshot) (tally, *mismatch) {
	probes := probesOf(s)
	var n tally
	c := newCompiled(s)
	for _, src := range s.Pods {
		for _, dst := range s.Pods {
			if src.PodKey == dst.PodKey {
				continue
			}
			for _, ep := range src.Endpoints {
				if !slices.ContainsFunc(dst.Endpoints, func(e policy.Endpoint) bool { return e.Network == ep.Network }) {
					continue
				}
				for _, f := range []oracle.Family{4, 6} {
					for _, pr := range probes {
						conn := oracle.Connection{From: src.PodKey, To: dst.PodKey, Network: ep.Network, Family: f, Protocol: pr.protocol, Port: pr.port}
						m, want, tried := c.check(conn)
						if !tried {
							break // a pod has no address of the family there
						}
						n.checked++
						if want.Allowed {
							n.allowed++
						}
						if m != nil {
							return n, m
						}
					}
				}
			}
		}
	}
	return n, nil
}

// compiled answers for the rules Compile gives each node of a snapshot, compiled once.
type compiled struct {
	s     policy.Snapshot
	nodes map[string]policy.Ruleset
}

func newCompiled(s policy.Snapshot) *compiled {
	return &compiled{s: s, nodes: map[string]policy.Ruleset{}}
}

func (c *compiled) ruleset(node string) policy.Ruleset {
	rs, ok := c.nodes[node]
	if !ok {
		rs = policy.Compile(c.s, node)
		c.nodes[node] = rs
	}
	return rs
}

// end is one end of a connection: its address, and the rules its node compiled for it.
type end struct {
	ip       netip.Addr
	table    policy.Table
	rules    policy.EndpointRules
	compiled bool // Compile gave the endpoint rules
}

// end returns pod k's end of a connection on network n in family f; false when the pod has
// no address of the family there.
func (c *compiled) end(k policy.PodKey, n policy.NetworkID, f oracle.Family) (end, bool) {
	p := c.s.Pods[slices.IndexFunc(c.s.Pods, func(p policy.Pod) bool { return p.PodKey == k })]
	ep := p.Endpoints[slices.IndexFunc(p.Endpoints, func(e policy.Endpoint) bool { return e.Network == n })]
	i := slices.IndexFunc(ep.IPs, func(a netip.Addr) bool { return (f == 4) == a.Is4() })
	if i < 0 {
		return end{}, false
	}
	rs := c.ruleset(p.Node)
	e := end{ip: ep.IPs[i], table: rs.Host}
	iface := ep.HostInterface
	if n != policy.Primary {
		e.table, iface = rs.Pods[k], ep.Interface
	}
	e.rules, e.compiled = e.table.Endpoint(iface)
	e.compiled = e.compiled && e.rules.Pod == k
	return e, true
}

// check compares one connection; tried is false when one of the pods has no address of the
// family on the network.
func (c *compiled) check(conn oracle.Connection) (m *mismatch, want oracle.Verdict, tried bool) {
	src, ok := c.end(conn.From, conn.Network, conn.Family)
	if !ok {
		return nil, want, false
	}
	dst, ok := c.end(conn.To, conn.Network, conn.Family)
	if !ok {
		return nil, want, false
	}
	want = oracle.Decide(&c.s, conn)
	m = &mismatch{conn: conn, want: want, sourceIP: src.ip, destIP: dst.ip}
	switch {
	case !src.compiled:
		m.missing = conn.From.String()
		return m, want, true
	case !dst.compiled:
		m.missing = conn.To.String()
		return m, want, true
	}
	m.egress = src.table.Allows(src.rules.Egress, policy.Packet{Peer: dst.ip, Protocol: conn.Protocol, Port: conn.Port})
	m.ingress = dst.table.Allows(dst.rules.Ingress, policy.Packet{Peer: src.ip, Protocol: conn.Protocol, Port: conn.Port})
	if (m.egress && m.ingress) == want.Allowed {
		return nil, want, true
	}
	return m, want, true
}

// probesOf lists what to try: TCP, UDP and SCTP on every port number a policy or a pod's
// named port names, the edges of every range, and one port that none names; and ICMP.
func probesOf(s policy.Snapshot) []probe {
	var nums []uint16
	named := func(n uint16) bool { return slices.Contains(nums, n) }
	for _, p := range s.Pods {
		for _, np := range p.Ports {
			nums = append(nums, np.Port)
		}
	}
	for _, pol := range s.Policies {
		var ports []networkingv1.NetworkPolicyPort
		for _, r := range pol.Spec.Ingress {
			ports = append(ports, r.Ports...)
		}
		for _, r := range pol.Spec.Egress {
			ports = append(ports, r.Ports...)
		}
		for _, pp := range ports {
			if pp.Port == nil || pp.Port.Type == intstr.String {
				continue
			}
			nums = append(nums, uint16(pp.Port.IntVal))
			if pp.EndPort != nil {
				nums = append(nums, uint16(pp.Port.IntVal-1), uint16(*pp.EndPort), uint16(*pp.EndPort+1), uint16((pp.Port.IntVal+*pp.EndPort)/2))
			}
		}
	}
	unnamed := uint16(1)
	for named(unnamed) || slices.ContainsFunc(portRange, func(r [2]int32) bool { return int32(unnamed) >= r[0] && int32(unnamed) <= r[1] }) {
		unnamed++
	}
	nums = append(nums, unnamed)
	slices.Sort(nums)
	nums = slices.Compact(nums)
	out := []probe{{protocol: "ICMP"}}
	for _, proto := range []string{"TCP", "UDP", "SCTP"} {
		for _, n := range nums {
			out = append(out, probe{protocol: proto, port: n})
		}
	}
	return out
}

// report shrinks the cluster to what the mismatch still needs and prints it.
func (m *mismatch) report(s policy.Snapshot) string {
	s, m = shrink(s, m)
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n", m)
	fmt.Fprintf(&b, "cluster CIDRs %v, hosts %v\n", s.ClusterCIDRs, s.Hosts)
	for _, t := range s.Tenants {
		fmt.Fprintf(&b, "tenant %s: peers %v, blocks %v\n", t.Name, t.Peers, t.Blocks)
	}
	for _, ns := range s.Namespaces {
		fmt.Fprintf(&b, "namespace %s: tenant %q, labels %v\n", ns.Name, ns.Tenant, ns.Labels)
	}
	for _, n := range s.Networks {
		fmt.Fprintf(&b, "network %s: subnets %v\n", n.ID, n.Subnets)
	}
	for _, p := range s.Pods {
		fmt.Fprintf(&b, "pod %s on %s: tenant %q, labels %v, ports %v\n", p.PodKey, p.Node, p.Tenant, p.Labels, p.Ports)
		for _, ep := range p.Endpoints {
			fmt.Fprintf(&b, "    %q %s/%s %v\n", ep.Network, ep.Interface, ep.HostInterface, ep.IPs)
		}
	}
	for _, pol := range s.Policies {
		spec, _ := json.Marshal(pol.Spec)
		fmt.Fprintf(&b, "%s %s/%s on %q: %s\n", pol.Kind, pol.Namespace, pol.Name, pol.Networks, spec)
	}
	return b.String()
}

// shrink removes from s, one at a time, whatever the mismatch survives without: policies and
// their rules, peers, ports and excepts, other pods, endpoints on other networks, tenants'
// peers, empty namespaces and unused networks.
// Pods keep their order: what Compile does may depend on it.
func shrink(s policy.Snapshot, m *mismatch) (policy.Snapshot, *mismatch) {
	try := func(t policy.Snapshot) bool {
		if got, _, _ := newCompiled(t).check(m.conn); got != nil {
			s, m = t, got
			return true
		}
		return false
	}
	for changed := true; changed; {
		changed = false
		for i := range s.Policies {
			t := s
			t.Policies = slices.Delete(slices.Clone(s.Policies), i, i+1)
			if changed = try(t); changed {
				break
			}
		}
		for i, pol := range s.Policies {
			for _, spec := range smallerSpecs(pol.Spec) {
				if changed {
					break
				}
				t := s
				t.Policies = slices.Clone(s.Policies)
				t.Policies[i] = rebuild(pol, spec)
				changed = try(t)
			}
		}
		for i, p := range s.Pods {
			if changed || p.PodKey == m.conn.From || p.PodKey == m.conn.To {
				continue
			}
			t := s
			t.Pods = slices.Delete(slices.Clone(s.Pods), i, i+1)
			changed = try(t)
		}
		for i := range s.Pods {
			for j := range s.Pods[i].Endpoints {
				if changed || s.Pods[i].Endpoints[j].Network == m.conn.Network {
					continue
				}
				t := s
				t.Pods = slices.Clone(s.Pods)
				t.Pods[i].Endpoints = slices.Delete(slices.Clone(s.Pods[i].Endpoints), j, j+1)
				changed = try(t)
			}
		}
		for i := range s.Tenants {
			for j := range s.Tenants[i].Peers {
				if changed {
					continue
				}
				t := s
				t.Tenants = slices.Clone(s.Tenants)
				t.Tenants[i].Peers = slices.Delete(slices.Clone(s.Tenants[i].Peers), j, j+1)
				changed = try(t)
			}
		}
		for i, ns := range s.Namespaces {
			if changed || slices.ContainsFunc(s.Pods, func(p policy.Pod) bool { return p.Namespace == ns.Name }) {
				continue
			}
			t := s
			t.Namespaces = slices.Delete(slices.Clone(s.Namespaces), i, i+1)
			changed = try(t)
		}
		for i, n := range s.Networks {
			if changed || n.ID == m.conn.Network {
				continue
			}
			t := s
			t.Networks = slices.Delete(slices.Clone(s.Networks), i, i+1)
			changed = try(t)
		}
	}
	return s, m
}

// smallerSpecs lists the specs that spec is with one rule, peer, port or except less: each
// is smaller, so that shrinking ends.
func smallerSpecs(spec networkingv1.NetworkPolicySpec) []networkingv1.NetworkPolicySpec {
	var out []networkingv1.NetworkPolicySpec
	variant := func(change func(s *networkingv1.NetworkPolicySpec)) {
		c := spec.DeepCopy()
		change(c)
		out = append(out, *c)
	}
	for i, r := range spec.Ingress {
		variant(func(s *networkingv1.NetworkPolicySpec) { s.Ingress = slices.Delete(s.Ingress, i, i+1) })
		for j := range r.From {
			variant(func(s *networkingv1.NetworkPolicySpec) { s.Ingress[i].From = slices.Delete(s.Ingress[i].From, j, j+1) })
			if b := r.From[j].IPBlock; b != nil && len(b.Except) > 0 {
				variant(func(s *networkingv1.NetworkPolicySpec) { dropExcept(s.Ingress[i].From[j].IPBlock) })
			}
		}
		for j := range r.Ports {
			variant(func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress[i].Ports = slices.Delete(s.Ingress[i].Ports, j, j+1)
			})
		}
	}
	for i, r := range spec.Egress {
		variant(func(s *networkingv1.NetworkPolicySpec) { s.Egress = slices.Delete(s.Egress, i, i+1) })
		for j := range r.To {
			variant(func(s *networkingv1.NetworkPolicySpec) { s.Egress[i].To = slices.Delete(s.Egress[i].To, j, j+1) })
			if b := r.To[j].IPBlock; b != nil && len(b.Except) > 0 {
				variant(func(s *networkingv1.NetworkPolicySpec) { dropExcept(s.Egress[i].To[j].IPBlock) })
			}
		}
		for j := range r.Ports {
			variant(func(s *networkingv1.NetworkPolicySpec) { s.Egress[i].Ports = slices.Delete(s.Egress[i].Ports, j, j+1) })
		}
	}
	return out
}

// dropExcept drops the last except of b.
func dropExcept(b *networkingv1.IPBlock) { b.Except = b.Except[:len(b.Except)-1] }

// rebuild is pol with another spec, read again as Loom reads it.
func rebuild(pol policy.Policy, spec networkingv1.NetworkPolicySpec) policy.Policy {
	if pol.Kind == policy.KindNetworkPolicy {
		return policy.FromNetworkPolicy(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: pol.Namespace, Name: pol.Name}, Spec: spec})
	}
	var networks []string
	for _, n := range pol.Networks {
		networks = append(networks, string(n))
	}
	return multiNetworkPolicy(pol.Namespace, pol.Name, strings.Join(networks, ","), spec)
}
