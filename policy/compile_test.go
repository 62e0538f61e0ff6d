package policy

import (
	"maps"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"regexp"
	"slices"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"
)

// setNameRE is what a set name must look like: a renderer appends two characters and uses
// it as an nftables set name.
var setNameRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,40}$`)

var (
	ip  = netip.MustParseAddr
	pfx = netip.MustParsePrefix
)

// guardSnapshot is the cluster of testdata/compile/tenants.yaml, compiled for node n1.
func guardSnapshot(t testing.TB) Snapshot {
	s, _ := loadFixture(t, "testdata/compile/tenants.yaml")
	return s
}

// endpointOf returns the rules of pod's endpoint on network n and the table they are in.
func endpointOf(t *testing.T, rs Ruleset, pod PodKey, n NetworkID) (EndpointRules, Table) {
	t.Helper()
	table := rs.Host
	if n != Primary {
		table = rs.Pods[pod]
	}
	for _, ep := range table.Endpoints {
		if ep.Pod == pod && ep.Network == n {
			return ep, table
		}
	}
	t.Fatalf("no rules for %s on network %q", pod, n)
	return EndpointRules{}, Table{}
}

func set(addrs []string, prefixes ...string) AddrSet {
	var s AddrSet
	for _, a := range addrs {
		s.Addrs = append(s.Addrs, ip(a))
	}
	for _, p := range prefixes {
		s.Prefixes = append(s.Prefixes, pfx(p))
	}
	return s
}

// withMACs adds to s the hardware addresses the tenants fixture gives its pods on
// shared/fabric: 0a:58:c0:a8:32:<n> for the pod at 192.168.50.<n>.
func withMACs(s AddrSet, ns ...byte) AddrSet {
	for _, n := range ns {
		s.MACs = append(s.MACs, MAC{0x0a, 0x58, 0xc0, 0xa8, 0x32, n})
	}
	return s
}

func TestCompileGuards(t *testing.T) {
	rs := Compile(guardSnapshot(t), "n1")
	for _, tc := range []struct {
		name     string
		pod      PodKey
		network  NetworkID
		universe AddrSet
		allowed  AddrSet
		noGuard  bool
	}{{
		// Red's block and its mutual peer blue's as prefixes, red's default-pool pod as an
		// address, the platform's pods and the hosts; not green, which red does not name.
		name: "tenant on primary", pod: PodKey{"red-a", "web"}, network: Primary,
		universe: set(nil, "10.244.0.0/16", "fd00:244::/56"),
		allowed:  set([]string{"10.244.0.1", "10.244.0.2", "10.244.2.7", "10.244.3.3", "10.244.3.4"}, "10.244.16.0/24", "10.244.32.0/24"),
	}, {
		name: "one-sided peer on primary", pod: PodKey{"green-a", "job"}, network: Primary,
		universe: set(nil, "10.244.0.0/16", "fd00:244::/56"),
		allowed:  set([]string{"10.244.0.1", "10.244.0.2", "10.244.3.3", "10.244.3.4"}, "10.244.48.0/24"),
	}, {
		name: "platform on primary", pod: PodKey{"kube-system", "dns"}, network: Primary, noGuard: true,
	}, {
		name: "tenant on a secondary: its own and mutual peers' pods, not the platform", pod: PodKey{"red-a", "web"}, network: "shared/fabric",
		universe: withMACs(set(nil, "192.168.50.0/24", "fd00:50::/64"), 3, 4, 5, 6, 9),
		allowed:  withMACs(set([]string{"192.168.50.4", "192.168.50.5", "192.168.50.6", "fd00:50::4", "fd00:50::5", "fd00:50::6"}), 4, 5, 6),
	}, {
		name: "one-sided peer on a secondary", pod: PodKey{"green-a", "job"}, network: "shared/fabric",
		universe: withMACs(set(nil, "192.168.50.0/24", "fd00:50::/64"), 3, 4, 5, 6, 9),
		allowed:  withMACs(set([]string{"192.168.50.9", "fd00:50::9"}), 9),
	}, {
		name: "platform on a secondary: the platform only", pod: PodKey{"kube-system", "dns"}, network: "shared/fabric",
		universe: withMACs(set(nil, "192.168.50.0/24", "fd00:50::/64"), 3, 4, 5, 6, 9),
		allowed:  withMACs(set([]string{"192.168.50.3", "192.168.50.30", "fd00:50::3"}), 3),
	}} {
		t.Run(tc.name, func(t *testing.T) {
			ep, table := endpointOf(t, rs, tc.pod, tc.network)
			if ep.Ingress.Guard != ep.Egress.Guard {
				t.Errorf("ingress guard %+v differs from egress guard %+v", ep.Ingress.Guard, ep.Egress.Guard)
			}
			g := ep.Ingress.Guard
			if tc.noGuard {
				if g != (Guard{}) {
					t.Errorf("guard = %+v, want none", g)
				}
				return
			}
			if got := table.Sets[g.Universe]; !reflect.DeepEqual(got, tc.universe) {
				t.Errorf("universe %s = %v, want %v", g.Universe, got, tc.universe)
			}
			if got := table.Sets[g.Allowed]; !reflect.DeepEqual(got, tc.allowed) {
				t.Errorf("allowed %s = %v, want %v", g.Allowed, got, tc.allowed)
			}
			if ep.Ingress.Isolated || ep.Egress.Isolated {
				t.Error("isolated without any policy")
			}
		})
	}
}

func TestCompileTables(t *testing.T) {
	rs := Compile(guardSnapshot(t), "n1")
	var hostIfs []string
	for _, ep := range rs.Host.Endpoints {
		hostIfs = append(hostIfs, ep.Interface)
	}
	if want := []string{"vethdns", "vethjob", "vethweb"}; !reflect.DeepEqual(hostIfs, want) {
		t.Errorf("host endpoints = %q, want %q (sorted, local pods only)", hostIfs, want)
	}
	var pods []PodKey
	for k, table := range rs.Pods {
		pods = append(pods, k)
		if len(table.Endpoints) != 1 || table.Endpoints[0].Interface != "net1" {
			t.Errorf("pod %s endpoints = %+v, want net1 only", k, table.Endpoints)
		}
	}
	slices.SortFunc(pods, comparePodKey)
	if want := []PodKey{{"green-a", "job"}, {"kube-system", "dns"}, {"red-a", "web"}}; !reflect.DeepEqual(pods, want) {
		t.Errorf("pod tables = %v, want %v", pods, want)
	}
	// Every set a table's endpoints name is in it, and no other.
	for name, table := range mapsWithHost(rs) {
		used := map[string]bool{}
		for _, ep := range table.Endpoints {
			for _, d := range []Direction{ep.Ingress, ep.Egress} {
				used[d.Guard.Universe], used[d.Guard.Allowed] = true, true
				for _, r := range d.Rules {
					used[r.Peer.Set] = true
				}
			}
		}
		delete(used, "")
		for s := range table.Sets {
			if !used[s] {
				t.Errorf("%s: set %s is not used", name, s)
			}
		}
		for s := range used {
			if _, ok := table.Sets[s]; !ok {
				t.Errorf("%s: set %s is missing", name, s)
			}
		}
	}
	if rs := Compile(guardSnapshot(t), ""); len(rs.Host.Endpoints) != 0 || len(rs.Pods) != 0 {
		t.Errorf("Compile for no node = %+v, want nothing", rs)
	}
}

func mapsWithHost(rs Ruleset) map[string]Table {
	out := map[string]Table{"host": rs.Host}
	for k, t := range rs.Pods {
		out[k.String()] = t
	}
	return out
}

func TestCompileDeterministic(t *testing.T) {
	s := policySnapshot(t)
	want := Compile(s, "n1")
	r := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		shuffled := shuffle(r, s)
		if got := Compile(shuffled, "n1"); !reflect.DeepEqual(got, want) {
			t.Fatalf("a shuffled snapshot compiles differently:\n got %+v\nwant %+v", got, want)
		}
	}
}

// shuffle returns s with every list in a random order; s itself is left as it is.
func shuffle(r *rand.Rand, s Snapshot) Snapshot {
	mix := func(n int, swap func(i, j int)) { r.Shuffle(n, swap) }
	s.Hosts = slices.Clone(s.Hosts)
	mix(len(s.Hosts), func(i, j int) { s.Hosts[i], s.Hosts[j] = s.Hosts[j], s.Hosts[i] })
	s.Tenants = slices.Clone(s.Tenants)
	for i := range s.Tenants {
		s.Tenants[i].Peers = slices.Clone(s.Tenants[i].Peers)
		mix(len(s.Tenants[i].Peers), func(a, b int) {
			s.Tenants[i].Peers[a], s.Tenants[i].Peers[b] = s.Tenants[i].Peers[b], s.Tenants[i].Peers[a]
		})
		s.Tenants[i].Blocks = slices.Clone(s.Tenants[i].Blocks)
		mix(len(s.Tenants[i].Blocks), func(a, b int) {
			s.Tenants[i].Blocks[a], s.Tenants[i].Blocks[b] = s.Tenants[i].Blocks[b], s.Tenants[i].Blocks[a]
		})
	}
	mix(len(s.Tenants), func(i, j int) { s.Tenants[i], s.Tenants[j] = s.Tenants[j], s.Tenants[i] })
	s.Namespaces = slices.Clone(s.Namespaces)
	mix(len(s.Namespaces), func(i, j int) { s.Namespaces[i], s.Namespaces[j] = s.Namespaces[j], s.Namespaces[i] })
	s.Networks = slices.Clone(s.Networks)
	mix(len(s.Networks), func(i, j int) { s.Networks[i], s.Networks[j] = s.Networks[j], s.Networks[i] })
	s.Pods = slices.Clone(s.Pods)
	for i := range s.Pods {
		p := &s.Pods[i]
		p.Endpoints = slices.Clone(p.Endpoints)
		mix(len(p.Endpoints), func(a, b int) { p.Endpoints[a], p.Endpoints[b] = p.Endpoints[b], p.Endpoints[a] })
		for j := range p.Endpoints {
			ips := slices.Clone(p.Endpoints[j].IPs)
			mix(len(ips), func(a, b int) { ips[a], ips[b] = ips[b], ips[a] })
			p.Endpoints[j].IPs = ips
		}
		p.Ports = slices.Clone(p.Ports)
		mix(len(p.Ports), func(a, b int) { p.Ports[a], p.Ports[b] = p.Ports[b], p.Ports[a] })
	}
	mix(len(s.Pods), func(i, j int) { s.Pods[i], s.Pods[j] = s.Pods[j], s.Pods[i] })
	s.Policies = slices.Clone(s.Policies)
	mix(len(s.Policies), func(i, j int) { s.Policies[i], s.Policies[j] = s.Policies[j], s.Policies[i] })
	return s
}

func TestCompileSetNamesStable(t *testing.T) {
	s := policySnapshot(t)
	before := Compile(s, "n1")
	// A new red pod on another node, selected by every policy's peers and reachable by red.
	// Its "http" port has a number other pods' have already: a new number would add a rule
	// for the destinations that have it.
	s.Pods = append(slices.Clone(s.Pods), Pod{
		PodKey: PodKey{"red-a", "new"}, Node: "n3", Tenant: "red",
		Labels:    map[string]string{"app": "client", "role": "db"},
		Ports:     []NamedPort{{Name: "http", Protocol: "TCP", Port: 80}, {Name: "sql", Protocol: "TCP", Port: 5432}},
		Endpoints: []Endpoint{{Network: Primary, Interface: "eth0", IPs: []netip.Addr{ip("10.244.9.9")}}, {Network: "red-a/data", Interface: "net1", IPs: []netip.Addr{ip("192.168.10.99")}}},
	})
	after := Compile(s, "n1")
	changed := 0
	for name, table := range mapsWithHost(before) {
		other := mapsWithHost(after)[name]
		if !reflect.DeepEqual(table.Endpoints, other.Endpoints) {
			t.Errorf("%s: the rules changed when a pod came:\n got %+v\nwant %+v", name, other.Endpoints, table.Endpoints)
		}
		if !reflect.DeepEqual(slices.Sorted(maps.Keys(table.Sets)), slices.Sorted(maps.Keys(other.Sets))) {
			t.Errorf("%s: the set names changed when a pod came", name)
		}
		for s := range table.Sets {
			if !reflect.DeepEqual(table.Sets[s], other.Sets[s]) {
				changed++
			}
		}
	}
	if changed == 0 {
		t.Error("no set gained the new pod")
	}
}

func TestSetNames(t *testing.T) {
	names := map[string]bool{
		setName(kindUniverse, ""): true, setName(kindUniverse, "a/b"): true,
		setName(kindReach, "", "red"): true, setName(kindReach, "a/b", "red"): true,
		setName(kindPeer, "NetworkPolicy", "ns", "p", "ingress", "0", "0", ""): true,
		setName(kindPeer, "NetworkPolicy", "ns", "p", "ingress", "0", "1", ""): true,
		// Parts are separated: moving a character from one part to the next is another name.
		setName(kindReach, "ab", "c"): true, setName(kindReach, "a", "bc"): true,
	}
	if len(names) != 8 {
		t.Errorf("names collide: %v", names)
	}
	for n := range names {
		if !setNameRE.MatchString(n) {
			t.Errorf("set name %q does not match %s", n, setNameRE)
		}
	}
}

func TestSetBuilder(t *testing.T) {
	var b setBuilder
	b.addPrefixes([]netip.Prefix{pfx("10.1.0.0/16"), pfx("10.0.0.0/8"), pfx("10.2.3.4/24"), pfx("192.168.0.0/24"), pfx("192.168.0.0/24"), {}})
	b.addAddrs([]netip.Addr{ip("10.9.9.9"), ip("192.168.1.1"), ip("::ffff:192.168.1.1"), ip("11.0.0.1"), ip("192.168.0.7"), {}})
	want := set([]string{"11.0.0.1", "192.168.1.1"}, "10.0.0.0/8", "192.168.0.0/24")
	if got := b.build(); !reflect.DeepEqual(got, want) {
		t.Errorf("build = %v, want %v", got, want)
	}
	if got := (&setBuilder{}).build(); !reflect.DeepEqual(got, AddrSet{}) {
		t.Errorf("empty build = %#v", got)
	}
}

// networkPolicy parses a NetworkPolicy written as YAML.
func networkPolicy(t *testing.T, doc string) Policy {
	t.Helper()
	var np networkingv1.NetworkPolicy
	if err := yaml.UnmarshalStrict([]byte(doc), &np); err != nil {
		t.Fatal(err)
	}
	p := FromNetworkPolicy(&np)
	if len(p.Problems) > 0 {
		t.Fatalf("policy %s/%s: %q", np.Namespace, np.Name, p.Problems)
	}
	return p
}

// TestCompileSharesSets checks that the same selection in policies of two tenants is one set.
func TestCompileSharesSets(t *testing.T) {
	s := guardSnapshot(t)
	for _, ns := range []string{"red-a", "green-a"} {
		s.Policies = append(s.Policies, networkPolicy(t, `
metadata: {namespace: `+ns+`, name: dns}
spec:
  podSelector: {}
  egress:
  - to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}, podSelector: {}}]
    ports: [{protocol: UDP, port: 53}]`))
	}
	s.Namespaces = slices.Clone(s.Namespaces)
	for i := range s.Namespaces {
		s.Namespaces[i].Labels = map[string]string{"kubernetes.io/metadata.name": s.Namespaces[i].Name}
	}
	rs := Compile(s, "n1")
	red, _ := endpointOf(t, rs, PodKey{"red-a", "web"}, Primary)
	green, _ := endpointOf(t, rs, PodKey{"green-a", "job"}, Primary)
	if len(red.Egress.Rules) != 1 || len(green.Egress.Rules) != 1 {
		t.Fatalf("egress rules: red %+v, green %+v", red.Egress.Rules, green.Egress.Rules)
	}
	if r, g := red.Egress.Rules[0], green.Egress.Rules[0]; r.Peer.Set == "" || r.Peer.Set != g.Peer.Set || r.Policy == g.Policy {
		t.Errorf("red's rule %+v and green's %+v should share their set and name their own policies", r, g)
	}
	if got, want := rs.Host.Sets[red.Egress.Rules[0].Peer.Set], set([]string{"10.244.3.3", "10.244.3.4"}); !reflect.DeepEqual(got, want) {
		t.Errorf("kube-system set = %v, want %v", got, want)
	}
}

// A platform pod on a secondary network no tenant's pod is on has no boundary: there is no
// one to keep out. Once a tenant's pod joins the network, the boundary is back.
func TestCompilePlatformOnlyNetwork(t *testing.T) {
	s := Snapshot{
		ClusterCIDRs: []netip.Prefix{pfx("10.244.0.0/16")},
		Namespaces:   []Namespace{{Name: "infra"}, {Name: "red-a", Tenant: "red"}},
		Tenants:      []Tenant{{Name: "red"}},
		Networks:     []Network{{ID: "infra/storage", Subnets: []netip.Prefix{pfx("192.168.80.0/24")}}},
		Pods: []Pod{{
			PodKey: PodKey{"infra", "backup"}, Node: "n1",
			Endpoints: []Endpoint{{Network: "infra/storage", Interface: "net1", IPs: []netip.Addr{ip("192.168.80.2")}}},
		}, {
			PodKey: PodKey{"infra", "store"}, Node: "n2",
			Endpoints: []Endpoint{{Network: "infra/storage", Interface: "net1", IPs: []netip.Addr{ip("192.168.80.3")}}},
		}},
	}
	ep, _ := endpointOf(t, Compile(s, "n1"), PodKey{"infra", "backup"}, "infra/storage")
	if ep.Ingress.Guard != (Guard{}) || ep.Egress.Guard != (Guard{}) {
		t.Errorf("platform-only network: guards %+v / %+v, want none", ep.Ingress.Guard, ep.Egress.Guard)
	}
	s.Pods = append(s.Pods, Pod{
		PodKey: PodKey{"red-a", "web"}, Node: "n2", Tenant: "red",
		Endpoints: []Endpoint{{Network: "infra/storage", Interface: "net1", IPs: []netip.Addr{ip("192.168.80.4")}}},
	})
	ep, table := endpointOf(t, Compile(s, "n1"), PodKey{"infra", "backup"}, "infra/storage")
	if ep.Ingress.Guard.Universe == "" {
		t.Fatal("a tenant's pod joined the network: want the platform pod guarded")
	}
	if allowed := table.Sets[ep.Ingress.Guard.Allowed]; slices.Contains(allowed.Addrs, ip("192.168.80.4")) {
		t.Errorf("the platform pod's boundary lets the tenant's pod in: %v", allowed)
	}
}

// A pod with two secondary networks is filed under both: filing it under the second must not
// cut the first network's list of pods short, which made pods vanish from it: a same-tenant
// pod fell outside red-a/web's boundary (red has more pods than the cut list, so the list is
// what the boundary is built from), and blue-a/other, whose static address is outside the
// network's subnets, fell out of the network's universe and got through. Which pod a cut
// list loses depends on the order of the snapshot's pods: every order is tried.
func TestCompileIndexesEveryNetworkOfAPod(t *testing.T) {
	pods := []Pod{{
		PodKey: PodKey{"red-a", "web"}, Node: "n1", Tenant: "red",
		Endpoints: []Endpoint{
			{Network: "shared/net-a", Interface: "net1", IPs: []netip.Addr{ip("192.168.1.1"), ip("fd00:1::1")}},
			{Network: "shared/net-b", Interface: "net2", IPs: []netip.Addr{ip("192.168.2.1"), ip("fd00:2::1")}},
		},
	}, {
		PodKey: PodKey{"red-a", "peer"}, Node: "n2", Tenant: "red",
		Endpoints: []Endpoint{{Network: "shared/net-a", Interface: "net1", IPs: []netip.Addr{ip("192.168.1.2"), ip("fd00:1::2")}}},
	}, {
		PodKey: PodKey{"red-a", "idle"}, Node: "n2", Tenant: "red",
		Endpoints: []Endpoint{{Network: Primary, Interface: "eth0", IPs: []netip.Addr{ip("10.244.0.3"), ip("fd00:10::3")}}},
	}, {
		PodKey: PodKey{"blue-a", "other"}, Node: "n2", Tenant: "blue",
		Endpoints: []Endpoint{{Network: "shared/net-a", Interface: "net1", IPs: []netip.Addr{ip("172.16.1.9"), ip("fd00:9::9")}}},
	}}
	for _, order := range permutations(len(pods)) {
		s := Snapshot{
			ClusterCIDRs: []netip.Prefix{pfx("10.244.0.0/16"), pfx("fd00:10::/48")},
			Namespaces:   []Namespace{{Name: "red-a", Tenant: "red"}, {Name: "blue-a", Tenant: "blue"}},
			Tenants:      []Tenant{{Name: "red"}, {Name: "blue"}},
			Networks: []Network{
				{ID: "shared/net-a", Subnets: []netip.Prefix{pfx("192.168.1.0/24"), pfx("fd00:1::/64")}},
				{ID: "shared/net-b", Subnets: []netip.Prefix{pfx("192.168.2.0/24"), pfx("fd00:2::/64")}},
			},
		}
		for _, i := range order {
			s.Pods = append(s.Pods, pods[i])
		}
		ep, table := endpointOf(t, Compile(s, "n1"), PodKey{"red-a", "web"}, "shared/net-a")
		for _, tc := range []struct {
			peer string
			want bool
		}{{"192.168.1.2", true}, {"fd00:1::2", true}, {"172.16.1.9", false}, {"fd00:9::9", false}} {
			for name, d := range map[string]Direction{"egress to": ep.Egress, "ingress from": ep.Ingress} {
				if got := table.Allows(d, Packet{Peer: ip(tc.peer), Protocol: "TCP", Port: 80}); got != tc.want {
					t.Errorf("pods in order %v: red-a/web %s %s on net-a: allowed = %v, want %v", order, name, tc.peer, got, tc.want)
				}
			}
		}
	}
}

// permutations lists every order of 0..n-1.
func permutations(n int) [][]int {
	if n == 0 {
		return [][]int{{}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := range n {
			q := append(append(slices.Clone(p[:i]), n-1), p[i:]...)
			out = append(out, q)
		}
	}
	return out
}

// Two tenants' own NADs may share one link layer (two macvlan NADs on one master, VFs of two
// pools on one PF), which Loom cannot tell: a pod of one tenant is outside the other's
// boundary on every secondary network, whichever NAD each is attached through.
func TestCompileGuardSpansSecondaryNetworks(t *testing.T) {
	acmeMAC, globexMAC := MAC{0x0a, 0x58, 0, 0, 1, 1}, MAC{0x0a, 0x58, 0, 0, 2, 1}
	s := Snapshot{
		ClusterCIDRs: []netip.Prefix{pfx("10.244.0.0/16")},
		Namespaces:   []Namespace{{Name: "acme", Tenant: "acme"}, {Name: "globex", Tenant: "globex"}},
		Tenants:      []Tenant{{Name: "acme"}, {Name: "globex"}},
		Networks: []Network{
			{ID: "acme/lan", Subnets: []netip.Prefix{pfx("192.168.90.0/24")}},
			{ID: "globex/lan", Subnets: []netip.Prefix{pfx("192.168.91.0/24")}},
		},
		Pods: []Pod{{
			PodKey: PodKey{"acme", "a1"}, Node: "n1", Tenant: "acme",
			Endpoints: []Endpoint{{Network: "acme/lan", Interface: "net1", MAC: acmeMAC,
				IPs: []netip.Addr{ip("192.168.90.2"), ip("fd00:90::2")}}},
		}, {
			PodKey: PodKey{"globex", "g1"}, Node: "n2", Tenant: "globex",
			Endpoints: []Endpoint{{Network: "globex/lan", Interface: "net1", MAC: globexMAC,
				IPs: []netip.Addr{ip("192.168.91.2"), ip("fd00:91::2")}}},
		}},
	}
	rs := Compile(s, "n1")
	ep, table := endpointOf(t, rs, PodKey{"acme", "a1"}, "acme/lan")
	for _, peer := range []string{"192.168.91.2", "fd00:91::2"} {
		if table.Allows(ep.Ingress, Packet{Peer: ip(peer), Protocol: "ICMP"}) || table.Allows(ep.Egress, Packet{Peer: ip(peer), Protocol: "ICMP"}) {
			t.Errorf("acme/a1 exchanges traffic with globex/g1's %s on another NAD", peer)
		}
	}
	links := rs.Pods[PodKey{"acme", "a1"}].Links
	if len(links) != 1 || links[0].Guard != ep.Ingress.Guard {
		t.Fatalf("link rules %+v, want one with the endpoint's guard %+v", links, ep.Ingress.Guard)
	}
	u, a := table.Sets[links[0].Guard.Universe], table.Sets[links[0].Guard.Allowed]
	if !slices.Contains(u.MACs, globexMAC) || slices.Contains(a.MACs, globexMAC) || !slices.Contains(a.MACs, acmeMAC) {
		t.Errorf("hardware addresses: universe %v, allowed %v; want globex's in the universe only and acme's allowed", u.MACs, a.MACs)
	}
}
