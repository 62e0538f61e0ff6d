package ipam_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/loom-cni/loom/fabric/ipam"
	"github.com/loom-cni/loom/fabric/ipam/ipamtest"
)

// recorded returns the address each pod interface holds in store, keyed "container/ifname".
func recorded(t *testing.T, store ipam.Store) map[string]netip.Addr {
	t.Helper()
	out := map[string]netip.Addr{}
	for _, b := range checkStore(t, store) {
		for _, al := range b.Spec.Allocations {
			if al.Owner.Kind == ipam.OwnerPod {
				out[al.Owner.ContainerID+"/"+al.Owner.Ifname] = netip.MustParseAddr(al.IP)
			}
		}
	}
	return out
}

func key(o ipam.Owner) string { return o.ContainerID + "/" + o.Ifname }

// waitQueued waits until n requests of a for pool wait for a batch.
func waitQueued(t *testing.T, a *ipam.Allocator, pool string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for ipam.Queued(a, pool) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests queued, want %d", ipam.Queued(a, pool), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// gate holds the Updates it is asked to until the test lets them go.
type gate struct {
	entered chan int64    // receives the number of each held Update as it starts
	release chan struct{} // one receive lets one held Update go
}

func newGate() *gate { return &gate{entered: make(chan int64), release: make(chan struct{})} }

// hold returns a then hook that holds the Updates whose numbers are in ns.
func (g *gate) hold(ns ...int64) func(n int64, name string) error {
	return func(n int64, name string) error {
		for _, h := range ns {
			if n == h {
				g.entered <- n
				<-g.release
			}
		}
		return nil
	}
}

// result is what one Allocate returned.
type result struct {
	owner ipam.Owner
	addr  netip.Addr
	err   error
}

// allocateAll starts an Allocate for each of owners and returns the channel their results
// arrive on.
func allocateAll(ctx context.Context, a *ipam.Allocator, pool ipam.Pool, owners []ipam.Owner) <-chan result {
	out := make(chan result, len(owners))
	for _, o := range owners {
		go func() {
			addr, _, err := a.Allocate(ctx, pool, o)
			out <- result{o, addr, err}
		}()
	}
	return out
}

func pods(from, to int) []ipam.Owner {
	var out []ipam.Owner
	for i := from; i < to; i++ {
		out = append(out, pod(i, "eth0"))
	}
	return out
}

func TestGroupCommitAllocate(t *testing.T) {
	store := ipamtest.NewStore()
	a := newAllocator(t, store, "node-a", nil)
	slow := &slowWrites{delay: 5 * time.Millisecond}
	store.BeforeWrite = slow.before

	const n = 50
	results := allocateAll(context.Background(), a, clusterPool, pods(0, n))
	seen := map[netip.Addr]string{}
	got := map[string]netip.Addr{}
	for range n {
		r := <-results
		if r.err != nil {
			t.Fatalf("Allocate(%s) = %v", key(r.owner), r.err)
		}
		if prev, dup := seen[r.addr]; dup {
			t.Errorf("%s handed out to %s and %s", r.addr, prev, key(r.owner))
		}
		seen[r.addr] = key(r.owner)
		got[key(r.owner)] = r.addr
	}
	if fmt.Sprint(recorded(t, store)) != fmt.Sprint(got) {
		t.Errorf("the store records %v, but Allocate returned %v", recorded(t, store), got)
	}
	if u := slow.updates.Load(); u > n/5 {
		t.Errorf("%d concurrent allocations took %d Updates, want few", n, u)
	}
	t.Logf("%d concurrent allocations took %d Updates", n, slow.updates.Load())
	if blocks := a.Blocks(); len(blocks) != 1 {
		t.Errorf("the node claimed %v for %d addresses, want one block", blocks, n)
	}
}

func TestGroupCommitMixed(t *testing.T) {
	store := ipamtest.NewStore()
	ctx := context.Background()
	a := newAllocator(t, store, "node-a", nil)
	before := map[string]netip.Addr{}
	for _, o := range pods(0, 40) {
		before[key(o)], _ = mustAllocate(t, a, clusterPool, o)
	}
	slow := &slowWrites{delay: 5 * time.Millisecond}
	store.BeforeWrite = slow.before

	// Pods 0-19 stop, 20-39 are added again, 100-129 start, all at once.
	var wg sync.WaitGroup
	for _, o := range pods(0, 20) {
		wg.Go(func() {
			if err := a.Release(ctx, o.ContainerID, o.Ifname); err != nil {
				t.Errorf("Release(%s) = %v", key(o), err)
			}
		})
	}
	results := allocateAll(ctx, a, clusterPool, append(pods(20, 40), pods(100, 130)...))
	wg.Wait()
	got := map[string]netip.Addr{}
	for range 50 {
		r := <-results
		if r.err != nil {
			t.Fatalf("Allocate(%s) = %v", key(r.owner), r.err)
		}
		if want, ok := before[key(r.owner)]; ok && r.addr != want {
			t.Errorf("Allocate(%s) again = %s, want %s", key(r.owner), r.addr, want)
		}
		got[key(r.owner)] = r.addr
	}
	// checkStore, through recorded, finds any address handed out twice.
	if fmt.Sprint(recorded(t, store)) != fmt.Sprint(got) {
		t.Errorf("the store records %v, want what Allocate returned: %v", recorded(t, store), got)
	}
	if u := slow.updates.Load(); u > 70/4 {
		t.Errorf("20 releases and 50 allocations took %d Updates, want few", u)
	}
	t.Logf("20 releases and 50 allocations took %d Updates", slow.updates.Load())
}

// TestGroupCommitReleaseThenAllocate checks that a release and an allocation for the same
// owner are not made in one batch, where the allocation would find the address the release
// removes.
func TestGroupCommitReleaseThenAllocate(t *testing.T) {
	store := ipamtest.NewStore()
	ctx := context.Background()
	a := newAllocator(t, store, "node-a", nil)
	mustAllocate(t, a, clusterPool, pod(0, "eth0"))
	old, _ := mustAllocate(t, a, clusterPool, pod(1, "eth0"))
	g := newGate()
	store.BeforeWrite = (&slowWrites{then: g.hold(1)}).before

	first := allocateAll(ctx, a, clusterPool, pods(2, 3))
	<-g.entered
	released := make(chan error)
	go func() { released <- a.Release(ctx, "container-1", "eth0") }()
	waitQueued(t, a, clusterPool.Name, 1)
	again := allocateAll(ctx, a, clusterPool, pods(1, 2))
	waitQueued(t, a, clusterPool.Name, 2)
	g.release <- struct{}{}

	if r := <-first; r.err != nil {
		t.Fatal(r.err)
	}
	if err := <-released; err != nil {
		t.Fatal(err)
	}
	r := <-again
	if r.err != nil {
		t.Fatal(r.err)
	}
	if got := recorded(t, store)["container-1/eth0"]; got != r.addr {
		t.Errorf("after a release and an allocation container-1 holds %s (before %s), but Allocate returned %s", got, old, r.addr)
	}
}

func TestGroupCommitConflict(t *testing.T) {
	store := ipamtest.NewStore()
	ctx := context.Background()
	a := newAllocator(t, store, "node-a", nil)
	victim, block := mustAllocate(t, a, clusterPool, pod(0, "eth0"))
	name := ipam.BlockName(clusterPool.Name, block)

	// The first Update is held until the others have queued; just before the second, which
	// carries them all, loom-controller releases the victim's address.
	g := newGate()
	hold := g.hold(1)
	slow := &slowWrites{then: func(n int64, blockName string) error {
		if n != 2 {
			return hold(n, blockName)
		}
		b, err := store.Get(ctx, name)
		if err != nil {
			return err
		}
		b.Spec.Allocations = b.Spec.Allocations[1:]
		_, err = store.Update(ipamtest.Unhooked(ctx), b)
		return err
	}}
	store.BeforeWrite = slow.before

	const n = 30
	results := allocateAll(ctx, a, clusterPool, pods(1, 2))
	<-g.entered
	results2 := allocateAll(ctx, a, clusterPool, pods(2, n+1))
	waitQueued(t, a, clusterPool.Name, n-1)
	g.release <- struct{}{}

	got := map[string]netip.Addr{}
	for _, ch := range []<-chan result{results, results2} {
		for range cap(ch) {
			r := <-ch
			if r.err != nil {
				t.Fatalf("Allocate(%s) = %v", key(r.owner), r.err)
			}
			got[key(r.owner)] = r.addr
		}
	}
	if fmt.Sprint(recorded(t, store)) != fmt.Sprint(got) {
		t.Errorf("after the conflict the store records %v, want what Allocate returned: %v", recorded(t, store), got)
	}
	// The batch was made again on the block as re-read, where the victim's address is free.
	if _, ok := got["container-0/eth0"]; ok {
		t.Error("the victim's allocation came back")
	}
	reused := false
	for _, addr := range got {
		reused = reused || addr == victim
	}
	if !reused {
		t.Errorf("no one got the released %s: %v", victim, got)
	}
	if u := slow.updates.Load(); u != 3 {
		t.Errorf("%d Updates, want 3: one held, one that conflicted and its retry", u)
	}
}

func TestGroupCommitExhaustion(t *testing.T) {
	// Two /28 blocks of 15 usable addresses each.
	small := ipam.Pool{Name: "small", CIDR: netip.MustParsePrefix("192.168.7.0/27"), BlockSize: 28}
	ctx := context.Background()

	t.Run("into a block it claims", func(t *testing.T) {
		store := ipamtest.NewStore()
		a := newAllocator(t, store, "node-a", nil)
		g := newGate()
		slow := &slowWrites{then: g.hold(1)}
		store.BeforeWrite = slow.before
		first := allocateAll(ctx, a, small, pods(0, 1))
		<-g.entered
		rest := allocateAll(ctx, a, small, pods(1, 25))
		waitQueued(t, a, small.Name, 24)
		g.release <- struct{}{}
		got := collect(t, first, rest)
		if len(got) != 25 || len(a.Blocks()) != 2 {
			t.Errorf("%d addresses in blocks %v, want 25 in two", len(got), a.Blocks())
		}
		if fmt.Sprint(recorded(t, store)) != fmt.Sprint(got) {
			t.Errorf("the store records %v, want what Allocate returned: %v", recorded(t, store), got)
		}
		if u := slow.updates.Load(); u != 3 {
			t.Errorf("%d Updates, want 3: one held, one per block for the batch", u)
		}
	})

	t.Run("into more blocks than one claim round", func(t *testing.T) {
		// A batch of 100 needs seven blocks of 15: more than maxClaims, which bounds only
		// claims that serve no one.
		wide := ipam.Pool{Name: "wide", CIDR: netip.MustParsePrefix("192.168.8.0/24"), BlockSize: 28}
		store := ipamtest.NewStore()
		a := newAllocator(t, store, "node-a", nil)
		g := newGate()
		store.BeforeWrite = (&slowWrites{then: g.hold(1)}).before
		first := allocateAll(ctx, a, wide, pods(0, 1))
		<-g.entered
		rest := allocateAll(ctx, a, wide, pods(1, 100))
		waitQueued(t, a, wide.Name, 99)
		g.release <- struct{}{}
		if got := collect(t, first, rest); len(got) != 100 || len(a.Blocks()) != 7 {
			t.Errorf("%d addresses in %d blocks, want 100 in 7", len(got), len(a.Blocks()))
		}
		checkStore(t, store)
	})

	t.Run("into a block it holds, then exhausted", func(t *testing.T) {
		store := ipamtest.NewStore()
		a := newAllocator(t, store, "node-a", nil)
		for _, o := range pods(0, 20) {
			mustAllocate(t, a, small, o)
		}
		// Three addresses free in the first block, ten in the second.
		for _, i := range []int{2, 5, 9} {
			if err := a.Release(ctx, fmt.Sprintf("container-%d", i), "eth0"); err != nil {
				t.Fatal(err)
			}
		}
		g := newGate()
		slow := &slowWrites{then: g.hold(1)}
		store.BeforeWrite = slow.before
		first := allocateAll(ctx, a, small, pods(100, 101))
		<-g.entered
		rest := allocateAll(ctx, a, small, pods(101, 115))
		waitQueued(t, a, small.Name, 14)
		g.release <- struct{}{}

		var ok, exhausted int
		for _, ch := range []<-chan result{first, rest} {
			for range cap(ch) {
				switch r := <-ch; {
				case r.err == nil:
					ok++
				case errors.Is(r.err, ipam.ErrPoolExhausted):
					exhausted++
				default:
					t.Errorf("Allocate(%s) = %v", key(r.owner), r.err)
				}
			}
		}
		if ok != 13 || exhausted != 2 {
			t.Errorf("%d allocated and %d refused as exhausted, want 13 and 2", ok, exhausted)
		}
		if n := len(recorded(t, store)); n != 30 {
			t.Errorf("the pool holds %d addresses, want all 30", n)
		}
		if u := slow.updates.Load(); u != 3 {
			t.Errorf("%d Updates, want 3: one held, one per block for the batch", u)
		}
	})
}

// collect gathers the results of chs, failing on an error.
func collect(t *testing.T, chs ...<-chan result) map[string]netip.Addr {
	t.Helper()
	got := map[string]netip.Addr{}
	for _, ch := range chs {
		for range cap(ch) {
			r := <-ch
			if r.err != nil {
				t.Fatalf("Allocate(%s) = %v", key(r.owner), r.err)
			}
			got[key(r.owner)] = r.addr
		}
	}
	return got
}

func TestGroupCommitSameOwner(t *testing.T) {
	store := ipamtest.NewStore()
	ctx := context.Background()
	a := newAllocator(t, store, "node-a", nil)
	g := newGate()
	slow := &slowWrites{then: g.hold(1)}
	store.BeforeWrite = slow.before

	first := allocateAll(ctx, a, clusterPool, pods(0, 1))
	<-g.entered
	// Ten ADDs of one container interface, one of them with another pod name, among others.
	same := []ipam.Owner{pod(7, "net1")}
	for i := range 10 {
		o := pod(7, "eth0")
		if i == 5 {
			o.Name = "renamed"
		}
		same = append(same, o, pod(100+i, "eth0"))
	}
	rest := allocateAll(ctx, a, clusterPool, same)
	waitQueued(t, a, clusterPool.Name, len(same))
	g.release <- struct{}{}

	<-first
	var addrs []netip.Addr
	for range len(same) {
		r := <-rest
		if r.err != nil {
			t.Fatal(r.err)
		}
		if key(r.owner) == "container-7/eth0" {
			addrs = append(addrs, r.addr)
		}
	}
	held := recorded(t, store)
	for _, addr := range addrs {
		if addr != held["container-7/eth0"] {
			t.Errorf("container-7/eth0 was given %v, want every one the address it holds, %s", addrs, held["container-7/eth0"])
			break
		}
	}
	if held["container-7/net1"] == held["container-7/eth0"] {
		t.Errorf("two interfaces of container-7 share %s", held["container-7/eth0"])
	}
	if u := slow.updates.Load(); u != 2 {
		t.Errorf("%d Updates, want 2", u)
	}
}

func TestGroupCommitCancelledWaiter(t *testing.T) {
	// Two /28 blocks of 15 usable addresses each; the first is filled but for two.
	small := ipam.Pool{Name: "small", CIDR: netip.MustParsePrefix("192.168.7.0/27"), BlockSize: 28}
	store := ipamtest.NewStore()
	ctx := context.Background()
	a := newAllocator(t, store, "node-a", nil)
	for _, o := range pods(100, 113) {
		mustAllocate(t, a, small, o)
	}
	g := newGate()
	slow := &slowWrites{then: g.hold(1, 2)}
	store.BeforeWrite = slow.before

	first := allocateAll(ctx, a, small, pods(1, 2))
	<-g.entered
	// B, first of the next batch, gets the first block's last address and gives up while
	// that write is in flight. C and D, behind it, spill into a block the batch claims after.
	ctxB, cancelB := context.WithCancel(ctx)
	defer cancelB()
	resultB := allocateAll(ctxB, a, small, pods(2, 3))
	waitQueued(t, a, small.Name, 1)
	others := allocateAll(ctx, a, small, pods(3, 5))
	waitQueued(t, a, small.Name, 3)
	g.release <- struct{}{}
	<-g.entered
	cancelB()
	if r := <-resultB; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("Allocate with a cancelled context = %s, %v, want context.Canceled", r.addr, r.err)
	}
	// E gives up while still waiting for a batch.
	ctxE, cancelE := context.WithCancel(ctx)
	resultE := allocateAll(ctxE, a, small, pods(5, 6))
	waitQueued(t, a, small.Name, 1)
	cancelE()
	if r := <-resultE; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("Allocate with a cancelled context = %s, %v, want context.Canceled", r.addr, r.err)
	}
	g.release <- struct{}{}

	if got := collect(t, first, others); len(got) != 3 || len(a.Blocks()) != 2 {
		t.Fatalf("the callers that did not give up got %v in blocks %v", got, a.Blocks())
	}
	// Any write of E's request would have been made before this one.
	mustAllocate(t, a, small, pod(6, "eth0"))
	held := recorded(t, store)
	if _, ok := held["container-5/eth0"]; ok {
		t.Errorf("E, cancelled while waiting, was allocated %s", held["container-5/eth0"])
	}
	// B's allocation was committed and is kept; a retry gets it again.
	b, ok := held["container-2/eth0"]
	if !ok {
		t.Fatal("B's allocation, in a write that went through, is not recorded")
	}
	if again, _ := mustAllocate(t, a, small, pod(2, "eth0")); again != b {
		t.Errorf("B's retry got %s, want the address it holds, %s", again, b)
	}
}

func TestGroupCommitWriteError(t *testing.T) {
	store := ipamtest.NewStore()
	ctx := context.Background()
	a := newAllocator(t, store, "node-a", nil)
	for _, o := range pods(0, 3) {
		mustAllocate(t, a, clusterPool, o)
	}
	g := newGate()
	broken := errors.New("etcd is on fire")
	hold := g.hold(1)
	slow := &slowWrites{then: func(n int64, name string) error {
		if n == 2 {
			return broken
		}
		return hold(n, name)
	}}
	store.BeforeWrite = slow.before

	first := allocateAll(ctx, a, clusterPool, pods(10, 11))
	<-g.entered
	failing := allocateAll(ctx, a, clusterPool, pods(11, 16))
	releases := make(chan error, 3)
	for _, o := range pods(0, 3) {
		go func() { releases <- a.Release(ctx, o.ContainerID, o.Ifname) }()
	}
	waitQueued(t, a, clusterPool.Name, 8)
	g.release <- struct{}{}

	collect(t, first)
	for range cap(failing) {
		if r := <-failing; !errors.Is(r.err, broken) {
			t.Errorf("Allocate(%s) in a failed write = %s, %v, want the failure", key(r.owner), r.addr, r.err)
		}
	}
	for range 3 {
		if err := <-releases; !errors.Is(err, broken) {
			t.Errorf("Release in a failed write = %v, want the failure", err)
		}
	}
	held := recorded(t, store)
	if len(held) != 4 {
		t.Errorf("after the failed write the store records %v, want pods 0-2 and 10", held)
	}
	store.BeforeWrite = nil
	mustAllocate(t, a, clusterPool, pod(11, "eth0"))
}
