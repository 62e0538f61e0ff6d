package ipam_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/loom-cni/loom/fabric/ipam"
	"github.com/loom-cni/loom/fabric/ipam/ipamtest"
)

var clusterPool = ipam.Pool{Name: "default", CIDR: netip.MustParsePrefix("10.244.0.0/16"), BlockSize: 26}

func pod(n int, ifname string) ipam.Owner {
	return ipam.Owner{
		Kind: ipam.OwnerPod, Namespace: "ns", Name: fmt.Sprintf("pod-%d", n), UID: fmt.Sprintf("uid-%d", n),
		ContainerID: fmt.Sprintf("container-%d", n), Ifname: ifname,
	}
}

// clock is a settable time for the allocator's now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newAllocator(t *testing.T, store ipam.Store, node string, now func() time.Time) *ipam.Allocator {
	t.Helper()
	a := ipam.NewAllocator(store, node, nil, now)
	if err := a.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	return a
}

func mustAllocate(t *testing.T, a *ipam.Allocator, pool ipam.Pool, owner ipam.Owner) (netip.Addr, netip.Prefix) {
	t.Helper()
	addr, block, err := a.Allocate(context.Background(), pool, owner)
	if err != nil {
		t.Fatalf("Allocate(%s, %+v) = %v", pool.Name, owner, err)
	}
	if !block.Contains(addr) || !pool.Usable(addr) {
		t.Fatalf("Allocate(%s, %+v) = %s in %s, not a usable address of its block", pool.Name, owner, addr, block)
	}
	return addr, block
}

// checkStore checks the invariants of the blocks in store: no two blocks overlap, every
// allocation lies in its block, and no address or owner key is allocated twice.
func checkStore(t *testing.T, store ipam.Store) []ipam.IPBlock {
	t.Helper()
	blocks, err := store.List(context.Background(), ipam.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	addrs := map[string]string{}
	keys := map[string]string{}
	for i, b := range blocks {
		prefix, err := b.Spec.Prefix()
		if err != nil {
			t.Fatal(err)
		}
		for _, other := range blocks[i+1:] {
			if op, _ := other.Spec.Prefix(); op.Overlaps(prefix) {
				t.Errorf("blocks %s and %s overlap", b.Name, other.Name)
			}
		}
		for _, al := range b.Spec.Allocations {
			if !prefix.Contains(netip.MustParseAddr(al.IP)) {
				t.Errorf("allocation %s is outside its block %s", al.IP, b.Name)
			}
			if prev, dup := addrs[al.IP]; dup {
				t.Errorf("%s is allocated twice: in %s and %s", al.IP, prev, b.Name)
			}
			addrs[al.IP] = b.Name
			key := fmt.Sprintf("%s/%s/%s/%s/%s", b.Spec.Pool, al.Owner.Kind, al.Owner.ContainerID, al.Owner.Ifname, al.Owner.Name)
			if prev, dup := keys[key]; dup {
				t.Errorf("%s holds two addresses: %s and %s", key, prev, al.IP)
			}
			keys[key] = al.IP
		}
	}
	return blocks
}

func TestAllocateIdempotent(t *testing.T) {
	store := ipamtest.NewStore()
	a := newAllocator(t, store, "node-a", nil)

	first, block := mustAllocate(t, a, clusterPool, pod(1, "eth0"))
	if again, againBlock := mustAllocate(t, a, clusterPool, pod(1, "eth0")); again != first || againBlock != block {
		t.Errorf("second Allocate = %s in %s, want %s in %s", again, againBlock, first, block)
	}
	// The key is the container interface, whatever else the owner says.
	renamed := pod(1, "eth0")
	renamed.Name = "other"
	if again, _ := mustAllocate(t, a, clusterPool, renamed); again != first {
		t.Errorf("Allocate with the same container and interface = %s, want %s", again, first)
	}
	if net1, _ := mustAllocate(t, a, clusterPool, pod(1, "net1")); net1 == first {
		t.Errorf("another interface of the container got the same address %s", net1)
	}
	vtep := ipam.Owner{Kind: ipam.OwnerNode, Name: "vtep"}
	v1, _ := mustAllocate(t, a, clusterPool, vtep)
	if v2, _ := mustAllocate(t, a, clusterPool, vtep); v2 != v1 {
		t.Errorf("node address vtep = %s then %s", v1, v2)
	}
	// Another pool is another address.
	other := ipam.Pool{Name: "other", CIDR: netip.MustParsePrefix("10.96.0.0/16"), BlockSize: 26}
	if o, _ := mustAllocate(t, a, other, pod(1, "eth0")); !other.CIDR.Contains(o) {
		t.Errorf("Allocate from pool other = %s", o)
	}
	if blocks := checkStore(t, store); len(blocks) != 2 {
		t.Errorf("%d blocks, want one per pool", len(blocks))
	}
}

func TestAllocateLowestFreeAndReuse(t *testing.T) {
	store := ipamtest.NewStore()
	a := newAllocator(t, store, "node-a", nil)
	ctx := context.Background()

	var got []netip.Addr
	for i := range 3 {
		addr, _ := mustAllocate(t, a, clusterPool, pod(i, "eth0"))
		got = append(got, addr)
	}
	if got[1] != got[0].Next() || got[2] != got[1].Next() {
		t.Errorf("addresses %v, want consecutive ones", got)
	}
	if err := a.Release(ctx, "container-1", "eth0"); err != nil {
		t.Fatal(err)
	}
	if reused, _ := mustAllocate(t, a, clusterPool, pod(9, "eth0")); reused != got[1] {
		t.Errorf("after releasing %s the next address is %s, want it again", got[1], reused)
	}
}

func TestAllocateInvalid(t *testing.T) {
	a := newAllocator(t, ipamtest.NewStore(), "node-a", nil)
	ctx := context.Background()
	v6 := ipam.Pool{Name: "v6", CIDR: netip.MustParsePrefix("fd00::/64")}
	if _, _, err := a.Allocate(ctx, v6, pod(1, "eth0")); !errors.Is(err, ipam.ErrIPv6Unsupported) {
		t.Errorf("Allocate from an IPv6 pool = %v, want ErrIPv6Unsupported", err)
	}
	for _, owner := range []ipam.Owner{
		{Kind: ipam.OwnerPod, Name: "p", ContainerID: "c"},
		{Kind: ipam.OwnerPod, Name: "p", Ifname: "eth0"},
		{Kind: ipam.OwnerNode},
		{Kind: "vm", Name: "x"},
	} {
		if _, _, err := a.Allocate(ctx, clusterPool, owner); err == nil {
			t.Errorf("Allocate for %+v succeeded", owner)
		}
	}
	long := ipam.NewAllocator(ipamtest.NewStore(), strings.Repeat("n", 64), nil, nil)
	if _, _, err := long.Allocate(ctx, clusterPool, pod(1, "eth0")); err == nil {
		t.Error("a node whose name is no label value claimed a block")
	}
}

func TestAllocateConcurrentNodes(t *testing.T) {
	store := ipamtest.NewStore()
	ctx := context.Background()
	nodes := []*ipam.Allocator{newAllocator(t, store, "node-a", nil), newAllocator(t, store, "node-b", nil)}
	const perNode, workers = 150, 6
	var mu sync.Mutex
	seen := map[netip.Addr]string{}
	var wg sync.WaitGroup
	errs := make(chan error, len(nodes)*workers)
	for n, a := range nodes {
		for w := range workers {
			wg.Go(func() {
				for i := w; i < perNode; i += workers {
					owner := pod(n*1000+i, "eth0")
					addr, _, err := a.Allocate(ctx, clusterPool, owner)
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					if prev, dup := seen[addr]; dup {
						errs <- fmt.Errorf("%s handed out to %s and %s", addr, prev, owner.ContainerID)
					}
					seen[addr] = owner.ContainerID
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(seen) != len(nodes)*perNode {
		t.Errorf("%d addresses handed out, want %d", len(seen), len(nodes)*perNode)
	}
	for _, b := range checkStore(t, store) {
		if b.Labels[ipam.LabelNode] != b.Spec.Node || b.Labels[ipam.LabelPool] != clusterPool.Name {
			t.Errorf("block %s has labels %v", b.Name, b.Labels)
		}
	}
	// 150 addresses are three blocks of 62 or 64.
	for _, a := range nodes {
		if n := len(a.Blocks()); n != 3 {
			t.Errorf("a node holds %d blocks for %d addresses, want 3", n, perNode)
		}
	}
}

func TestAllocateExhausted(t *testing.T) {
	store := ipamtest.NewStore()
	ctx := context.Background()
	// Four /30 blocks of 4 addresses; the pool's network and broadcast addresses leave 14.
	small := ipam.Pool{Name: "small", CIDR: netip.MustParsePrefix("192.168.7.0/28"), BlockSize: 30}
	a := newAllocator(t, store, "node-a", nil)
	b := newAllocator(t, store, "node-b", nil)
	_, bBlock := mustAllocate(t, b, small, pod(100, "eth0"))
	bFree := len(slices.Collect(small.Addrs(bBlock))) - 1

	var err error
	allocated := 0
	for i := 0; err == nil && i < 20; i++ {
		if _, _, err = a.Allocate(ctx, small, pod(i, "eth0")); err == nil {
			allocated++
		}
	}
	if !errors.Is(err, ipam.ErrPoolExhausted) {
		t.Fatalf("Allocate from a full pool = %v, want ErrPoolExhausted", err)
	}
	// node-a filled the three other blocks and left node-b's free addresses alone.
	if want := 14 - 1 - bFree; allocated != want || len(a.Blocks()) != 3 {
		t.Errorf("node-a allocated %d addresses in %d blocks, want %d in 3", allocated, len(a.Blocks()), want)
	}
	// The message is for a person: it names the pool and its range.
	if msg := err.Error(); !strings.Contains(msg, `"small"`) || !strings.Contains(msg, "192.168.7.0/28") {
		t.Errorf("exhaustion error %q does not name the pool and its CIDR", msg)
	}
	// What node-a releases it can hand out again.
	if err := a.Release(ctx, "container-4", "eth0"); err != nil {
		t.Fatal(err)
	}
	mustAllocate(t, a, small, pod(50, "eth0"))
	checkStore(t, store)
}

func TestLoadAfterRestart(t *testing.T) {
	store := ipamtest.NewStore()
	ctx := context.Background()
	before := newAllocator(t, store, "node-a", nil)
	want := map[string]netip.Addr{}
	for i := range 70 {
		addr, _ := mustAllocate(t, before, clusterPool, pod(i, "eth0"))
		want[pod(i, "eth0").ContainerID] = addr
	}
	vtep, _ := mustAllocate(t, before, clusterPool, ipam.Owner{Kind: ipam.OwnerNode, Name: "vtep"})
	other := newAllocator(t, store, "node-b", nil)
	mustAllocate(t, other, clusterPool, pod(1000, "eth0"))

	after := newAllocator(t, store, "node-a", nil)
	if got, want := after.Blocks(), before.Blocks(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after a restart Blocks() = %v, want %v", got, want)
	}
	for i := range 70 {
		owner := pod(i, "eth0")
		if addr, _ := mustAllocate(t, after, clusterPool, owner); addr != want[owner.ContainerID] {
			t.Errorf("after a restart %s got %s, want %s", owner.ContainerID, addr, want[owner.ContainerID])
		}
	}
	if addr, _ := mustAllocate(t, after, clusterPool, ipam.Owner{Kind: ipam.OwnerNode, Name: "vtep"}); addr != vtep {
		t.Errorf("after a restart the vtep address is %s, want %s", addr, vtep)
	}
	if err := after.Release(ctx, "container-3", "eth0"); err != nil {
		t.Fatal(err)
	}
	if addr, _ := mustAllocate(t, after, clusterPool, pod(500, "eth0")); addr != want["container-3"] {
		t.Errorf("after a restart the released %s was not reused: got %s", want["container-3"], addr)
	}
	usage := after.Usage()
	if len(usage) != 1 || usage[0] != (ipam.PoolUsage{Pool: "default", Blocks: 2, Addresses: 128, InUse: 71}) {
		t.Errorf("Usage() = %+v", usage)
	}
	checkStore(t, store)
}

func TestRelease(t *testing.T) {
	store := ipamtest.NewStore()
	ctx := context.Background()
	a := newAllocator(t, store, "node-a", nil)
	if err := a.Release(ctx, "never-seen", "eth0"); err != nil {
		t.Errorf("Release of nothing = %v, want nil", err)
	}
	if err := a.ReleaseNode(ctx, "default", "vtep"); err != nil {
		t.Errorf("ReleaseNode of nothing = %v, want nil", err)
	}
	other := ipam.Pool{Name: "other", CIDR: netip.MustParsePrefix("10.96.0.0/24"), BlockSize: 26}
	mustAllocate(t, a, clusterPool, pod(1, "eth0"))
	mustAllocate(t, a, other, pod(1, "eth0"))
	keep, _ := mustAllocate(t, a, clusterPool, pod(1, "net1"))
	mustAllocate(t, a, clusterPool, ipam.Owner{Kind: ipam.OwnerNode, Name: "vtep"})

	if got := a.Lookup("container-1", "eth0"); len(got) != 2 {
		t.Errorf("Lookup() = %v, want an address in each pool", got)
	}
	// A container interface's addresses go in every pool at once.
	if err := a.Release(ctx, "container-1", "eth0"); err != nil {
		t.Fatal(err)
	}
	if got := a.Lookup("container-1", "eth0"); len(got) != 0 {
		t.Errorf("after Release, Lookup() = %v", got)
	}
	if err := a.Release(ctx, "container-1", "eth0"); err != nil {
		t.Errorf("second Release = %v, want nil", err)
	}
	if err := a.ReleaseNode(ctx, "default", "vtep"); err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, b := range checkStore(t, store) {
		for _, al := range b.Spec.Allocations {
			left = append(left, al.IP)
		}
	}
	if len(left) != 1 || left[0] != keep.String() {
		t.Errorf("after releasing, the blocks hold %v, want only %s", left, keep)
	}

	// A failure in one block does not stop the release in the others.
	mustAllocate(t, a, clusterPool, pod(2, "eth0"))
	mustAllocate(t, a, other, pod(2, "eth0"))
	broken := errors.New("etcd is on fire")
	store.BeforeWrite = func(verb, name string) error {
		if strings.HasPrefix(name, "other.") {
			return broken
		}
		return nil
	}
	if err := a.Release(ctx, "container-2", "eth0"); !errors.Is(err, broken) {
		t.Errorf("Release with a failing block = %v, want the failure", err)
	}
	store.BeforeWrite = nil
	for _, b := range checkStore(t, store) {
		for _, al := range b.Spec.Allocations {
			if al.Owner.ContainerID == "container-2" && b.Spec.Pool == "default" {
				t.Errorf("%s was not released from the block that did not fail", al.IP)
			}
		}
	}
}

func TestReconcile(t *testing.T) {
	store := ipamtest.NewStore()
	ctx := context.Background()
	clk := &clock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	a := newAllocator(t, store, "node-a", clk.now)
	for i := range 4 {
		mustAllocate(t, a, clusterPool, pod(i, "eth0"))
	}
	vtep, _ := mustAllocate(t, a, clusterPool, ipam.Owner{Kind: ipam.OwnerNode, Name: "vtep"})
	clk.advance(10 * time.Minute)
	young, _ := mustAllocate(t, a, clusterPool, pod(4, "eth0"))
	clk.advance(time.Minute)

	// The runtime knows containers 0 and 2; 4 is gone but younger than the grace.
	live := func(id string) bool { return id == "container-0" || id == "container-2" }
	released, err := a.Reconcile(ctx, live, 5*time.Minute)
	if err != nil || released != 2 {
		t.Fatalf("Reconcile() = %d, %v, want 2 released", released, err)
	}
	var left []string
	for _, b := range checkStore(t, store) {
		for _, al := range b.Spec.Allocations {
			left = append(left, al.Owner.ContainerID+al.Owner.Name)
		}
	}
	if fmt.Sprint(left) != "[container-0pod-0 container-2pod-2 vtep container-4pod-4]" {
		t.Errorf("after Reconcile the block holds %v (vtep %s, young %s)", left, vtep, young)
	}
	if released, err := a.Reconcile(ctx, live, 5*time.Minute); err != nil || released != 0 {
		t.Errorf("second Reconcile() = %d, %v, want nothing to do", released, err)
	}
}

func TestConflictRetry(t *testing.T) {
	store := ipamtest.NewStore()
	ctx := context.Background()
	a := newAllocator(t, store, "node-a", nil)
	first, block := mustAllocate(t, a, clusterPool, pod(1, "eth0"))
	name := ipam.BlockName(clusterPool.Name, block)

	// loom-controller releases container-1's address just before node-a writes the block.
	var interfered atomic.Bool
	store.BeforeWrite = func(verb, n string) error {
		if verb != ipamtest.VerbUpdate || n != name || !interfered.CompareAndSwap(false, true) {
			return nil
		}
		b, err := store.Get(ctx, name)
		if err != nil {
			return err
		}
		b.Spec.Allocations = nil
		_, err = store.Update(ipamtest.Unhooked(ctx), b)
		return err
	}
	second, _ := mustAllocate(t, a, clusterPool, pod(2, "eth0"))
	if !interfered.Load() {
		t.Fatal("no write interfered")
	}
	// After re-reading the block node-a sees the released address free again.
	if second != first {
		t.Errorf("after the conflict Allocate = %s, want the released %s", second, first)
	}
	blocks := checkStore(t, store)
	if len(blocks) != 1 || len(blocks[0].Spec.Allocations) != 1 || blocks[0].Spec.Allocations[0].Owner.ContainerID != "container-2" {
		t.Errorf("after the conflict the store holds %+v", blocks)
	}

	// A block that conflicts on every write is given up on, with the conflict.
	store.BeforeWrite = func(verb, n string) error {
		if verb == ipamtest.VerbUpdate && n == name {
			return apierrors.NewConflict(ipam.GVR.GroupResource(), n, errors.New("the object has been modified"))
		}
		return nil
	}
	_, _, err := a.Allocate(ctx, clusterPool, pod(3, "eth0"))
	if !apierrors.IsConflict(err) {
		t.Errorf("Allocate with endless conflicts = %v, want a conflict", err)
	}
}
