package main

import (
	"context"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/loom-cni/loom/policy"
)

func TestSynthesize(t *testing.T) {
	for _, sh := range []shape{
		{tenants: 1000, pods: 10000, nodes: 100},
		{tenants: 10, pods: 95, nodes: 7},
	} {
		c, err := synthesize(sh)
		if err != nil {
			t.Fatal(err)
		}
		s := c.snap
		if len(s.Tenants) != sh.tenants || len(s.Pods) != sh.pods || len(s.Policies) != sh.tenants || len(s.Hosts) != sh.nodes {
			t.Fatalf("%+v: %d tenants, %d pods, %d policies, %d hosts", sh, len(s.Tenants), len(s.Pods), len(s.Policies), len(s.Hosts))
		}
		blocks := map[string]netip.Prefix{}
		withBlocks := 0
		for _, tt := range s.Tenants {
			if len(tt.Blocks) == 1 {
				blocks[tt.Name] = tt.Blocks[0]
				withBlocks++
			}
		}
		if withBlocks != (sh.tenants+1)/2 {
			t.Errorf("%+v: %d tenants with a block, want half", sh, withBlocks)
		}
		for _, p := range s.Policies {
			if len(p.Problems) > 0 {
				t.Errorf("policy %s/%s: %v", p.Namespace, p.Name, p.Problems)
			}
		}
		seen := map[netip.Addr]policy.PodKey{}
		nodes := map[string]int{}
		for _, p := range s.Pods {
			ip := p.Endpoints[0].IPs[0]
			if other, dup := seen[ip]; dup {
				t.Fatalf("%s and %s share %s", other, p.PodKey, ip)
			}
			seen[ip] = p.PodKey
			nodes[p.Node]++
			if b, ok := blocks[p.Tenant]; ok && !b.Contains(ip) {
				t.Errorf("pod %s of %s at %s: outside its tenant's block %s", p.PodKey, p.Tenant, ip, b)
			}
			if _, ok := blocks[p.Tenant]; !ok && !defaultPool.Contains(ip) {
				t.Errorf("pod %s of %s at %s: outside the default pool %s", p.PodKey, p.Tenant, ip, defaultPool)
			}
			if !slices.ContainsFunc(s.ClusterCIDRs, func(c netip.Prefix) bool { return c.Contains(ip) }) {
				t.Errorf("pod %s at %s: outside the cluster CIDR", p.PodKey, ip)
			}
		}
		if len(nodes) != sh.nodes || nodes[benchNode] < sh.pods/sh.nodes {
			t.Errorf("%+v: pods on %d nodes, %d on %s", sh, len(nodes), nodes[benchNode], benchNode)
		}
	}
}

func TestSynthesizeIsDeterministic(t *testing.T) {
	sh := shape{tenants: 20, pods: 200, nodes: 10}
	a, err := synthesize(sh)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := synthesize(sh)
	if !reflect.DeepEqual(a.snap, b.snap) {
		t.Error("two clusters of the same shape differ")
	}
	if !reflect.DeepEqual(a.extraPod(3), b.extraPod(3)) {
		t.Error("two extra pods of the same number differ")
	}
}

func TestBenchNodeTable(t *testing.T) {
	c, err := synthesize(shape{tenants: 100, pods: 1000, nodes: 10})
	if err != nil {
		t.Fatal(err)
	}
	local := c.localPods(benchNode)
	if len(local) != 100 {
		t.Fatalf("%d pods on %s, want 100", len(local), benchNode)
	}
	rs := policy.Compile(c.snap, benchNode)
	if len(rs.Host.Endpoints) != len(local) {
		t.Errorf("%d endpoints in %s's table, want one per local pod, %d", len(rs.Host.Endpoints), benchNode, len(local))
	}
	// The extra pods must not collide with the cluster's, nor with one another.
	ips := map[netip.Addr]bool{}
	for _, p := range c.snap.Pods {
		ips[p.Endpoints[0].IPs[0]] = true
	}
	for i := range 10 {
		ip := c.extraPod(i).Pod.Endpoints[0].IPs[0]
		if ips[ip] {
			t.Errorf("extra pod %d at %s: taken", i, ip)
		}
		ips[ip] = true
	}
}

func TestShapeValidate(t *testing.T) {
	for _, tc := range []struct {
		shape shape
		ok    bool
	}{
		{shape{1000, 10000, 100}, true},
		{shape{3, 10, 1}, false},
		{shape{10, 10 * (maxPodsPerTenant + 1), 10}, false},
		{shape{10, 100, 0}, false},
		{shape{10, 100, 300}, false},
	} {
		if err := tc.shape.validate(); (err == nil) != tc.ok {
			t.Errorf("validate(%+v) = %v, want ok %v", tc.shape, err, tc.ok)
		}
	}
}

func TestMeasureRoundsAlternates(t *testing.T) {
	var state int
	sides := []side{
		{"zero", func(context.Context) error { state = 0; return nil }},
		{"one", func(context.Context) error { state = 1; return nil }},
		{"two", func(context.Context) error { state = 2; return nil }},
	}
	var order []int
	figures, err := measureRounds(t.Context(), 3, sides, func(context.Context) (float64, error) {
		order = append(order, state)
		return float64(10*state + len(order)), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{0, 1, 2, 2, 1, 0, 0, 1, 2}; !slices.Equal(order, want) {
		t.Errorf("sides measured in order %v, want %v", order, want)
	}
	if want := [][]float64{{1, 6, 7}, {12, 15, 18}, {23, 24, 29}}; !reflect.DeepEqual(figures, want) {
		t.Errorf("figures = %v, want %v", figures, want)
	}
}
