package tenants

import (
	"errors"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// accessDirectory is the cluster the access tests decide in:
//
//	tenant a: namespaces team-a, team-a2; shares infra/shared, infra/file and team-b/b-shared;
//	          VLANs 100-199; SR-IOV pool loom.dev/pool_a, 2 VFs
//	tenant b: namespace team-b; no VLANs, no SR-IOV pools, no VF limit, NET_ADMIN allowed
//	tenants c and d: both select namespace disputed
//	platform: kube-system, infra
func accessDirectory(t *testing.T) *Directory {
	a := tenant(t, "a", func(s *Spec) {
		s.SharedNetworks = []string{"infra/shared", "infra/file", "team-b/b-shared"}
		s.VLANs = []string{"100-199"}
		s.SRIOV = &SRIOVSpec{Pools: []string{"loom.dev/pool_a"}, VFQuota: ptr(2)}
	})
	b := tenant(t, "b", func(s *Spec) { s.AllowNetAdmin = true })
	c := tenant(t, "c", func(s *Spec) { s.NamespaceSelector.MatchLabels = map[string]string{"disputed": "yes"} })
	d := tenant(t, "d", func(s *Spec) { s.NamespaceSelector.MatchLabels = map[string]string{"disputed": "yes"} })
	return NewDirectory([]Tenant{a, b, c, d}, map[string]map[string]string{
		"team-a":      {"tenant": "a"},
		"team-a2":     {"tenant": "a"},
		"team-b":      {"tenant": "b"},
		"disputed":    {"disputed": "yes"},
		"kube-system": {},
		"infra":       {},
	})
}

func net(ref string, vlans ...int) Network {
	ns, name, _ := strings.Cut(ref, "/")
	return Network{Ref: NetworkRef{ns, name}, VLANs: vlans}
}

func withPool(n Network, pool string) Network { n.ResourceName = pool; return n }

func fromNode(n Network) Network { n.NodeConfig = true; return n }

func TestCheckPod(t *testing.T) {
	d := accessDirectory(t)
	tests := []struct {
		name string
		req  PodRequest
		// want is empty when the pod is allowed, else the denial as rendered, in part.
		want       string
		wantNet    string
		wantTenant Name
	}{
		{name: "own NAD", req: PodRequest{Namespace: "team-a", Name: "web", Networks: []Network{net("team-a/net-a", 150)}}},
		{name: "own NAD in another namespace of the tenant", req: PodRequest{Namespace: "team-a", Name: "web", Networks: []Network{net("team-a2/net")}}},
		{name: "namespace left out is the pod's", req: PodRequest{Namespace: "team-a", Name: "web", Networks: []Network{net("/net-a")}}},
		{name: "shared platform NAD", req: PodRequest{Namespace: "team-a", Name: "web", Networks: []Network{net("infra/shared")}}},
		{name: "shared NAD of another tenant", req: PodRequest{Namespace: "team-a", Name: "web", Networks: []Network{net("team-b/b-shared")}}},
		{
			name: "NAD of another tenant", req: PodRequest{Namespace: "team-a", Name: "web", Networks: []Network{net("team-a/ok"), net("team-b/net-b")}},
			want:    "pod team-a/web may not use network team-b/net-b: tenant a: the NAD belongs to namespace team-b of tenant b (fix: add team-b/net-b to spec.sharedNetworks of tenant a",
			wantNet: "team-b/net-b", wantTenant: "a",
		},
		{
			name: "platform NAD not shared", req: PodRequest{Namespace: "team-a", Name: "web", Networks: []Network{net("infra/other")}},
			want:    "pod team-a/web may not use network infra/other: tenant a: the NAD is in namespace infra of the platform and not shared with the tenant",
			wantNet: "infra/other", wantTenant: "a",
		},
		{
			name: "NAD in a namespace unknown to the directory", req: PodRequest{Namespace: "team-a", Name: "web", Networks: []Network{net("new/x")}},
			want: "namespace new of the platform and not shared", wantNet: "new/x", wantTenant: "a",
		},
		{
			name: "NAD in a conflicted namespace", req: PodRequest{Namespace: "team-a", Name: "web", Networks: []Network{net("disputed/x")}},
			want: "namespace disputed, which several tenants (c, d) select", wantNet: "disputed/x", wantTenant: "a",
		},
		{
			name: "VLAN outside the ranges", req: PodRequest{Namespace: "team-a", Name: "web", Networks: []Network{net("team-a/net-a", 150, 300)}},
			want:    "pod team-a/web may not use network team-a/net-a: tenant a: VLAN 300 is outside the tenant's VLANs (100-199) (fix: use a NAD on one of the tenant's VLANs, or add 300 to spec.vlans of tenant a)",
			wantNet: "team-a/net-a", wantTenant: "a",
		},
		{
			name: "VLAN of a shared NAD outside the ranges", req: PodRequest{Namespace: "team-a", Name: "web", Networks: []Network{net("infra/shared", 5)}},
			want: "VLAN 5 is outside the tenant's VLANs (100-199)", wantNet: "infra/shared", wantTenant: "a",
		},
		{name: "no VLAN for a tenant without ranges", req: PodRequest{Namespace: "team-b", Name: "db", Networks: []Network{net("team-b/plain")}}},
		{
			name: "any VLAN for a tenant without ranges", req: PodRequest{Namespace: "team-b", Name: "db", Networks: []Network{net("team-b/v", 10)}},
			want: "pod team-b/db may not use network team-b/v: tenant b: VLAN 10 is outside the tenant's VLANs (none)", wantNet: "team-b/v", wantTenant: "b",
		},
		{name: "own SR-IOV pool", req: PodRequest{Namespace: "team-a", Name: "dpdk", VFs: map[string]int{"loom.dev/pool_a": 2}, Networks: []Network{withPool(net("team-a/vf", 120), "loom.dev/pool_a")}}},
		{
			name: "other SR-IOV pool", req: PodRequest{Namespace: "team-a", Name: "dpdk", Networks: []Network{withPool(net("team-a/vf"), "loom.dev/pool_b")}},
			want:    "pod team-a/dpdk may not use network team-a/vf: tenant a: the NAD uses SR-IOV pool loom.dev/pool_b, which is not one of the tenant's pools (loom.dev/pool_a)",
			wantNet: "team-a/vf", wantTenant: "a",
		},
		{
			name: "SR-IOV for a tenant without pools", req: PodRequest{Namespace: "team-b", Name: "x", Networks: []Network{withPool(net("team-b/vf"), "loom.dev/pool_a")}},
			want:    "not one of the tenant's pools (none) (fix: use a NAD of one of the tenant's pools, or add loom.dev/pool_a to spec.sriov.pools of tenant b)",
			wantNet: "team-b/vf", wantTenant: "b",
		},
		{
			name: "VFs over the quota", req: PodRequest{Namespace: "team-a", Name: "dpdk", VFs: map[string]int{"loom.dev/pool_a": 3}},
			want:       "pod team-a/dpdk is not allowed: tenant a: the pod requests 3 SR-IOV VFs and the tenant's other pods hold 0: 3, more than the tenant's quota of 2 (fix: request at most 2, delete pods of the tenant that hold VFs, or raise spec.sriov.vfQuota of tenant a)",
			wantTenant: "a",
		},
		{
			name: "VFs over the quota with the tenant's other pods", req: PodRequest{Namespace: "team-a", Name: "dpdk", VFs: map[string]int{"loom.dev/pool_a": 1}, HeldVFs: 2},
			want:       "the pod requests 1 SR-IOV VFs and the tenant's other pods hold 2: 3, more than the tenant's quota of 2 (fix: request at most 0,",
			wantTenant: "a",
		},
		{name: "VFs within the quota with the tenant's other pods", req: PodRequest{Namespace: "team-a", Name: "dpdk", VFs: map[string]int{"loom.dev/pool_a": 1}, HeldVFs: 1}},
		{name: "no VFs when the tenant's other pods are over the quota", req: PodRequest{Namespace: "team-a", Name: "web", HeldVFs: 5}},
		{
			name: "VFs of a pool not the tenant's, without a NAD", req: PodRequest{Namespace: "team-b", Name: "x", VFs: map[string]int{"loom.dev/pool_a": 64}},
			want:       "pod team-b/x is not allowed: tenant b: the pod requests 64 VFs of SR-IOV pool loom.dev/pool_a, which is not one of the tenant's pools (none) (fix: request VFs of one of the tenant's pools, or add loom.dev/pool_a to spec.sriov.pools of tenant b)",
			wantTenant: "b",
		},
		{
			name: "NET_ADMIN", req: PodRequest{Namespace: "team-a", Name: "web", NetAdmin: "container app adds NET_ADMIN"},
			want:       "pod team-a/web is not allowed: tenant a: container app adds NET_ADMIN, and tenant pods may not change their own network (fix: remove it, or set spec.allowNetAdmin of tenant a)",
			wantTenant: "a",
		},
		{name: "NET_ADMIN allowed by the tenant", req: PodRequest{Namespace: "team-b", Name: "router", NetAdmin: "hostNetwork"}},
		{
			name: "own NAD configured on the nodes", req: PodRequest{Namespace: "team-a", Name: "web", Networks: []Network{fromNode(net("team-a/file"))}},
			want:    "the NAD has no spec.config and would take a configuration file from the nodes, which a tenant's NAD may not (fix: put the network's configuration in spec.config of team-a/file)",
			wantNet: "team-a/file", wantTenant: "a",
		},
		{name: "shared NAD configured on the nodes", req: PodRequest{Namespace: "team-a", Name: "web", Networks: []Network{fromNode(net("infra/file"))}}},
		{
			name: "pod in a conflicted namespace", req: PodRequest{Namespace: "disputed", Name: "x"},
			want: "pod disputed/x is not allowed: namespace disputed is selected by several tenants (c, d) and belongs to none (fix: change the namespace's labels",
		},
		{name: "platform pod, platform NAD", req: PodRequest{Namespace: "kube-system", Name: "dns", Networks: []Network{net("infra/other", 4000)}}},
		{name: "platform pod, own namespace", req: PodRequest{Namespace: "kube-system", Name: "dns", Networks: []Network{withPool(net("/local"), "loom.dev/pool_z")}, VFs: map[string]int{"loom.dev/pool_z": 9}}},
		{name: "platform pod, NET_ADMIN", req: PodRequest{Namespace: "kube-system", Name: "loomd", NetAdmin: "hostNetwork"}},
		{name: "pod in an unknown namespace is the platform's", req: PodRequest{Namespace: "new", Name: "x", Networks: []Network{net("infra/other")}}},
		{
			name: "platform pod, tenant NAD", req: PodRequest{Namespace: "kube-system", Name: "dns", Networks: []Network{net("infra/x"), net("team-a/net-a")}},
			want:    "pod kube-system/dns may not use network team-a/net-a: tenant a: the NAD is in namespace team-a of tenant a, and a tenant's networks are for its own pods (fix: use a NAD in a namespace of no tenant, or run the pod in a namespace of tenant a)",
			wantNet: "team-a/net-a", wantTenant: "a",
		},
		{
			name: "platform pod, NAD in a conflicted namespace", req: PodRequest{Namespace: "kube-system", Name: "dns", Networks: []Network{net("disputed/x")}},
			want: "pod kube-system/dns may not use network disputed/x: the NAD is in namespace disputed, which tenants c, d select", wantNet: "disputed/x",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := d.CheckPod(tt.req)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("CheckPod() = %v, want allowed", err)
				}
				return
			}
			var denial *Denial
			if !errors.As(err, &denial) {
				t.Fatalf("CheckPod() = %v, want a *Denial", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("CheckPod() = %q\nwant it to contain %q", err, tt.want)
			}
			if pod := tt.req.Namespace + "/" + tt.req.Name; denial.Pod != pod || denial.Network != tt.wantNet || denial.Tenant != tt.wantTenant {
				t.Errorf("denial names pod %q network %q tenant %q, want %q %q %q", denial.Pod, denial.Network, denial.Tenant, pod, tt.wantNet, tt.wantTenant)
			}
			if denial.Rule == "" || denial.Fix == "" || strings.Contains(err.Error(), "\n") {
				t.Errorf("denial %+v lacks a rule or fix, or is not one line", denial)
			}
		})
	}
}

func TestCheckNetwork(t *testing.T) {
	d := accessDirectory(t)
	tests := []struct {
		name string
		n    Network
		want string
	}{
		{name: "tenant NAD on its VLANs", n: net("team-a/net-a", 100, 199)},
		{name: "tenant NAD on its pool", n: withPool(net("team-a/vf"), "loom.dev/pool_a")},
		{
			name: "tenant NAD off its VLANs", n: net("team-a/net-a", 150, 200),
			want: "network team-a/net-a is not allowed: tenant a: VLAN 200 is outside the tenant's VLANs (100-199) (fix: use a NAD on one of the tenant's VLANs, or add 200 to spec.vlans of tenant a)",
		},
		{name: "tenant NAD off its pools", n: withPool(net("team-a/vf"), "loom.dev/pool_b"), want: "network team-a/vf is not allowed: tenant a: the NAD uses SR-IOV pool loom.dev/pool_b"},
		{name: "tenant NAD configured on the nodes", n: fromNode(net("team-b/x")), want: "network team-b/x is not allowed: tenant b: the NAD has no spec.config"},
		{name: "platform NAD", n: withPool(net("infra/trunk", 1, 4094), "loom.dev/any")},
		{name: "platform NAD configured on the nodes", n: fromNode(net("kube-system/x"))},
		{name: "NAD in a conflicted namespace", n: net("disputed/x", 7)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := d.CheckNetwork(tt.n)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("CheckNetwork() = %v, want allowed", err)
				}
				return
			}
			var denial *Denial
			if !errors.As(err, &denial) || denial.Pod != "" || denial.Network != tt.n.Ref.String() {
				t.Fatalf("CheckNetwork() = %#v, want a *Denial for %s", err, tt.n.Ref)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("CheckNetwork() = %q\nwant it to contain %q", err, tt.want)
			}
		})
	}
}

// TestCheckFollowsTheSpec checks decisions end to end from Tenant objects: a pod that asks
// for another tenant's NAD or a VLAN out of range is refused, the same pod in the tenant that
// owns the NAD is not.
func TestCheckFollowsTheSpec(t *testing.T) {
	objects := []*Object{
		{ObjectMeta: metav1.ObjectMeta{Name: "red"}, Spec: Spec{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "red"}},
			VLANs:             []string{"10-19", "bogus"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "blue"}, Spec: Spec{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "blue"}},
			VLANs:             []string{"20-29"},
			NodeResources:     &NodeResourcesSpec{Masters: []string{"eth0"}}}},
	}
	var ts []Tenant
	for _, o := range objects {
		tn, _ := Parse(o)
		ts = append(ts, tn)
	}
	d := NewDirectory(ts, map[string]map[string]string{"red": {"team": "red"}, "blue": {"team": "blue"}})
	blueNet, err := NetworkOf(nad("blue", "net", `{"type":"vlan","master":"eth0","vlanId":25}`, nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.CheckNetwork(blueNet); err != nil {
		t.Errorf("CheckNetwork(blue/net) = %v", err)
	}
	if err := d.CheckPod(PodRequest{Namespace: "blue", Name: "p", Networks: []Network{blueNet}}); err != nil {
		t.Errorf("blue pod on blue/net: %v", err)
	}
	if err := d.CheckPod(PodRequest{Namespace: "red", Name: "p", Networks: []Network{blueNet}}); err == nil {
		t.Error("red pod on blue/net allowed")
	}
	redNet, _ := NetworkOf(nad("red", "net", `{"type":"vlan","master":"eth0","vlanId":25}`, nil))
	if err := d.CheckNetwork(redNet); err == nil {
		t.Error("red NAD on blue's VLAN allowed")
	}
	if err := d.CheckPod(PodRequest{Namespace: "red", Name: "p", Networks: []Network{redNet}}); err == nil {
		t.Error("red pod on VLAN 25 allowed")
	}
}
