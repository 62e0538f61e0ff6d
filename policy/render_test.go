package policy

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func renderAddrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func renderPrefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func renderCIDR(s string, except ...string) Peer {
	return Peer{CIDR: netip.MustParsePrefix(s), Except: renderPrefixes(except...)}
}

// renderGuard is the boundary of tenant acme on the primary network.
var renderGuard = Guard{Universe: "u_primary", Allowed: "t_acme"}

// hostTable has a tenant pod behind its guard, a platform pod, and a pod whose policies
// isolate it in both directions with a rule of every shape.
func renderHostTable() Table {
	return Table{
		Sets: map[string]AddrSet{
			"u_primary": {Prefixes: renderPrefixes("10.244.0.0/16")},
			"t_acme":    {Addrs: renderAddrs("10.96.0.10"), Prefixes: renderPrefixes("10.244.0.0/26", "10.244.1.0/26", "10.244.7.0/26")},
			"p_allowdb_0": {
				Addrs: renderAddrs("10.244.1.7", "10.244.1.9", "10.244.7.3"),
			},
			"p_allowdb_1": {},
		},
		Endpoints: []EndpointRules{
			{
				Pod: PodKey{"acme", "web-0"}, Interface: "loom0a1b2c3d4e5",
				Ingress: Direction{Guard: renderGuard},
				Egress:  Direction{Guard: renderGuard},
			},
			{
				Pod: PodKey{"kube-system", "coredns-0"}, Interface: "loom1b2c3d4e5f6",
			},
			{
				Pod: PodKey{"acme", "db-0"}, Interface: "loom2c3d4e5f6a7",
				Ingress: Direction{Guard: renderGuard, Isolated: true, Rules: []Rule{
					{Peer: Peer{Any: true}, Ports: []Port{{Protocol: "TCP", Port: 5432}}, Policy: "acme/allow-db"},
					{Peer: Peer{Set: "p_allowdb_0"}, Policy: "acme/allow-db"},
					{Peer: renderCIDR("10.0.0.0/8", "10.1.0.0/16", "10.2.0.0/16"), Ports: []Port{
						{Protocol: "TCP", Port: 80}, {Protocol: "TCP", Port: 8000, EndPort: 8080},
					}, Policy: "acme/allow-db"},
					{Peer: Peer{Set: "p_allowdb_1"}, Ports: []Port{
						{Protocol: "UDP", Port: 53}, {Protocol: "SCTP", Port: 3868}, {Protocol: "TCP", Port: 0},
					}, Policy: "acme/allow-db"},
				}},
				Egress: Direction{Guard: renderGuard, Isolated: true, Rules: []Rule{
					{Peer: Peer{Any: true}, Ports: []Port{{Protocol: "UDP", Port: 53}, {Protocol: "TCP", Port: 53}}, Policy: "acme/dns"},
					{Peer: renderCIDR("192.168.10.0/24"), Policy: "acme/backup"},
				}},
			},
		},
	}
}

// podTable is a pod's secondary interface net1 behind its tenant's guard, isolated for
// ingress.
func renderPodTable() Table {
	return Table{
		Sets: map[string]AddrSet{
			"u_neta":      {Prefixes: renderPrefixes("192.168.100.0/24")},
			"t_acme_neta": {Prefixes: renderPrefixes("192.168.100.0/26")},
			"p_net1in_0":  {Addrs: renderAddrs("192.168.100.12")},
		},
		Endpoints: []EndpointRules{{
			Pod: PodKey{"acme", "db-0"}, Network: "acme/net-a", Interface: "net1",
			Ingress: Direction{Guard: Guard{Universe: "u_neta", Allowed: "t_acme_neta"}, Isolated: true, Rules: []Rule{
				{Peer: Peer{Set: "p_net1in_0"}, Ports: []Port{{Protocol: "TCP", Port: 5432}}, Policy: "acme/net1-in"},
			}},
			Egress: Direction{Guard: Guard{Universe: "u_neta", Allowed: "t_acme_neta"}},
		}},
	}
}

// edgeTable holds what rendering must narrow or repair: names nft cannot take, IPv6
// members, overlapping prefixes, a set named but missing, interface names no link can have,
// ports that cannot be rendered, a comment with a quote.
func renderEdgeTable() Table {
	long := strings.Repeat("x", 200)
	return Table{
		Sets: map[string]AddrSet{
			"dual": {
				Addrs:    renderAddrs("10.0.0.2", "fd00::2", "10.0.0.1", "10.0.0.2", "::ffff:10.0.0.3"),
				Prefixes: renderPrefixes("10.1.0.0/16", "10.1.2.0/24", "10.0.0.0/30", "fd00:1::/64", "fd00::/16"),
			},
			"1st": {Addrs: renderAddrs("10.9.0.1")},
		},
		Endpoints: []EndpointRules{
			{Interface: "", Ingress: Direction{Isolated: true}},
			{Interface: "much-too-long-name", Ingress: Direction{Isolated: true}},
			{Interface: "net.2", Ingress: Direction{Guard: Guard{Universe: "dual", Allowed: "missing"}, Isolated: true, Rules: []Rule{
				{Peer: Peer{Set: "dual"}, Ports: []Port{{Protocol: "ICMP", Port: 1}}, Policy: "p/unknown-protocol"},
				{Peer: Peer{Set: "dual"}, Ports: []Port{{Protocol: "TCP", Port: 90, EndPort: 80}}, Policy: "p/backwards-range"},
				{Peer: Peer{Set: "1st"}, Ports: []Port{
					{Port: 443}, {Protocol: "tcp", Port: 80, EndPort: 90}, {Protocol: "TCP", Port: 85, EndPort: 100},
					{Protocol: "TCP", Port: 101}, {Protocol: "TCP", Port: 200, EndPort: 100}, {Protocol: "GRE"},
				}, Policy: `p/"quoted"` + long},
				{Peer: renderCIDR("fd00::/8", "fd00:1::/32", "10.0.0.0/8", "fd00:1:2::/48"), Policy: "p/v6"},
				{Peer: renderCIDR("10.0.0.0/16", "10.0.0.0/8"), Policy: "p/excepted-away"},
				{Peer: Peer{}, Policy: "p/nobody"},
				{Peer: Peer{Set: "missing"}, Policy: "p/missing-set"},
			}}},
			{Interface: "net.2", Ingress: Direction{}},
			{Interface: "net_2", Egress: Direction{Isolated: true}},
		},
	}
}

func TestRenderGolden(t *testing.T) {
	for _, tc := range []struct {
		name  string
		table Table
		kind  TableKind
	}{
		{"host", renderHostTable(), HostTable},
		{"pod", renderPodTable(), PodTable},
		{"edge", renderEdgeTable(), PodTable},
		{"empty-host", Table{}, HostTable},
		{"empty-pod", Table{}, PodTable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Render(tc.table, tc.kind).String()
			assertGolden(t, filepath.Join("testdata", "render", tc.name+".nft"), []byte(got))
			if again := Render(tc.table, tc.kind); !again.Equal(Render(tc.table, tc.kind)) {
				t.Errorf("two renderings of one table differ")
			}
		})
	}
}

// TestRenderGoldenNftCheck has nft parse and check every golden file, in a network
// namespace of its own so that no table of the machine's is in the way.
func TestRenderGoldenNftCheck(t *testing.T) {
	nft := nftForTest(t)
	files, err := filepath.Glob(filepath.Join("testdata", "render", "*.nft"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, f := range files {
		if strings.HasPrefix(filepath.Base(f), "compiled-") {
			continue // several tables, checked one by one by TestRenderCompiledGolden
		}
		t.Run(filepath.Base(f), func(t *testing.T) {
			if out, err := exec.Command("unshare", "--net", nft, "-c", "-f", f).CombinedOutput(); err != nil {
				t.Errorf("nft -c -f %s: %v\n%s", f, err, out)
			}
		})
	}
}

func nftForTest(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: nft checks and writes tables through netlink")
	}
	nft, err := exec.LookPath("nft")
	if err != nil {
		t.Skip("needs the nft binary")
	}
	return nft
}

func TestRenderEndpointChains(t *testing.T) {
	host := Render(renderHostTable(), HostTable)
	var names []string
	for _, c := range host.Chains {
		names = append(names, c.Name)
	}
	want := []string{
		"eg_loom0a1b2c3d4e5", "eg_loom1b2c3d4e5f6", "eg_loom2c3d4e5f6a7", "forward",
		"in_loom0a1b2c3d4e5", "in_loom1b2c3d4e5f6", "in_loom2c3d4e5f6a7", "to_pod",
	}
	if !slices.Equal(names, want) {
		t.Errorf("host chains: got %v, want %v", names, want)
	}
	for _, c := range host.Chains {
		if strings.HasPrefix(c.Name, "eg_") && c.Rules[len(c.Rules)-1] != "goto to_pod" && c.Rules[len(c.Rules)-1] != "drop" {
			t.Errorf("chain %s ends in %q: an egress chain must end in goto to_pod or drop", c.Name, c.Rules[len(c.Rules)-1])
		}
	}
}

func TestNftIdentifier(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"loom0a1b2c3d4e5", "loom0a1b2c3d4e5"},
		{"net1", "net1"},
		{"a_b", "a_b"},
	} {
		if got := nftIdentifier(tc.in); got != tc.want {
			t.Errorf("nftIdentifier(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	seen := map[string]string{}
	for _, in := range []string{"a.b", "a-b", "a/b", "a_b", "a b", "loom.vxlan", "loom-vxlan"} {
		got := nftIdentifier(in)
		if strings.Trim(got, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != "" {
			t.Errorf("nftIdentifier(%q) = %q: not an identifier", in, got)
		}
		if other, dup := seen[got]; dup {
			t.Errorf("nftIdentifier(%q) = nftIdentifier(%q) = %q", in, other, got)
		}
		seen[got] = in
	}
	if a, b := nftSetBase("1x"), nftSetBase("s1x"); a == b || a[0] != 's' {
		t.Errorf("nftSetBase(1x) = %q, nftSetBase(s1x) = %q: want distinct names starting with a letter", a, b)
	}
}

func TestNftPortMatches(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ports []Port
		want  []string
	}{
		{"none", nil, []string{""}},
		{"one", []Port{{Protocol: "TCP", Port: 80}}, []string{"meta l4proto tcp th dport 80"}},
		{"default protocol", []Port{{Port: 80}}, []string{"meta l4proto tcp th dport 80"}},
		{"range", []Port{{Protocol: "UDP", Port: 1000, EndPort: 2000}}, []string{"meta l4proto udp th dport { 1000-2000 }"}},
		{"merged", []Port{{Protocol: "TCP", Port: 81}, {Protocol: "TCP", Port: 80}, {Protocol: "TCP", Port: 82, EndPort: 90}, {Protocol: "TCP", Port: 95}},
			[]string{"meta l4proto tcp th dport { 80-90, 95 }"}},
		{"whole protocol wins", []Port{{Protocol: "SCTP", Port: 9}, {Protocol: "SCTP"}}, []string{"meta l4proto sctp"}},
		{"top of the range", []Port{{Protocol: "TCP", Port: 65535}, {Protocol: "TCP", Port: 65000, EndPort: 65535}},
			[]string{"meta l4proto tcp th dport { 65000-65535 }"}},
		{"order", []Port{{Protocol: "SCTP", Port: 1}, {Protocol: "UDP", Port: 2}, {Protocol: "TCP", Port: 3}},
			[]string{"meta l4proto tcp th dport 3", "meta l4proto udp th dport 2", "meta l4proto sctp th dport 1"}},
		{"unusable ones left out", []Port{{Protocol: "ICMP", Port: 1}, {Protocol: "UDP", Port: 9, EndPort: 8}, {Protocol: "UDP", Port: 7}},
			[]string{"meta l4proto udp th dport 7"}},
		{"none usable", []Port{{Protocol: "ICMP", Port: 1}, {Protocol: "TCP", Port: 9, EndPort: 8}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := nftPortMatches(tc.ports)
			if !slices.Equal(got, tc.want) || ok != (tc.want != nil) {
				t.Errorf("got %q, %v; want %q", got, ok, tc.want)
			}
		})
	}
}

func TestRuleComment(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"ns/name", `comment "ns/name"`},
		{"a\"b\\c\nd", `comment "a_b_c_d"`},
		{"é", `comment "__"`},
		{strings.Repeat("a", 300), `comment "` + strings.Repeat("a", 128) + `"`},
	} {
		if got := ruleComment(tc.in); got != tc.want {
			t.Errorf("ruleComment(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestRenderNarrowsNeverWidens(t *testing.T) {
	// A rule whose ports or peer cannot be rendered disappears: the endpoint stays isolated
	// and allows less, never every port or every peer.
	table := Table{Endpoints: []EndpointRules{{Interface: "net1", Ingress: Direction{Isolated: true, Rules: []Rule{
		{Peer: Peer{Any: true}, Ports: []Port{{Protocol: "ICMP"}}},
		{Peer: Peer{}, Ports: []Port{{Protocol: "TCP", Port: 80}}},
		{Peer: renderCIDR("10.0.0.0/24", "10.0.0.0/16")},
	}}}}}
	got := Render(table, PodTable)
	for _, c := range got.Chains {
		if c.Name == "in_net1" && !slices.Equal(c.Rules, []string{"drop"}) {
			t.Errorf("in_net1: got %q, want just drop", c.Rules)
		}
	}
}

// Connection tracking is turned on only where some endpoint has rules that drop.
func TestRenderTracksOnlyWhenSomethingDrops(t *testing.T) {
	open := Table{Endpoints: []EndpointRules{{Pod: PodKey{"infra", "dns"}, Interface: "loom00000000001"}}}
	guarded := Table{
		Sets: map[string]AddrSet{"u": {Prefixes: renderPrefixes("10.244.0.0/16")}, "a": {}},
		Endpoints: []EndpointRules{{Pod: PodKey{"ns-a", "web"}, Interface: "loom00000000002",
			Ingress: Direction{Guard: Guard{Universe: "u", Allowed: "a"}}, Egress: Direction{Guard: Guard{Universe: "u", Allowed: "a"}}}},
	}
	isolated := Table{Endpoints: []EndpointRules{{Pod: PodKey{"infra", "db"}, Interface: "net1", Ingress: Direction{Isolated: true}}}}
	for _, tc := range []struct {
		name string
		t    Table
		kind TableKind
		want bool
	}{{"platform only", open, HostTable, false}, {"a guarded pod", guarded, HostTable, true}, {"an isolated pod", isolated, PodTable, true}} {
		got := strings.Contains(Render(tc.t, tc.kind).String(), "ct state")
		if got != tc.want {
			t.Errorf("%s: connection tracking %v, want %v", tc.name, got, tc.want)
		}
	}
}
