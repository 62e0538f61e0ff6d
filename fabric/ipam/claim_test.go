package ipam_test

import (
	"context"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/loom-cni/loom/fabric/ipam"
	"github.com/loom-cni/loom/fabric/ipam/ipamtest"
)

// rival returns the IPBlock another node would create to claim block of pool.
func rival(pool ipam.Pool, block netip.Prefix, node string) ipam.IPBlock {
	return ipam.IPBlock{
		ObjectMeta: metaNamed(ipam.BlockName(pool.Name, block), map[string]string{ipam.LabelPool: pool.Name, ipam.LabelNode: node}),
		Spec:       ipam.IPBlockSpec{Pool: pool.Name, CIDR: block.String(), Node: node},
	}
}

func TestClaimCollision(t *testing.T) {
	store := ipamtest.NewStore()
	ctx := context.Background()
	// node-b claims whichever block node-a is about to create, the moment before it does.
	var lost atomic.Int32
	store.BeforeWrite = func(verb, name string) error {
		if verb != ipamtest.VerbCreate || lost.Load() >= 2 {
			return nil
		}
		lost.Add(1)
		_, err := store.Create(ipamtest.Unhooked(ctx), rival(clusterPool, blockOfName(name), "node-b"))
		return err
	}
	a := newAllocator(t, store, "node-a", nil)
	_, block := mustAllocate(t, a, clusterPool, pod(1, "eth0"))
	if lost.Load() != 2 {
		t.Fatalf("node-a lost %d races, want 2", lost.Load())
	}
	blocks := checkStore(t, store)
	if len(blocks) != 3 {
		t.Fatalf("%d blocks, want node-b's two and node-a's one", len(blocks))
	}
	for _, b := range blocks {
		if b.Spec.CIDR == block.String() && b.Spec.Node != "node-a" {
			t.Errorf("node-a allocated in %s, a block of %s", block, b.Spec.Node)
		}
	}
	if got := a.Blocks(); len(got) != 1 || got[0] != block {
		t.Errorf("Blocks() = %v, want [%s]", got, block)
	}
}

func TestClaimOverlappingPools(t *testing.T) {
	store := ipamtest.NewStore()
	ctx := context.Background()
	// Two tenants' pools carved from one cluster CIDR.
	blue := ipam.Pool{Name: "blue", CIDR: clusterPool.CIDR, BlockSize: 26, Tenant: "blue"}
	red := ipam.Pool{Name: "red", CIDR: clusterPool.CIDR, BlockSize: 26, Tenant: "red"}

	// node-b claims the same range for red while node-a's claim for blue is in flight:
	// the names differ, so both Creates succeed, and one of them must give way.
	var raced atomic.Bool
	store.BeforeWrite = func(verb, name string) error {
		if verb != ipamtest.VerbCreate || !strings.HasPrefix(name, "blue.") || !raced.CompareAndSwap(false, true) {
			return nil
		}
		b, err := store.List(ctx, ipam.Filter{})
		if err != nil || len(b) != 0 {
			return err
		}
		suffix := strings.TrimPrefix(name, "blue.")
		_, err = store.Create(ipamtest.Unhooked(ctx), rivalNamed("red."+suffix, red, name, "node-b"))
		return err
	}
	a := newAllocator(t, store, "node-a", nil)
	addr, block := mustAllocate(t, a, blue, pod(1, "eth0"))
	if !raced.Load() {
		t.Fatal("no claim raced")
	}
	blocks := checkStore(t, store)
	if len(blocks) != 2 {
		t.Fatalf("%d blocks, want red's and blue's", len(blocks))
	}
	b := newAllocator(t, store, "node-b", nil)
	redAddr, redBlock := mustAllocate(t, b, red, pod(2, "eth0"))
	if redBlock.Overlaps(block) || redAddr == addr {
		t.Errorf("red got %s in %s, blue %s in %s", redAddr, redBlock, addr, block)
	}
	for _, blk := range checkStore(t, store) {
		if blk.Labels[ipam.LabelTenant] != blk.Spec.Pool {
			t.Errorf("block %s has tenant label %q", blk.Name, blk.Labels[ipam.LabelTenant])
		}
	}
}

// rivalNamed returns the IPBlock of pool named name, for the block that the blue block
// named blueName covers, claimed by node.
func rivalNamed(name string, pool ipam.Pool, blueName, node string) ipam.IPBlock {
	b := rival(pool, blockOfName(blueName), node)
	b.Name = name
	b.Labels[ipam.LabelTenant] = pool.Tenant
	b.Spec.Tenant = pool.Tenant
	return b
}

// blockOfName parses the block out of a block name such as "blue.10-244-0-64-26".
func blockOfName(name string) netip.Prefix {
	parts := strings.Split(name[strings.Index(name, ".")+1:], "-")
	return netip.MustParsePrefix(strings.Join(parts[:4], ".") + "/" + parts[4])
}

func TestBlockDeletedUnderNode(t *testing.T) {
	store := ipamtest.NewStore()
	ctx := context.Background()
	a := newAllocator(t, store, "node-a", nil)
	_, first := mustAllocate(t, a, clusterPool, pod(1, "eth0"))
	// loom-controller took node-a for gone and deleted its block.
	if err := store.Delete(ctx, ipam.BlockName(clusterPool.Name, first), ""); err != nil {
		t.Fatal(err)
	}
	_, second := mustAllocate(t, a, clusterPool, pod(2, "eth0"))
	if got := a.Blocks(); len(got) != 1 || got[0] != second {
		t.Errorf("Blocks() = %v, want only the new %s", got, second)
	}
	if err := a.Release(ctx, "container-1", "eth0"); err != nil {
		t.Errorf("Release from a deleted block = %v, want nil", err)
	}
	checkStore(t, store)
}

func TestLoadSetsAsideOverlappingEmptyBlock(t *testing.T) {
	store := ipamtest.NewStore()
	ctx := context.Background()
	blue := ipam.Pool{Name: "blue", CIDR: clusterPool.CIDR, BlockSize: 26}
	block := netip.MustParsePrefix("10.244.3.0/26")
	// node-b uses the block for blue; node-a's claim of it for default was interrupted.
	used := rival(blue, block, "node-b")
	if _, err := store.Create(ctx, used); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Create(ctx, rival(clusterPool, block, "node-a")); err != nil {
		t.Fatal(err)
	}
	a := newAllocator(t, store, "node-a", nil)
	if got := a.Blocks(); len(got) != 0 {
		t.Errorf("Blocks() = %v, want the overlapping empty block set aside", got)
	}
	if blocks := checkStore(t, store); len(blocks) != 1 || blocks[0].Name != used.Name {
		t.Errorf("store holds %d blocks, want only %s", len(blocks), used.Name)
	}
}

func TestReuseAddressesFreedByController(t *testing.T) {
	store := ipamtest.NewStore()
	ctx := context.Background()
	// One /26 block: 62 usable addresses.
	one := ipam.Pool{Name: "one", CIDR: netip.MustParsePrefix("10.9.0.0/26"), BlockSize: 26}
	a := newAllocator(t, store, "node-a", nil)
	for i := range 62 {
		mustAllocate(t, a, one, pod(i, "eth0"))
	}
	// loom-controller releases the address of pod 7, which was deleted.
	blocks, err := store.List(ctx, ipam.Filter{Pool: "one"})
	if err != nil {
		t.Fatal(err)
	}
	plan := ipam.ReclaimPlan{Releases: []ipam.BlockRelease{{
		Block:       ipam.BlockRef{Name: blocks[0].Name, ResourceVersion: blocks[0].ResourceVersion},
		Allocations: blocks[0].Spec.Allocations[7:8],
	}}}
	if _, err := ipam.Apply(ctx, store, plan); err != nil {
		t.Fatal(err)
	}
	// node-a's copy of the block says it is full; the claim it then attempts re-reads it.
	addr, _ := mustAllocate(t, a, one, pod(100, "eth0"))
	if addr.String() != blocks[0].Spec.Allocations[7].IP {
		t.Errorf("Allocate = %s, want the freed %s", addr, blocks[0].Spec.Allocations[7].IP)
	}
	checkStore(t, store)
}

func metaNamed(name string, labels map[string]string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Labels: labels}
}
