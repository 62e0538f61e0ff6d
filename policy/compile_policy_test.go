package policy

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"testing"
)

// admits evaluates one direction of an endpoint's rules for a new connection with peer, as
// the rendered rules must: the guard, then, if isolated, the first rule that matches.
func admits(t Table, d Direction, peer netip.Addr, proto string, port uint16) bool {
	in := func(name string) bool {
		s, ok := t.Sets[name]
		if !ok {
			panic(fmt.Sprintf("set %s is not in the table", name))
		}
		return slices.Contains(s.Addrs, peer) || slices.ContainsFunc(s.Prefixes, func(p netip.Prefix) bool { return p.Contains(peer) })
	}
	if d.Guard.Universe != "" && in(d.Guard.Universe) && !in(d.Guard.Allowed) {
		return false
	}
	if !d.Isolated {
		return true
	}
	for _, r := range d.Rules {
		switch {
		case r.Peer.Any:
		case r.Peer.Set != "":
			if !in(r.Peer.Set) {
				continue
			}
		case !r.Peer.CIDR.Contains(peer) || slices.ContainsFunc(r.Peer.Except, func(e netip.Prefix) bool { return e.Contains(peer) }):
			continue
		}
		if len(r.Ports) == 0 || slices.ContainsFunc(r.Ports, func(p Port) bool {
			end := max(p.EndPort, p.Port)
			return p.Protocol == proto && (p.Port == 0 || port >= p.Port && port <= end)
		}) {
			return true
		}
	}
	return false
}

// TestCompilePolicies checks connections to and from the two local pods of
// testdata/compile/policies.yaml (whose comments say what each policy means) against the
// rules compiled for their endpoints.
func TestCompilePolicies(t *testing.T) {
	rs := Compile(policySnapshot(t), "n1")
	web, client := PodKey{"red-a", "web"}, PodKey{"red-a", "client"}
	const in, out = "in", "out"
	for _, tc := range []struct {
		name    string
		pod     PodKey
		network NetworkID
		way     string // in: ingress from peer; out: egress to peer
		peer    string
		proto   string
		port    uint16
		want    bool
	}{
		{"podSelector, named port on the pod itself", web, Primary, in, "10.244.16.6", "TCP", 8080, true},
		{"a port the policy does not name", web, Primary, in, "10.244.16.6", "TCP", 9090, false},
		{"a numeric port", web, Primary, in, "10.244.16.6", "TCP", 443, true},
		{"namespaceSelector and podSelector", web, Primary, in, "10.244.17.8", "TCP", 443, true},
		{"a pod the podSelector matches in a namespace the namespaceSelector does not", web, Primary, in, "10.244.32.4", "TCP", 443, false},
		{"a pod in no peer", web, Primary, in, "10.244.16.7", "UDP", 443, false},
		{"endPort: the range's start", web, Primary, in, "10.244.16.6", "SCTP", 9000, true},
		{"endPort: the range's end", web, Primary, in, "10.244.16.6", "SCTP", 9010, true},
		{"endPort: past the range", web, Primary, in, "10.244.16.6", "SCTP", 9011, false},
		{"SCTP range, TCP packet", web, Primary, in, "10.244.16.6", "TCP", 9005, false},
		{"ipBlock", web, Primary, in, "10.1.2.3", "UDP", 7, true},
		{"ipBlock except", web, Primary, in, "10.5.1.1", "TCP", 443, false},
		{"outside the ipBlock", web, Primary, in, "172.16.0.1", "TCP", 443, false},
		{"egress types defaulted from the rules", web, Primary, out, "10.244.16.7", "UDP", 1, true},
		{"egress rule's other pods", web, Primary, out, "10.244.17.8", "TCP", 80, false},
		{"ingress open without an ingress policy", client, Primary, in, "10.244.32.4", "TCP", 1, true},
		{"the guard holds where no policy isolates", client, Primary, in, "10.244.48.1", "TCP", 1, false},
		{"named egress port, first destination's number", client, Primary, out, "10.244.16.7", "TCP", 80, true},
		{"named egress port, the other destination's number", client, Primary, out, "10.244.16.7", "TCP", 8081, false},
		{"named egress port, second destination's number", client, Primary, out, "10.244.17.8", "TCP", 8081, true},
		{"named egress port, second destination, first's number", client, Primary, out, "10.244.17.8", "TCP", 80, false},
		{"named egress port to any peer: a pod that has it", client, Primary, out, "10.244.16.5", "TCP", 8080, true},
		{"named egress port to any peer: a pod that does not", client, Primary, out, "10.244.32.4", "TCP", 8080, false},
		{"ipBlock with a numeric port", client, Primary, out, "10.96.0.10", "UDP", 53, true},
		{"ipBlock with a named port matches nothing", client, Primary, out, "10.96.0.10", "TCP", 80, false},
		{"named UDP port in a selected namespace", client, Primary, out, "10.244.3.3", "UDP", 53, true},
		{"named UDP port, TCP packet", client, Primary, out, "10.244.3.3", "TCP", 53, false},
		{"MultiNetworkPolicy on its network", web, "red-a/data", in, "192.168.10.6", "TCP", 1, true},
		{"MultiNetworkPolicy, a peer it does not name", web, "red-a/data", in, "192.168.10.7", "TCP", 1, false},
		{"NetworkPolicy does not reach a secondary network", web, "red-a/data", out, "192.168.10.8", "TCP", 1, true},
		{"MultiNetworkPolicy selects by its own namespace", client, "red-a/data", in, "192.168.10.7", "TCP", 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ep, table := endpointOf(t, rs, tc.pod, tc.network)
			d := ep.Ingress
			if tc.way == out {
				d = ep.Egress
			}
			if got := admits(table, d, ip(tc.peer), tc.proto, tc.port); got != tc.want {
				t.Errorf("%s %s %s %s/%d = %v, want %v", tc.pod, tc.way, tc.peer, tc.proto, tc.port, got, tc.want)
			}
		})
	}
}

// TestCompilePolicySelection checks which policies apply to which endpoint.
func TestCompilePolicySelection(t *testing.T) {
	rs := Compile(policySnapshot(t), "n1")
	policies := func(d Direction) []string {
		var out []string
		for _, r := range d.Rules {
			if !slices.Contains(out, r.Policy) {
				out = append(out, r.Policy)
			}
		}
		return out
	}
	for _, tc := range []struct {
		pod             PodKey
		network         NetworkID
		isolated        [2]bool
		ingress, egress []string
	}{
		{PodKey{"red-a", "web"}, Primary, [2]bool{true, true}, []string{"red-a/web-ingress"}, []string{"red-a/web-egress"}},
		{PodKey{"red-a", "client"}, Primary, [2]bool{false, true}, nil, []string{"red-a/client-egress"}},
		{PodKey{"red-a", "web"}, "red-a/data", [2]bool{true, false}, []string{"red-a/data"}, nil},
		{PodKey{"red-a", "client"}, "red-a/data", [2]bool{true, false}, []string{"red-a/data"}, nil},
	} {
		ep, _ := endpointOf(t, rs, tc.pod, tc.network)
		if got := [2]bool{ep.Ingress.Isolated, ep.Egress.Isolated}; got != tc.isolated {
			t.Errorf("%s on %q: isolated (ingress, egress) = %v, want %v", tc.pod, tc.network, got, tc.isolated)
		}
		if got := policies(ep.Ingress); !slices.Equal(got, tc.ingress) {
			t.Errorf("%s on %q: ingress rules from %q, want %q", tc.pod, tc.network, got, tc.ingress)
		}
		if got := policies(ep.Egress); !slices.Equal(got, tc.egress) {
			t.Errorf("%s on %q: egress rules from %q, want %q", tc.pod, tc.network, got, tc.egress)
		}
	}
}

// TestCompileNarrowing compiles policies with bad parts next to the same policies with the
// bad parts deleted by hand: every connection must be decided the same way.
func TestCompileNarrowing(t *testing.T) {
	base := policySnapshot(t)
	peers := []string{"10.244.16.5", "10.244.16.6", "10.244.16.7", "10.244.17.8", "10.244.3.3", "10.1.2.3", "10.5.1.1", "192.168.10.6", "192.168.10.7"}
	ports := []uint16{53, 80, 443, 8080, 9005}
	for _, tc := range []struct {
		name      string
		bad, good string // a policy's spec, and the same with the bad parts deleted
	}{{
		name: "invalid cidr next to a valid peer",
		bad:  `{"podSelector":{},"ingress":[{"from":[{"ipBlock":{"cidr":"10.0.0.0/33"}},{"podSelector":{"matchLabels":{"app":"client"}}}]}]}`,
		good: `{"podSelector":{},"ingress":[{"from":[{"podSelector":{"matchLabels":{"app":"client"}}}]}]}`,
	}, {
		name: "only invalid ports",
		bad:  `{"podSelector":{},"ingress":[{"ports":[{"port":0},{"protocol":"ICMP"}]},{"from":[{"ipBlock":{"cidr":"10.0.0.0/8"}}]}]}`,
		good: `{"podSelector":{},"ingress":[{"from":[{"ipBlock":{"cidr":"10.0.0.0/8"}}]}]}`,
	}, {
		name: "only invalid peers",
		bad:  `{"podSelector":{},"egress":[{"to":[{"ipBlock":{"cidr":"fd00::/8"}},{}],"ports":[{"port":80}]}]}`,
		good: `{"podSelector":{},"policyTypes":["Ingress","Egress"]}`,
	}, {
		name: "invalid except",
		bad:  `{"podSelector":{},"ingress":[{"from":[{"ipBlock":{"cidr":"10.0.0.0/8","except":["10.0.0.0/4"]}}]}]}`,
		good: `{"podSelector":{},"ingress":[]}`,
	}, {
		name: "invalid podSelector",
		bad:  `{"podSelector":{"matchExpressions":[{"key":"app","operator":"Bad"}]},"ingress":[{}]}`,
		good: `{"podSelector":{}}`,
	}, {
		name: "unknown policy type",
		bad:  `{"podSelector":{},"policyTypes":["Ingress","Sideways"],"ingress":[{"ports":[{"port":443}]}]}`,
		good: `{"podSelector":{},"policyTypes":["Ingress","Egress"],"ingress":[{"ports":[{"port":443}]}]}`,
	}, {
		name: "unreadable port",
		bad:  `{"podSelector":{},"ingress":[{"ports":[{"port":{}},{"port":443}]},{"ports":[{"port":[1]}]}]}`,
		good: `{"podSelector":{},"ingress":[{"ports":[{"port":443}]}]}`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			// The spec applies to red-a/data as a MultiNetworkPolicy and, as a NetworkPolicy
			// with the same validated form, to the primary network.
			compile := func(spec string) Ruleset {
				p := ParseMultiNetworkPolicy([]byte(`{"metadata":{"namespace":"red-a","name":"x",` +
					`"annotations":{"k8s.v1.cni.cncf.io/policy-for":"data"}},"spec":` + spec + `}`))
				np := p
				np.Kind, np.Networks = KindNetworkPolicy, []NetworkID{Primary}
				s := base
				s.Policies = []Policy{p, np}
				return Compile(s, "n1")
			}
			bad, good := compile(tc.bad), compile(tc.good)
			for _, pod := range []PodKey{{"red-a", "web"}, {"red-a", "client"}} {
				for _, n := range []NetworkID{Primary, "red-a/data"} {
					be, bt := endpointOf(t, bad, pod, n)
					ge, gt := endpointOf(t, good, pod, n)
					for _, peer := range peers {
						for _, proto := range []string{"TCP", "UDP", "SCTP"} {
							for _, port := range ports {
								for _, way := range []struct {
									name      string
									bad, good Direction
								}{{"from", be.Ingress, ge.Ingress}, {"to", be.Egress, ge.Egress}} {
									b := admits(bt, way.bad, ip(peer), proto, port)
									g := admits(gt, way.good, ip(peer), proto, port)
									if b != g {
										t.Errorf("%s on %q %s %s %s/%d: with bad parts %v, without %v", pod, n, way.name, peer, proto, port, b, g)
									}
								}
							}
						}
					}
				}
			}
		})
	}
}

// TestCompileHandWrittenPolicy checks that a Policy written by hand, without its validated
// form, compiles as the same policy built by FromNetworkPolicy does.
func TestCompileHandWrittenPolicy(t *testing.T) {
	s := policySnapshot(t)
	parsed := Compile(s, "n1")
	s.Policies = slices.Clone(s.Policies)
	for i, p := range s.Policies {
		s.Policies[i] = Policy{Kind: p.Kind, Namespace: p.Namespace, Name: p.Name, Networks: p.Networks, Spec: p.Spec}
	}
	if got := Compile(s, "n1"); !reflect.DeepEqual(got, parsed) {
		t.Errorf("hand-written policies compile to\n%s\nwant\n%s", formatRuleset(got), formatRuleset(parsed))
	}
}
