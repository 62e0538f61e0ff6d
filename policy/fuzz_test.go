package policy

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
)

// FuzzParseMultiNetworkPolicy feeds arbitrary JSON to the parser. It must never panic, and
// problems must only ever narrow: a rule whose input listed peers never allows every peer, a
// rule whose input listed ports never allows every port, and compiling the policy never
// yields a rule wider than the validated one it came from.
func FuzzParseMultiNetworkPolicy(f *testing.F) {
	for _, seed := range []string{
		`{}`, `null`, `[]`, `{"metadata":5}`, `{"spec":5}`,
		string(mnp(`{}`)), string(mnp(`null`)), string(mnp(`{"podSelector":5}`)),
		string(mnp(`{"podSelector":{"matchLabels":{"app":"web"}},"ingress":[{"from":[{"podSelector":{"matchLabels":{"app":"lb"}}},` +
			`{"namespaceSelector":{"matchLabels":{"team":"a"}},"podSelector":{}},{"ipBlock":{"cidr":"10.0.0.1/8","except":["10.1.0.0/16"]}}],` +
			`"ports":[{"port":80},{"protocol":"UDP","port":53,"endPort":60},{"protocol":"SCTP"},{"port":"http"}]}],"egress":[{}]}`)),
		string(mnp(`{"ingress":[{"from":[{"ipBlock":{"cidr":"10.0.0.0/33"}},{"podSelector":{}}]}]}`)),
		string(mnp(`{"ingress":[{"from":[{"ipBlock":{"cidr":"fd00::/8"}}]},{}]}`)),
		string(mnp(`{"egress":[{"to":[{"ipBlock":{"cidr":"10.0.0.0/16","except":["10.1.0.0/24","x"]}}]}]}`)),
		string(mnp(`{"ingress":[{"ports":[{"protocol":"tcp","port":80},{"port":0},{"port":"80"},{"port":"http","endPort":90}]}]}`)),
		string(mnp(`{"policyTypes":["Ingres",5],"ingress":[{}],"egress":{}}`)),
		string(mnp(`{"podSelector":{"matchExpressions":[{"key":"app","operator":"Near"}]},"ingress":[{}]}`)),
		string(mnp(`{"ingress":[{"from":5},{"ports":{}},null,{"from":[null]},{"ports":[null]},7,{"from":[{"podSelector":5}]}]}`)),
		string(mnp(`{"egress":[{"to":[{"podSelector":{}}],"ports":[{"port":"http"},{"port":[]}]},{"ports":[{"port":"http"}]}]}`)),
	} {
		f.Add([]byte(seed))
	}
	fx := fuzzSnapshot()
	f.Fuzz(func(t *testing.T, data []byte) {
		p := ParseMultiNetworkPolicy(data)
		if p.valid == nil || p.valid.podSelector == nil {
			t.Fatal("no validated form")
		}
		for _, prob := range p.Problems {
			if !strings.Contains(prob, ": ") {
				t.Errorf("problem %q does not name a field", prob)
			}
		}
		checkNarrowing(t, data, p.valid)
		// Compile the policy for pods of its namespace on its networks and on the primary one.
		s := fx
		if p.Namespace != "" {
			s.Pods = fuzzPods(p.Namespace, append([]NetworkID{Primary}, p.Networks...))
		}
		np := p
		np.Kind, np.Networks = KindNetworkPolicy, []NetworkID{Primary}
		s.Policies = []Policy{p, np}
		rs := Compile(s, "n1")
		for name, table := range mapsWithHost(rs) {
			for set := range table.Sets {
				if !setNameRE.MatchString(set) {
					t.Fatalf("%s: set name %q", name, set)
				}
			}
			for _, ep := range table.Endpoints {
				checkRulesNarrow(t, ep.Ingress, p.valid.rules[ingress])
				checkRulesNarrow(t, ep.Egress, p.valid.rules[egress])
			}
		}
	})
}

// checkNarrowing compares the validated rules with the raw JSON they came from.
func checkNarrowing(t *testing.T, data []byte, v *validPolicy) {
	t.Helper()
	var raw struct {
		Spec map[string]json.RawMessage `json:"spec"`
	}
	if json.Unmarshal(data, &raw) != nil || raw.Spec == nil {
		if len(v.rules[ingress])+len(v.rules[egress]) > 0 {
			t.Fatalf("rules from an unreadable spec: %s", describe(v))
		}
		return
	}
	for d, rules := range v.rules {
		var list []json.RawMessage
		if err := json.Unmarshal(raw.Spec[dir(d).String()], &list); err != nil && len(rules) > 0 {
			t.Fatalf("%s rules from an unreadable list: %s", dir(d), describe(v))
		}
		for _, r := range rules {
			var in map[string]json.RawMessage
			if r.index >= len(list) || json.Unmarshal(list[r.index], &in) != nil || in == nil {
				t.Fatalf("%s[%d] is not a rule of the input", dir(d), r.index)
			}
			if r.peers == nil && !emptyList(in[dir(d).peersField()]) {
				t.Fatalf("%s[%d] allows every peer; the input lists %s", dir(d), r.index, in[dir(d).peersField()])
			}
			if r.ports == nil && !emptyList(in["ports"]) {
				t.Fatalf("%s[%d] allows every port; the input lists %s", dir(d), r.index, in["ports"])
			}
			if n := countList(in[dir(d).peersField()]); len(r.peers) > n {
				t.Fatalf("%s[%d] has %d peers from %d", dir(d), r.index, len(r.peers), n)
			}
			if n := countList(in["ports"]); len(r.ports) > n {
				t.Fatalf("%s[%d] has %d ports from %d", dir(d), r.index, len(r.ports), n)
			}
		}
	}
}

// checkRulesNarrow checks that compiled rules allow every peer or every port only where a
// validated rule does.
func checkRulesNarrow(t *testing.T, d Direction, rules []validRule) {
	t.Helper()
	anyPeer, anyPort := false, false
	for _, r := range rules {
		anyPeer = anyPeer || r.peers == nil
		anyPort = anyPort || r.ports == nil
	}
	for _, r := range d.Rules {
		if r.Peer.Any && !anyPeer {
			t.Fatalf("rule %+v allows every peer; no validated rule does", r)
		}
		if len(r.Ports) == 0 && !anyPort {
			t.Fatalf("rule %+v allows every port; no validated rule does", r)
		}
	}
}

func emptyList(raw json.RawMessage) bool {
	var list []json.RawMessage
	return isNull(raw) || (json.Unmarshal(raw, &list) == nil && len(list) == 0)
}

func countList(raw json.RawMessage) int {
	var list []json.RawMessage
	_ = json.Unmarshal(raw, &list)
	return len(list)
}

// fuzzSnapshot is a small cluster with a tenant, the platform and named ports.
func fuzzSnapshot() Snapshot {
	return Snapshot{
		ClusterCIDRs: []netip.Prefix{pfx("10.244.0.0/16")},
		Hosts:        []netip.Addr{ip("10.244.0.1")},
		Tenants:      []Tenant{{Name: "red", Blocks: []netip.Prefix{pfx("10.244.16.0/24")}}},
		Namespaces:   []Namespace{{Name: "ns", Tenant: "red", Labels: map[string]string{"team": "a"}}},
		Pods:         fuzzPods("ns", []NetworkID{Primary, "ns/net"}),
	}
}

// fuzzPods returns three pods of namespace ns, two on node n1, attached to networks.
func fuzzPods(ns string, networks []NetworkID) []Pod {
	var pods []Pod
	for i, app := range []string{"web", "lb", "db"} {
		p := Pod{
			PodKey: PodKey{ns, app}, Node: "n1", Tenant: "red", Labels: map[string]string{"app": app},
			Ports: []NamedPort{{Name: "http", Protocol: "TCP", Port: uint16(8080 + i)}},
		}
		if i == 2 {
			p.Node = "n2"
		}
		for j, n := range networks {
			ep := Endpoint{Network: n, Interface: "net" + string(rune('0'+j%10)), IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 244, byte(16 + j), byte(5 + i)})}}
			if n == Primary {
				ep.Interface, ep.HostInterface = "eth0", "veth"+app
			}
			p.Endpoints = append(p.Endpoints, ep)
		}
		pods = append(pods, p)
	}
	return pods
}
