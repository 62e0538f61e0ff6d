package policy

import (
	"net/netip"
	"regexp"
	"strings"
	"testing"
)

var fuzzNftName = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9_]*$`)

// FuzzRender renders tables with whatever names, ports and prefixes a compiled Table could
// carry and checks that what comes out is well-formed nft: identifiers for names, quotable
// interface names and comments, isolated chains that end in drop.
func FuzzRender(f *testing.F) {
	f.Add("loom0a1b2c3d4e5", "t_acme", "acme/web", "TCP", uint16(80), uint16(0), "10.0.0.0/8", true)
	f.Add("net.1", "1set/x", `p/"q"`, "sctp", uint16(9), uint16(8), "fd00::/64", false)
	f.Add("", "", "", "", uint16(0), uint16(0), "", true)
	f.Fuzz(func(t *testing.T, iface, set, policy, proto string, port, endPort uint16, prefix string, isolated bool) {
		p, _ := netip.ParsePrefix(prefix)
		d := Direction{Guard: Guard{Universe: set, Allowed: set + "x"}, Isolated: isolated, Rules: []Rule{
			{Peer: Peer{Set: set}, Ports: []Port{{Protocol: proto, Port: port, EndPort: endPort}}, Policy: policy},
			{Peer: Peer{CIDR: p, Except: []netip.Prefix{p}}, Policy: policy},
			{Peer: Peer{CIDR: p}, Ports: []Port{{Protocol: proto, Port: port}}, Policy: policy},
		}}
		table := Table{
			Sets:      map[string]AddrSet{set: {Prefixes: []netip.Prefix{p, p}}},
			Endpoints: []EndpointRules{{Interface: iface, Ingress: d, Egress: d}},
		}
		for _, kind := range []TableKind{HostTable, PodTable} {
			got := Render(table, kind)
			if !got.Equal(Render(table, kind)) {
				t.Fatal("two renderings differ")
			}
			for _, s := range got.Sets {
				if !fuzzNftName.MatchString(s.Name) {
					t.Errorf("set name %q is not an identifier", s.Name)
				}
			}
			for _, m := range got.Maps {
				for _, e := range m.Elements {
					if !renderableIfname(e.Key) {
						t.Errorf("map key %q is no interface name", e.Key)
					}
				}
			}
			for _, c := range got.Chains {
				if !fuzzNftName.MatchString(c.Name) {
					t.Errorf("chain name %q is not an identifier", c.Name)
				}
				for _, r := range c.Rules {
					if _, cmt, ok := strings.Cut(r, ` comment "`); ok && (strings.Count(cmt, `"`) != 1 || len(cmt) > nftMaxComment+1) {
						t.Errorf("rule %q: bad comment", r)
					}
				}
				if isolated && (strings.HasPrefix(c.Name, "eg_") || strings.HasPrefix(c.Name, "in_")) && c.Rules[len(c.Rules)-1] != "drop" {
					t.Errorf("isolated chain %s ends in %q", c.Name, c.Rules[len(c.Rules)-1])
				}
			}
		}
	})
}
