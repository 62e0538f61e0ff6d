package oracle_test

import (
	"net/netip"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"

	"github.com/loom-cni/loom/policy"
	"github.com/loom-cni/loom/policy/oracle"
)

// The cases below are the examples and statements of the Kubernetes NetworkPolicy page
// (https://kubernetes.io/docs/concepts/services-networking/network-policies/) and the
// README's tenant rules, each with the verdict the text gives.

// docCluster has the namespaces and pods of the page's first example: role=db and
// role=frontend pods in default, a pod in a namespace labelled project=myproject, and pods
// elsewhere at addresses inside and outside its ipBlock. None is in a tenant.
func docCluster() policy.Snapshot {
	ns := func(name string, ls ...string) policy.Namespace {
		labels := map[string]string{"kubernetes.io/metadata.name": name}
		for i := 0; i+1 < len(ls); i += 2 {
			labels[ls[i]] = ls[i+1]
		}
		return policy.Namespace{Name: name, Labels: labels}
	}
	return policy.Snapshot{
		Namespaces: []policy.Namespace{ns("default"), ns("myproject", "project", "myproject"), ns("other"), ns("alice", "user", "alice")},
		Pods: []policy.Pod{
			pod("default/db", map[string]string{"role": "db"}, "10.1.0.1", "fd00::1"),
			pod("default/frontend", map[string]string{"role": "frontend"}, "10.1.0.2", "fd00::2"),
			pod("default/backend", map[string]string{"role": "backend"}, "10.1.0.3"),
			pod("myproject/app", nil, "10.1.1.1"),
			pod("other/excepted", nil, "172.17.1.5"),
			pod("other/inside", nil, "172.17.2.5"),
			pod("other/dest", nil, "10.0.0.7"),
			pod("alice/client", map[string]string{"role": "client"}, "10.1.2.1"),
			pod("other/client", map[string]string{"role": "client"}, "10.1.2.2"),
			pod("alice/server", nil, "10.1.2.3"),
		},
	}
}

// pod is a pod on the primary network with the given addresses.
func pod(key string, labels map[string]string, addrs ...string) policy.Pod {
	ns, name, _ := strings.Cut(key, "/")
	p := policy.Pod{PodKey: policy.PodKey{Namespace: ns, Name: name}, Node: "n1", Labels: labels}
	ep := policy.Endpoint{Network: policy.Primary, Interface: "eth0"}
	for _, a := range addrs {
		ep.IPs = append(ep.IPs, netip.MustParseAddr(a))
	}
	p.Endpoints = append(p.Endpoints, ep)
	return p
}

// networkPolicy is a NetworkPolicy of namespace ns with the spec written as YAML.
func networkPolicy(t *testing.T, ns, spec string) policy.Policy {
	t.Helper()
	var s networkingv1.NetworkPolicySpec
	if err := yaml.UnmarshalStrict([]byte(spec), &s); err != nil {
		t.Fatal(err)
	}
	return policy.Policy{Kind: policy.KindNetworkPolicy, Namespace: ns, Name: "p", Networks: []policy.NetworkID{policy.Primary}, Spec: s}
}

// conn is "from to [family] protocol/port [network]", as in "default/frontend default/db TCP/6379".
func conn(t *testing.T, s string) oracle.Connection {
	t.Helper()
	f := strings.Fields(s)
	c := oracle.Connection{Family: 4}
	c.From.Namespace, c.From.Name, _ = strings.Cut(f[0], "/")
	c.To.Namespace, c.To.Name, _ = strings.Cut(f[1], "/")
	rest := f[2:]
	if rest[0] == "IPv6" {
		c.Family, rest = 6, rest[1:]
	}
	proto, port, _ := strings.Cut(rest[0], "/")
	c.Protocol = proto
	for _, d := range port {
		c.Port = c.Port*10 + uint16(d-'0')
	}
	if len(rest) > 1 {
		c.Network = policy.NetworkID(rest[1])
	}
	return c
}

type verdicts map[string]bool // connection → allowed

func check(t *testing.T, s policy.Snapshot, want verdicts) {
	t.Helper()
	for c, allowed := range want {
		if got := oracle.Decide(&s, conn(t, c)); got.Allowed != allowed {
			t.Errorf("%s: allowed = %v (%s), want %v", c, got.Allowed, got.Reason, allowed)
		}
	}
}

func TestDocumentationExample(t *testing.T) {
	s := docCluster()
	s.Policies = []policy.Policy{networkPolicy(t, "default", `
podSelector: {matchLabels: {role: db}}
policyTypes: [Ingress, Egress]
ingress:
- from:
  - ipBlock: {cidr: 172.17.0.0/16, except: [172.17.1.0/24]}
  - namespaceSelector: {matchLabels: {project: myproject}}
  - podSelector: {matchLabels: {role: frontend}}
  ports: [{protocol: TCP, port: 6379}]
egress:
- to: [{ipBlock: {cidr: 10.0.0.0/24}}]
  ports: [{protocol: TCP, port: 5978}]`)}
	check(t, s, verdicts{
		// Ingress to role=db on TCP 6379 from role=frontend in default, any pod of a
		// project=myproject namespace, and 172.17.0.0/16 but 172.17.1.0/24.
		"default/frontend default/db TCP/6379": true,
		"myproject/app default/db TCP/6379":    true,
		"other/inside default/db TCP/6379":     true,
		"other/excepted default/db TCP/6379":   false,
		"default/backend default/db TCP/6379":  false,
		"default/frontend default/db TCP/6380": false,
		"default/frontend default/db UDP/6379": false,
		"default/frontend default/db ICMP/0":   false,
		// Egress from role=db to 10.0.0.0/24 on TCP 5978 only.
		"default/db other/dest TCP/5978":       true,
		"default/db other/dest TCP/80":         false,
		"default/db default/frontend TCP/5978": false,
		// Pods the policy does not select are not isolated.
		"default/frontend default/backend TCP/1": true,
		"default/backend default/frontend UDP/9": true,
		// A pod cannot block access to itself.
		"default/db default/db TCP/1": true,
		// No IPv6 address on backend: no IPv6 connection to it.
		"default/frontend default/backend IPv6 TCP/1": false,
		"default/frontend default/db IPv6 TCP/6379":   true,
	})
}

func TestDocumentationDefaults(t *testing.T) {
	for _, tc := range []struct {
		name, spec string
		want       verdicts
	}{{
		name: "default deny all ingress", spec: `{podSelector: {}, policyTypes: [Ingress]}`,
		want: verdicts{"other/dest default/db TCP/80": false, "default/db other/dest TCP/80": true, "default/db default/frontend ICMP/0": false},
	}, {
		name: "allow all ingress", spec: `{podSelector: {}, ingress: [{}], policyTypes: [Ingress]}`,
		want: verdicts{"other/dest default/db TCP/80": true, "other/dest default/db ICMP/0": true},
	}, {
		name: "default deny all egress", spec: `{podSelector: {}, policyTypes: [Egress]}`,
		want: verdicts{"default/db other/dest TCP/80": false, "other/dest default/db TCP/80": true},
	}, {
		name: "allow all egress", spec: `{podSelector: {}, egress: [{}], policyTypes: [Egress]}`,
		want: verdicts{"default/db other/dest UDP/53": true},
	}, {
		name: "default deny all ingress and all egress", spec: `{podSelector: {}, policyTypes: [Ingress, Egress]}`,
		want: verdicts{"default/db other/dest TCP/80": false, "other/dest default/db TCP/80": false, "default/db default/frontend TCP/80": false},
	}, {
		// Without policyTypes: Ingress always, Egress only with egress rules.
		name: "no policyTypes, no rules: ingress isolated only", spec: `{podSelector: {}}`,
		want: verdicts{"other/dest default/db TCP/80": false, "default/db other/dest TCP/80": true},
	}, {
		name: "no policyTypes, egress rules: both isolated", spec: `{podSelector: {}, egress: [{ports: [{port: 53, protocol: UDP}]}]}`,
		want: verdicts{"other/dest default/db TCP/80": false, "default/db other/dest UDP/53": true, "default/db other/dest TCP/53": false},
	}, {
		name: "policyTypes Egress ignores ingress rules", spec: `{podSelector: {}, policyTypes: [Egress], ingress: [{ports: [{port: 1}]}]}`,
		want: verdicts{"other/dest default/db TCP/80": true, "default/db other/dest TCP/1": false},
	}, {
		// A port without protocol is TCP; a protocol without port is every port of it.
		name: "protocol defaults to TCP", spec: `{podSelector: {}, ingress: [{ports: [{port: 80}, {protocol: UDP}]}]}`,
		want: verdicts{"other/dest default/db TCP/80": true, "other/dest default/db SCTP/80": false, "other/dest default/db UDP/9999": true, "other/dest default/db TCP/81": false},
	}, {
		name: "endPort", spec: `{podSelector: {}, policyTypes: [Egress], egress: [{to: [{ipBlock: {cidr: 10.0.0.0/24}}], ports: [{protocol: TCP, port: 32000, endPort: 32768}]}]}`,
		want: verdicts{"default/db other/dest TCP/32000": true, "default/db other/dest TCP/32768": true, "default/db other/dest TCP/31999": false, "default/db other/dest TCP/32769": false},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			s := docCluster()
			s.Policies = []policy.Policy{networkPolicy(t, "default", tc.spec)}
			check(t, s, tc.want)
		})
	}
}

// One element with both selectors allows clients in alice's namespaces; two elements allow
// pods in those namespaces or clients in the policy's own.
func TestDocumentationSelectorCombination(t *testing.T) {
	s := docCluster()
	s.Policies = []policy.Policy{networkPolicy(t, "alice", `
podSelector: {}
ingress:
- from:
  - namespaceSelector: {matchLabels: {user: alice}}
    podSelector: {matchLabels: {role: client}}`)}
	check(t, s, verdicts{
		"alice/client alice/server TCP/80": true,
		"other/client alice/server TCP/80": false,
	})
	s.Policies = []policy.Policy{networkPolicy(t, "default", `
podSelector: {}
ingress:
- from:
  - namespaceSelector: {matchLabels: {user: alice}}
  - podSelector: {matchLabels: {role: frontend}}`)}
	check(t, s, verdicts{
		"alice/server default/db TCP/80":     true, // any pod of alice's namespace
		"other/client default/db TCP/80":     false,
		"default/frontend default/db TCP/80": true, // role=frontend in default
		"default/backend default/db TCP/80":  false,
	})
}

// A named port is the destination pod's container port of that name and protocol: on
// ingress the selected pod's own, on egress each destination's.
func TestNamedPorts(t *testing.T) {
	s := docCluster()
	s.Pods[0].Ports = []policy.NamedPort{{Name: "http", Protocol: "TCP", Port: 8080}}                        // default/db
	s.Pods[1].Ports = []policy.NamedPort{{Name: "http", Port: 80}, {Name: "dns", Protocol: "UDP", Port: 53}} // default/frontend
	s.Policies = []policy.Policy{networkPolicy(t, "default", `
podSelector: {}
policyTypes: [Ingress, Egress]
ingress: [{ports: [{port: http}, {port: dns, protocol: UDP}]}]
egress: [{ports: [{port: http}, {port: dns, protocol: UDP}]}]`)}
	check(t, s, verdicts{
		"default/frontend default/db TCP/8080": true,
		"default/frontend default/db TCP/80":   false,
		"default/frontend default/db UDP/53":   false, // db has no port called dns
		"default/db default/frontend TCP/80":   true,  // frontend's http, with no protocol: TCP
		"default/db default/frontend TCP/8080": false,
		"default/db default/frontend UDP/53":   true,
		"default/db default/frontend TCP/53":   false,
		"default/db other/dest TCP/80":         false, // dest has no port called http
	})
}

// tenantCluster: tenants red and blue name each other, green names red only; kube-system
// is the platform. Every pod is on the primary network and on net "shared/lan"; "infra/store"
// has platform pods only.
func tenantCluster() policy.Snapshot {
	s := policy.Snapshot{
		Tenants: []policy.Tenant{{Name: "red", Peers: []string{"blue"}}, {Name: "blue", Peers: []string{"red"}}, {Name: "green", Peers: []string{"red"}}},
		Namespaces: []policy.Namespace{
			{Name: "red-a", Tenant: "red"}, {Name: "red-b", Tenant: "red"}, {Name: "blue-a", Tenant: "blue"},
			{Name: "green-a", Tenant: "green"}, {Name: "kube-system"},
		},
	}
	for i, key := range []string{"red-a/x", "red-b/y", "blue-a/x", "green-a/x", "kube-system/dns", "kube-system/store"} {
		p := pod(key, nil, netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}).String())
		p.Endpoints = append(p.Endpoints, policy.Endpoint{Network: "shared/lan", Interface: "net1",
			IPs: []netip.Addr{netip.AddrFrom4([4]byte{192, 168, 0, byte(i + 1)}), netip.AddrFrom16([16]byte{0xfd, 15: byte(i + 1)})}})
		if strings.HasPrefix(key, "kube-system/") {
			p.Endpoints = append(p.Endpoints, policy.Endpoint{Network: "infra/store", Interface: "net2",
				IPs: []netip.Addr{netip.AddrFrom4([4]byte{192, 168, 1, byte(i + 1)})}})
		}
		s.Pods = append(s.Pods, p)
	}
	return s
}

func TestTenants(t *testing.T) {
	check(t, tenantCluster(), verdicts{
		// Primary: own tenant, mutual peers, the platform both ways; not a one-sided peer.
		"red-a/x red-b/y TCP/80":           true,
		"red-a/x blue-a/x TCP/80":          true,
		"blue-a/x red-a/x UDP/53":          true,
		"green-a/x red-a/x TCP/80":         false,
		"red-a/x green-a/x TCP/80":         false,
		"green-a/x kube-system/dns UDP/53": true,
		"kube-system/dns green-a/x TCP/80": true,
		// Secondary: own tenant and mutual peers only; the platform only meets itself.
		"red-a/x red-b/y TCP/80 shared/lan":                  true,
		"red-a/x blue-a/x IPv6 TCP/80 shared/lan":            true,
		"green-a/x red-a/x TCP/80 shared/lan":                false,
		"red-a/x kube-system/dns UDP/53 shared/lan":          false,
		"kube-system/dns red-a/x ICMP/0 shared/lan":          false,
		"kube-system/dns kube-system/store TCP/1 shared/lan": true,
		// A network no tenant's pod is on has no boundary.
		"kube-system/dns kube-system/store TCP/1 infra/store": true,
		// Not on the network, or not in the family there: no connection.
		"red-a/x kube-system/dns TCP/1 infra/store": false,
		"red-a/x red-b/y IPv6 TCP/80":               false,
	})
}

// A NetworkPolicy applies on the primary network only, a MultiNetworkPolicy only on the
// networks its policy-for annotation names.
func TestPolicyScope(t *testing.T) {
	s := tenantCluster()
	deny := networkPolicy(t, "red-b", `{podSelector: {}, policyTypes: [Ingress]}`)
	s.Policies = []policy.Policy{deny}
	check(t, s, verdicts{"red-a/x red-b/y TCP/80": false, "red-a/x red-b/y TCP/80 shared/lan": true})
	deny.Kind, deny.Networks = policy.KindMultiNetworkPolicy, []policy.NetworkID{"shared/lan"}
	s.Policies = []policy.Policy{deny}
	check(t, s, verdicts{"red-a/x red-b/y TCP/80": true, "red-a/x red-b/y TCP/80 shared/lan": false})
	deny.Networks = []policy.NetworkID{"shared/other"}
	s.Policies = []policy.Policy{deny}
	check(t, s, verdicts{"red-a/x red-b/y TCP/80": true, "red-a/x red-b/y TCP/80 shared/lan": true})
	// Tenants first: a policy cannot open what the tenant boundary closes.
	s.Policies = []policy.Policy{networkPolicy(t, "green-a", `{podSelector: {}, egress: [{}], policyTypes: [Egress]}`)}
	check(t, s, verdicts{"green-a/x red-a/x TCP/80": false})
}
