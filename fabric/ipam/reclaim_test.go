package ipam

import (
	"net/netip"
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPlan(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	old, recent := now.Add(-time.Hour), now.Add(-time.Minute)
	const grace = 10 * time.Minute
	pool := Pool{Name: "default", CIDR: netip.MustParsePrefix("10.244.0.0/16"), BlockSize: 26}
	vtep := Allocation{IP: "10.244.0.1", Owner: Owner{Kind: OwnerNode, Name: "vtep"}, Since: metav1.NewTime(old)}
	noUID := podAlloc("10.244.0.5", "", "c5", old)
	block := func(cidr, node string, created time.Time, allocs ...Allocation) IPBlock {
		b := testBlock(pool, cidr, node, allocs...)
		b.ResourceVersion = "rv-" + cidr
		b.CreationTimestamp = metav1.NewTime(created)
		return b
	}
	ref := func(b IPBlock) BlockRef {
		return BlockRef{Name: b.Name, ResourceVersion: b.ResourceVersion, Pool: "default", CIDR: b.Spec.CIDR, Node: b.Spec.Node}
	}
	live := block("10.244.0.0/26", "a", old, vtep, podAlloc("10.244.0.2", "p2", "c2", old),
		podAlloc("10.244.0.3", "p3", "c3", old), podAlloc("10.244.0.4", "p4", "c4", recent), noUID)
	goneNode := block("10.244.0.64/26", "b", old, podAlloc("10.244.0.65", "p2", "c9", old))
	newNode := block("10.244.0.128/26", "c", recent)
	clean := block("10.244.0.192/26", "a", old, podAlloc("10.244.0.193", "p2", "c10", old))

	tests := []struct {
		name   string
		blocks []IPBlock
		nodes  map[string]bool
		pods   map[string]bool
		want   ReclaimPlan
	}{
		{
			name:   "nothing to do",
			blocks: []IPBlock{clean},
			nodes:  map[string]bool{"a": true},
			pods:   map[string]bool{"p2": true},
		},
		{
			name:   "pods gone",
			blocks: []IPBlock{clean, live},
			nodes:  map[string]bool{"a": true},
			pods:   map[string]bool{"p2": true},
			// p3 is gone; p4 is gone too but younger than the grace; the allocation without
			// a UID and the node's vtep address are never the controller's to release.
			want: ReclaimPlan{Releases: []BlockRelease{{Block: ref(live), Allocations: live.Spec.Allocations[2:3]}}},
		},
		{
			name:   "node gone",
			blocks: []IPBlock{live, goneNode, newNode},
			nodes:  map[string]bool{"a": true},
			pods:   map[string]bool{"p2": true, "p3": true},
			// The block of node c is younger than the grace: c may be too new to be seen.
			want: ReclaimPlan{DeleteBlocks: []BlockRef{ref(goneNode)}},
		},
		{
			name:   "nothing known about nodes and pods",
			blocks: []IPBlock{live, goneNode, newNode, clean},
		},
		{
			name:   "nothing known about pods",
			blocks: []IPBlock{live, goneNode},
			nodes:  map[string]bool{"a": true},
			want:   ReclaimPlan{DeleteBlocks: []BlockRef{ref(goneNode)}},
		},
		{
			name:   "nothing known about nodes",
			blocks: []IPBlock{clean, goneNode},
			pods:   map[string]bool{"p3": true},
			// Sorted by block name.
			want: ReclaimPlan{Releases: []BlockRelease{
				{Block: ref(clean), Allocations: clean.Spec.Allocations},
				{Block: ref(goneNode), Allocations: goneNode.Spec.Allocations},
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Plan(tt.blocks, tt.nodes, tt.pods, now, grace)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Plan() = %+v\nwant %+v", got, tt.want)
			}
			if got.Empty() != (len(tt.want.DeleteBlocks) == 0 && len(tt.want.Releases) == 0) {
				t.Errorf("Empty() = %v", got.Empty())
			}
			if got.Empty() != (got.String() == "nothing") {
				t.Errorf("String() = %q", got.String())
			}
		})
	}
}

func TestReclaimPlanString(t *testing.T) {
	p := ReclaimPlan{
		DeleteBlocks: []BlockRef{{Name: "default.10-244-0-64-26", Node: "b"}},
		Releases:     []BlockRelease{{Block: BlockRef{Name: "default.10-244-0-0-26"}, Allocations: make([]Allocation, 2)}},
	}
	if got, want := p.String(), "delete default.10-244-0-64-26 of node b, release 2 in default.10-244-0-0-26"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
