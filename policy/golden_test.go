package policy

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// fixture is a compile test's input: a snapshot with its policies written as the Kubernetes
// objects they come from, and the node to compile for.
type fixture struct {
	Node         string
	ClusterCIDRs []netip.Prefix
	Hosts        []netip.Addr
	Tenants      []Tenant
	Namespaces   []Namespace
	Networks     []Network
	Pods         []Pod
	Policies     []json.RawMessage
}

func loadFixture(t testing.TB, path string) (Snapshot, string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var fx fixture
	if err := yaml.UnmarshalStrict(data, &fx); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	s := Snapshot{ClusterCIDRs: fx.ClusterCIDRs, Hosts: fx.Hosts, Tenants: fx.Tenants, Namespaces: fx.Namespaces,
		Networks: fx.Networks, Pods: fx.Pods}
	for i, raw := range fx.Policies {
		var kind struct{ Kind string }
		if err := json.Unmarshal(raw, &kind); err != nil {
			t.Fatalf("%s: policies[%d]: %v", path, i, err)
		}
		var p Policy
		switch PolicyKind(kind.Kind) {
		case KindNetworkPolicy:
			var np networkingv1.NetworkPolicy
			if err := json.Unmarshal(raw, &np); err != nil {
				t.Fatalf("%s: policies[%d]: %v", path, i, err)
			}
			p = FromNetworkPolicy(&np)
		case KindMultiNetworkPolicy:
			p = ParseMultiNetworkPolicy(raw)
		default:
			t.Fatalf("%s: policies[%d]: kind %q", path, i, kind.Kind)
		}
		if len(p.Problems) > 0 {
			t.Fatalf("%s: policies[%d]: %q", path, i, p.Problems)
		}
		s.Policies = append(s.Policies, p)
	}
	return s, fx.Node
}

// policySnapshot is the cluster of testdata/compile/policies.yaml, compiled for node n1.
func policySnapshot(t testing.TB) Snapshot {
	s, _ := loadFixture(t, "testdata/compile/policies.yaml")
	return s
}

// TestCompileGolden compiles every testdata/compile/*.yaml and compares the ruleset with
// the .golden file next to it; go test -run Golden -update rewrites them.
func TestCompileGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/compile/*.yaml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no inputs: %v", err)
	}
	for _, in := range inputs {
		t.Run(filepath.Base(in), func(t *testing.T) {
			s, node := loadFixture(t, in)
			got := []byte(formatRuleset(Compile(s, node)))
			assertGolden(t, strings.TrimSuffix(in, ".yaml")+".golden", got)
		})
	}
}

// assertGolden compares got with the golden file at path; with -update it writes the file
// first.
func assertGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -run Golden -update writes it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (go test -run Golden -update rewrites it):\n%s", path, got)
	}
}

// formatRuleset writes a ruleset for people to review: tables in order, each with its sets
// and then its endpoints' guards and rules.
func formatRuleset(rs Ruleset) string {
	var b strings.Builder
	formatTable(&b, "host", rs.Host)
	keys := slices.SortedFunc(maps.Keys(rs.Pods), comparePodKey)
	for _, k := range keys {
		formatTable(&b, "pod "+k.String(), rs.Pods[k])
	}
	return b.String()
}

func formatTable(b *strings.Builder, name string, t Table) {
	fmt.Fprintf(b, "table %s\n", name)
	for _, s := range slices.Sorted(maps.Keys(t.Sets)) {
		var elems []string
		for _, p := range t.Sets[s].Prefixes {
			elems = append(elems, p.String())
		}
		for _, a := range t.Sets[s].Addrs {
			elems = append(elems, a.String())
		}
		fmt.Fprintf(b, "  set %s = {%s}\n", s, strings.Join(elems, ", "))
	}
	for _, ep := range t.Endpoints {
		network := string(ep.Network)
		if ep.Network == Primary {
			network = "the primary network"
		}
		fmt.Fprintf(b, "  endpoint %s: %s on %s\n", ep.Interface, ep.Pod, network)
		for _, d := range []struct {
			name string
			d    Direction
		}{{"ingress", ep.Ingress}, {"egress", ep.Egress}} {
			guard := "no guard"
			if g := d.d.Guard; g.Universe != "" {
				guard = fmt.Sprintf("drop %s not in %s", g.Universe, g.Allowed)
			}
			state := "open"
			if d.d.Isolated {
				state = "isolated"
			}
			fmt.Fprintf(b, "    %s: %s; %s\n", d.name, guard, state)
			for _, r := range d.d.Rules {
				fmt.Fprintf(b, "      allow %s %s (%s)\n", formatPeer(r.Peer), formatPorts(r.Ports), r.Policy)
			}
		}
	}
}

func formatPeer(p Peer) string {
	switch {
	case p.Any:
		return "any"
	case p.Set != "":
		return p.Set
	}
	s := p.CIDR.String()
	for i, e := range p.Except {
		if i == 0 {
			s += " except"
		}
		s += " " + e.String()
	}
	return s
}

func formatPorts(ps []Port) string {
	if len(ps) == 0 {
		return "all ports"
	}
	var out []string
	for _, p := range ps {
		switch {
		case p.Port == 0:
			out = append(out, p.Protocol)
		case p.EndPort != 0:
			out = append(out, fmt.Sprintf("%s/%d-%d", p.Protocol, p.Port, p.EndPort))
		default:
			out = append(out, fmt.Sprintf("%s/%d", p.Protocol, p.Port))
		}
	}
	return strings.Join(out, " ")
}
