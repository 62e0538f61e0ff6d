package policy

import (
	"strings"
	"testing"
)

// txnTable is a small host table: pod loom0000000000a of tenant acme, and the set of its
// tenant's pods.
func txnTable(pods map[string]string, isolated bool) Table {
	t := Table{Sets: map[string]AddrSet{"u_primary": {Prefixes: renderPrefixes("10.244.0.0/16")}, "t_acme": {}}}
	var ips []string
	for iface, ip := range pods {
		ips = append(ips, ip)
		d := Direction{Guard: Guard{Universe: "u_primary", Allowed: "t_acme"}, Isolated: isolated}
		if isolated {
			d.Rules = []Rule{{Peer: Peer{Set: "t_acme"}, Ports: []Port{{Protocol: "TCP", Port: 80}}, Policy: "acme/web"}}
		}
		t.Endpoints = append(t.Endpoints, EndpointRules{Interface: iface, Ingress: d, Egress: Direction{Guard: d.Guard}})
	}
	t.Sets["t_acme"] = AddrSet{Addrs: renderAddrs(ips...)}
	return t
}

func TestUpdateScript(t *testing.T) {
	one := map[string]string{"loom0000000000a": "10.244.0.10"}
	two := map[string]string{"loom0000000000a": "10.244.0.10", "loom0000000000b": "10.244.0.11"}
	for _, tc := range []struct {
		name       string
		have, want NftTable
		script     string
	}{
		{"unchanged", Render(txnTable(two, false), HostTable), Render(txnTable(two, false), HostTable), ""},
		{"pod added", Render(txnTable(one, false), HostTable), Render(txnTable(two, false), HostTable), `
add chain inet loom eg_loom0000000000b
add chain inet loom in_loom0000000000b
add element inet loom t_acme_a { 10.244.0.11 }
add rule inet loom eg_loom0000000000b ip daddr @u_primary_a ip daddr != @t_acme_a ip daddr != @t_acme_n drop
add rule inet loom eg_loom0000000000b ip daddr @u_primary_n ip daddr != @t_acme_a ip daddr != @t_acme_n drop
add rule inet loom eg_loom0000000000b goto to_pod
add rule inet loom in_loom0000000000b ip saddr @u_primary_a ip saddr != @t_acme_a ip saddr != @t_acme_n drop
add rule inet loom in_loom0000000000b ip saddr @u_primary_n ip saddr != @t_acme_a ip saddr != @t_acme_n drop
add rule inet loom in_loom0000000000b accept
add element inet loom egress { "loom0000000000b" : goto eg_loom0000000000b }
add element inet loom ingress { "loom0000000000b" : goto in_loom0000000000b }
`},
		{"pod removed", Render(txnTable(two, false), HostTable), Render(txnTable(one, false), HostTable), `
delete element inet loom t_acme_a { 10.244.0.11 }
delete element inet loom egress { "loom0000000000b" }
delete element inet loom ingress { "loom0000000000b" }
flush chain inet loom eg_loom0000000000b
flush chain inet loom in_loom0000000000b
delete chain inet loom eg_loom0000000000b
delete chain inet loom in_loom0000000000b
`},
		{"policy isolates", Render(txnTable(one, false), HostTable), Render(txnTable(one, true), HostTable), `
flush chain inet loom in_loom0000000000a
add rule inet loom in_loom0000000000a ip saddr @u_primary_a ip saddr != @t_acme_a ip saddr != @t_acme_n drop
add rule inet loom in_loom0000000000a ip saddr @u_primary_n ip saddr != @t_acme_a ip saddr != @t_acme_n drop
add rule inet loom in_loom0000000000a ip saddr @t_acme_a meta l4proto tcp th dport 80 accept comment "acme/web"
add rule inet loom in_loom0000000000a ip saddr @t_acme_n meta l4proto tcp th dport 80 accept comment "acme/web"
add rule inet loom in_loom0000000000a drop
`},
		{"set added and removed", Render(Table{Sets: map[string]AddrSet{"p_old": {Addrs: renderAddrs("10.0.0.1")}}}, PodTable),
			Render(Table{Sets: map[string]AddrSet{"p_new": {Prefixes: renderPrefixes("10.1.0.0/16", "10.1.0.0/24")}}}, PodTable), `
add set inet loom p_new_a { type ipv4_addr; }
add set inet loom p_new_n { type ipv4_addr; flags interval; }
add element inet loom p_new_n { 10.1.0.0/16 }
delete set inet loom p_old_a
delete set inet loom p_old_n
`},
		{"prefix widened", Render(Table{Sets: map[string]AddrSet{"p": {Prefixes: renderPrefixes("10.1.0.0/24", "10.2.0.0/24")}}}, PodTable),
			Render(Table{Sets: map[string]AddrSet{"p": {Prefixes: renderPrefixes("10.1.0.0/24", "10.1.0.0/16", "10.2.0.0/24")}}}, PodTable), `
delete element inet loom p_n { 10.1.0.0/24 }
add element inet loom p_n { 10.1.0.0/16 }
`},
		{"interface renamed", Render(Table{Endpoints: []EndpointRules{{Interface: "net1"}}}, PodTable),
			Render(Table{Endpoints: []EndpointRules{{Interface: "net2"}}}, PodTable), `
add chain inet loom eg_net2
add chain inet loom in_net2
add rule inet loom eg_net2 accept
add rule inet loom in_net2 accept
delete element inet loom egress { "net1" }
add element inet loom egress { "net2" : goto eg_net2 }
delete element inet loom ingress { "net1" }
add element inet loom ingress { "net2" : goto in_net2 }
flush chain inet loom eg_net1
flush chain inet loom in_net1
delete chain inet loom eg_net1
delete chain inet loom in_net1
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := updateScript(tc.have, tc.want)
			if !ok {
				t.Fatalf("updateScript refused an update it can make")
			}
			if want := strings.TrimPrefix(tc.script, "\n"); got != want {
				t.Errorf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestUpdateScriptRefuses(t *testing.T) {
	host, pod := Render(Table{}, HostTable), Render(Table{}, PodTable)
	hashSet := NftTable{Sets: []NftSet{{Name: "s", Type: "ipv4_addr"}}}
	intervalSet := NftTable{Sets: []NftSet{{Name: "s", Type: "ipv4_addr", Interval: true}}}
	v6Set := NftTable{Sets: []NftSet{{Name: "s", Type: "ipv6_addr"}}}
	hooked := NftTable{Chains: []NftChain{{Name: "input", Base: "type filter hook input priority filter; policy accept;"}}}
	plain := NftTable{Chains: []NftChain{{Name: "input"}}}
	for _, tc := range []struct {
		name       string
		have, want NftTable
	}{
		{"set gains flags", hashSet, intervalSet},
		{"set changes type", hashSet, v6Set},
		{"chain loses its hook", hooked, plain},
	} {
		if _, ok := updateScript(tc.have, tc.want); ok {
			t.Errorf("%s: updateScript made an update in place", tc.name)
		}
	}
	// From a host table to a pod table is a change of chains, which can be made in place.
	if _, ok := updateScript(host, pod); !ok {
		t.Errorf("host to pod table: updateScript refused")
	}
}

func TestReplaceScript(t *testing.T) {
	want := Render(Table{}, PodTable)
	got := replaceScript(want)
	if !strings.HasPrefix(got, "add table inet loom\ndelete table inet loom\ntable inet loom {\n") || !strings.HasSuffix(got, want.String()) {
		t.Errorf("replaceScript:\n%s", got)
	}
}
