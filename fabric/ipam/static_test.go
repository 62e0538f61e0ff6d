package ipam_test

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"

	"github.com/loom-cni/loom/fabric/ipam"
	"github.com/loom-cni/loom/fabric/ipam/ipamtest"
)

// TestAllocateAddrTaken checks that an asked-for address is given once: to the first owner
// that asks, again to that owner, and to no one else, whether the other asks for it or for
// any address; and that a refused request leaves nothing allocated.
func TestAllocateAddrTaken(t *testing.T) {
	ctx := context.Background()
	store := ipamtest.NewStore()
	a := newAllocator(t, store, "node-a", nil)
	want := netip.MustParseAddr("10.244.7.10")

	got, block, err := a.AllocateAddr(ctx, clusterPool, pod(1, "net1"), want)
	if err != nil || got != want || block != netip.MustParsePrefix("10.244.7.0/26") {
		t.Fatalf("first request: got %v in %v, %v; want %v in 10.244.7.0/26", got, block, err, want)
	}
	if again, _, againErr := a.AllocateAddr(ctx, clusterPool, pod(1, "net1"), want); againErr != nil || again != want {
		t.Errorf("same owner again: got %v, %v; want %v", again, againErr, want)
	}

	_, _, err = a.AllocateAddr(ctx, clusterPool, pod(2, "net1"), want)
	var taken *ipam.AddressTakenError
	if !errors.Is(err, ipam.ErrAddressTaken) || !errors.As(err, &taken) {
		t.Fatalf("second owner: got %v, want an *AddressTakenError", err)
	}
	if taken.Holder != pod(1, "net1") || taken.Addr != want || taken.Pool != clusterPool.Name || taken.Node != "" {
		t.Errorf("second owner: refusal names %+v, want pod-1's interface net1 holding %s in pool %s on this node",
			taken, want, clusterPool.Name)
	}
	t.Logf("refusal: %v", err)
	if held := a.Lookup(pod(2, "net1").ContainerID, "net1"); len(held) != 0 {
		t.Errorf("refused owner holds %v, want nothing", held)
	}

	// Any-address allocations go around it, from the start of the node's block.
	for i := 3; i < 20; i++ {
		if addr, _ := mustAllocate(t, a, clusterPool, pod(i, "eth0")); addr == want {
			t.Fatalf("pod-%d was given %s, which pod-1 asked for", i, addr)
		}
	}
	// And an address given out that way is as taken as an asked-for one.
	dynamic := a.Lookup(pod(3, "eth0").ContainerID, "eth0")[0]
	if _, _, err := a.AllocateAddr(ctx, clusterPool, pod(2, "net1"), dynamic); !errors.As(err, &taken) || taken.Holder != pod(3, "eth0") {
		t.Errorf("asking for pod-3's address %s: got %v, want a refusal naming pod-3", dynamic, err)
	}
}

// TestAllocateAddrOtherNode checks that a node refuses an address of another node's block:
// naming the holder when there is one, and with ErrOtherNodesBlock when it is free, without
// writing the block.
func TestAllocateAddrOtherNode(t *testing.T) {
	ctx := context.Background()
	store := ipamtest.NewStore()
	b := newAllocator(t, store, "node-b", nil)
	held, block := mustAllocate(t, b, clusterPool, pod(1, "eth0"))
	before, err := store.Get(ctx, ipam.BlockName(clusterPool.Name, block))
	if err != nil {
		t.Fatal(err)
	}

	a := newAllocator(t, store, "node-a", nil)
	_, _, err = a.AllocateAddr(ctx, clusterPool, pod(2, "eth0"), held)
	var taken *ipam.AddressTakenError
	if !errors.As(err, &taken) || taken.Holder != pod(1, "eth0") || taken.Node != "node-b" {
		t.Errorf("address held on node-b: got %v, want a refusal naming pod-1 on node-b", err)
	}
	_, _, err = a.AllocateAddr(ctx, clusterPool, pod(2, "eth0"), held.Next())
	if !errors.Is(err, ipam.ErrOtherNodesBlock) {
		t.Errorf("free address of node-b's block: got %v, want ErrOtherNodesBlock", err)
	}
	after, err := store.Get(ctx, before.Name)
	if err != nil || after.ResourceVersion != before.ResourceVersion {
		t.Errorf("node-b's block was written: resourceVersion %s, was %s (%v)", after.ResourceVersion, before.ResourceVersion, err)
	}
	if got := a.Blocks(); len(got) != 0 {
		t.Errorf("node-a owns blocks %v after refusals, want none", got)
	}
}

// TestAllocateAddrRefusedUpFront checks the addresses refused before anything is written, of
// both families: an IPv6 address (pools are IPv4), and IPv4 addresses the pool never hands out.
func TestAllocateAddrRefusedUpFront(t *testing.T) {
	ctx := context.Background()
	store := ipamtest.NewStore()
	a := newAllocator(t, store, "node-a", nil)
	pool := clusterPool
	pool.Exclude = []netip.Prefix{netip.MustParsePrefix("10.244.9.0/28")}
	for _, c := range []struct {
		addr string
		want error
	}{
		{"2001:db8::10", ipam.ErrIPv6Unsupported},
		{"fd00:244::7", ipam.ErrIPv6Unsupported},
		{"10.245.0.1", ipam.ErrNotInPool},
		{"10.244.0.0", ipam.ErrNotInPool},
		{"10.244.255.255", ipam.ErrNotInPool},
		{"10.244.9.3", ipam.ErrNotInPool},
	} {
		if _, _, err := a.AllocateAddr(ctx, pool, pod(1, "net1"), netip.MustParseAddr(c.addr)); !errors.Is(err, c.want) {
			t.Errorf("ask for %s: got %v, want %v", c.addr, err, c.want)
		}
	}
	if all, err := store.List(ctx, ipam.Filter{}); err != nil || len(all) != 0 {
		t.Errorf("blocks after refusals: %d (%v), want none", len(all), err)
	}
}

// TestAllocateAddrConcurrent has many owners ask for one address at once: exactly one gets it.
func TestAllocateAddrConcurrent(t *testing.T) {
	ctx := context.Background()
	a := newAllocator(t, ipamtest.NewStore(), "node-a", nil)
	want := netip.MustParseAddr("10.244.3.3")
	const n = 16
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, _, errs[i] = a.AllocateAddr(ctx, clusterPool, pod(i, "net1"), want) })
	}
	wg.Wait()
	winners := 0
	for i, err := range errs {
		switch {
		case err == nil:
			winners++
		case !errors.Is(err, ipam.ErrAddressTaken):
			t.Errorf("pod-%d: got %v, want success or ErrAddressTaken", i, err)
		}
	}
	if winners != 1 {
		t.Errorf("%d owners got %s, want exactly one", winners, want)
	}
}
