package ipam

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

const (
	// maxWriteAttempts bounds how often one change to a block is retried after conflicts.
	// Only the owning node adds allocations and loom-controller only removes them, so more
	// than a couple of conflicts in a row means something is wrong.
	maxWriteAttempts = 8
	// maxClaims bounds how many blocks one batch of allocations claims in a row when claimed
	// blocks keep being deleted or filled before it can use them.
	maxClaims = 4
)

// Errors that tell a writer how a conflicting write ended; they never leave the package.
var (
	// errStale: the block was re-read after a conflict; recompute the change and retry.
	errStale = errors.New("block changed")
	// errGone: the block was deleted or is no longer this node's; it has been forgotten.
	errGone = errors.New("block gone")
)

// Allocator hands out the addresses of one node. It owns the node's blocks: it alone adds
// allocations to them, claims new ones when they are full, and keeps the last version of
// each it read or wrote. It is safe for concurrent use. Writes to one block are serialised.
// Allocate, Release and ReleaseNode calls are made in batches, one batch of a pool at a time
// (batch.go): calls that come together share writes, and concurrent ADDs never claim two
// blocks where one would do.
type Allocator struct {
	store Store
	node  string
	log   *slog.Logger
	now   func() time.Time

	mu     sync.Mutex
	blocks map[string]*block // the node's blocks by name, guarded by mu
	queues map[string]*queue // per pool, the requests waiting for a batch; guarded by mu
}

// block is one of the node's blocks. mu serialises writes to it; mu is never acquired
// while Allocator.mu is held.
type block struct {
	name   string
	pool   string
	prefix netip.Prefix

	mu   sync.Mutex
	obj  IPBlock // the last version read or written; set it with setObj
	gone bool    // deleted, or taken over by another node
	// allocated is len(obj.Spec.Allocations), readable without mu: Usage must not wait
	// for a write to the API server.
	allocated atomic.Int64
	// seq counts the changes of obj by writes, so that a List that started after the last
	// of them may replace obj and one that did not is ignored.
	seq atomic.Uint64
}

// setObj makes obj the block's last known version, with b.mu held (or b not yet shared).
func (b *block) setObj(obj IPBlock) {
	b.obj = obj
	b.allocated.Store(int64(len(obj.Spec.Allocations)))
}

// NewAllocator returns the allocator of node, keeping blocks in store. A nil log discards
// messages; a nil now uses time.Now. Call Load before the first Allocate.
func NewAllocator(store Store, node string, log *slog.Logger, now func() time.Time) *Allocator {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	return &Allocator{
		store:  store,
		node:   node,
		log:    log.With("node", node),
		now:    now,
		blocks: map[string]*block{},
		queues: map[string]*queue{},
	}
}

// Load reads the node's blocks from the store, so that after a restart every allocation is
// known again and Allocate returns the address a container already holds. It reads every
// block of the cluster, to set aside an empty block of the node that overlaps another
// block: a claim interrupted before it made sure it had not raced another pool.
func (a *Allocator) Load(ctx context.Context) error {
	seqs := a.seqs()
	all, err := a.store.List(ctx, Filter{})
	if err != nil {
		return fmt.Errorf("load blocks of node %s: %w", a.node, err)
	}
	seen := map[string]bool{}
	for _, obj := range a.usable(ctx, all) {
		seen[obj.Name] = true
		a.observe(obj, seqs)
	}
	for _, b := range a.snapshot(func(b *block) bool { return !seen[b.name] }) {
		b.mu.Lock()
		a.forget(b, "no longer in the store")
		b.mu.Unlock()
	}
	return nil
}

// Allocate returns an address of pool for owner, and the block it is in. It is idempotent:
// a pod interface (container ID and interface name) or a node's named address that already
// has an address of the pool gets that address again. It takes the lowest free address of
// the node's blocks of the pool, and claims a new block when they are full; when no block
// is free either, its error wraps ErrPoolExhausted.
//
// Concurrent calls share writes (batch.go). When ctx ends before the address is known,
// Allocate returns ctx's error, but the address may have been allocated all the same; it is
// not released, so that a retry for the same owner gets it again.
func (a *Allocator) Allocate(ctx context.Context, pool Pool, owner Owner) (netip.Addr, netip.Prefix, error) {
	pool = pool.WithDefaults()
	if err := pool.Validate(); err != nil {
		return netip.Addr{}, netip.Prefix{}, fmt.Errorf("allocate an address: %w", err)
	}
	if err := owner.validate(); err != nil {
		return netip.Addr{}, netip.Prefix{}, fmt.Errorf("allocate from pool %q: %w", pool.Name, err)
	}
	r := newRequest(ctx, owner, false)
	r.pool = pool
	a.submit(pool.Name, r)
	if err := r.wait(ctx); err != nil {
		return netip.Addr{}, netip.Prefix{}, fmt.Errorf("allocate from pool %q: %w", pool.Name, err)
	}
	if err := errors.Join(r.errs...); err != nil {
		return netip.Addr{}, netip.Prefix{}, err
	}
	return r.addr, r.prefix, nil
}

// Release releases every address of a pod interface in the node's blocks, of any pool. An
// interface that holds no address is not an error; a failure in one block does not keep
// the others from being released.
func (a *Allocator) Release(ctx context.Context, containerID, ifname string) error {
	owner := Owner{Kind: OwnerPod, ContainerID: containerID, Ifname: ifname}
	released, err := a.release(ctx, a.poolNames(), owner)
	for _, al := range released {
		a.log.Debug("released address", append(al.Owner.logAttrs(), "ip", al.IP)...)
	}
	if err != nil {
		return fmt.Errorf("release addresses of container %s interface %s: %w", containerID, ifname, err)
	}
	return nil
}

// ReleaseNode releases the node's own address named name in pool. A name that holds no
// address is not an error.
func (a *Allocator) ReleaseNode(ctx context.Context, pool, name string) error {
	if _, err := a.release(ctx, []string{pool}, Owner{Kind: OwnerNode, Name: name}); err != nil {
		return fmt.Errorf("release node address %s of pool %q: %w", name, pool, err)
	}
	return nil
}

// release releases the addresses owner's key holds in each of pools, with one request per
// pool, and returns the allocations it removed. A failure in one pool does not keep the
// others from being released.
func (a *Allocator) release(ctx context.Context, pools []string, owner Owner) ([]Allocation, error) {
	reqs := make([]*request, len(pools))
	for i, pool := range pools {
		reqs[i] = newRequest(ctx, owner, true)
		a.submit(pool, reqs[i])
	}
	var released []Allocation
	var errs []error
	for _, r := range reqs {
		if err := r.wait(ctx); err != nil {
			return released, err
		}
		released = append(released, r.released...)
		errs = append(errs, r.errs...)
	}
	return released, errors.Join(errs...)
}

// Reconcile releases the addresses of pod interfaces whose container live reports as gone
// and that were allocated longer than grace ago; the grace keeps it from racing an ADD whose
// container the runtime does not list yet. It returns how many addresses it released. live
// is called with the node's block locks held and must not call the Allocator.
func (a *Allocator) Reconcile(ctx context.Context, live func(containerID string) bool, grace time.Duration) (int, error) {
	now := a.now()
	released, err := a.removeAll(ctx, a.snapshot(nil), func(al Allocation) bool {
		return al.Owner.Kind == OwnerPod && now.Sub(al.Since.Time) > grace && !live(al.Owner.ContainerID)
	})
	for _, al := range released {
		a.log.Info("released address of a container that is gone", append(al.Owner.logAttrs(), "ip", al.IP)...)
	}
	if err != nil {
		return len(released), fmt.Errorf("reconcile addresses of node %s: %w", a.node, err)
	}
	return len(released), nil
}

// Lookup returns the addresses a pod interface holds in the node's blocks, of any pool, as
// the node last read or wrote them; CHECK uses it.
func (a *Allocator) Lookup(containerID, ifname string) []netip.Addr {
	var out []netip.Addr
	for _, b := range a.snapshot(nil) {
		b.mu.Lock()
		for _, al := range b.obj.Spec.Allocations {
			if al.Owner.Kind == OwnerPod && al.Owner.ContainerID == containerID && al.Owner.Ifname == ifname {
				if addr, err := netip.ParseAddr(al.IP); err == nil {
					out = append(out, addr)
				}
			}
		}
		b.mu.Unlock()
	}
	return out
}

// Blocks returns the node's blocks, of every pool, in ascending order.
func (a *Allocator) Blocks() []netip.Prefix {
	var out []netip.Prefix
	for _, b := range a.snapshot(nil) {
		out = append(out, b.prefix)
	}
	return out
}

// PoolUsage is how much of a pool one node holds and uses.
type PoolUsage struct {
	Pool string
	// Blocks is how many blocks of the pool the node owns.
	Blocks int
	// Addresses counts every address of those blocks, including the few (network,
	// broadcast, excluded) that are never allocated.
	Addresses int
	// InUse is how many addresses of those blocks are allocated.
	InUse int
}

// Usage returns the node's use of each pool it holds blocks of, sorted by pool name. It does
// not wait for writes in progress: metrics call it.
func (a *Allocator) Usage() []PoolUsage {
	byPool := map[string]*PoolUsage{}
	for _, b := range a.snapshot(nil) {
		u := byPool[b.pool]
		if u == nil {
			u = &PoolUsage{Pool: b.pool}
			byPool[b.pool] = u
		}
		u.Blocks++
		u.Addresses += 1 << (32 - b.prefix.Bits())
		u.InUse += int(b.allocated.Load())
	}
	out := make([]PoolUsage, 0, len(byPool))
	for _, u := range byPool {
		out = append(out, *u)
	}
	slices.SortFunc(out, func(x, y PoolUsage) int { return cmp.Compare(x.Pool, y.Pool) })
	return out
}

// removeAll removes the allocations drop selects from each of blocks and returns them. It
// goes on past a block it fails to write and returns every failure.
func (a *Allocator) removeAll(ctx context.Context, blocks []*block, drop func(Allocation) bool) ([]Allocation, error) {
	var removed []Allocation
	var errs []error
	for _, b := range blocks {
		r, err := a.removeFrom(ctx, b, drop)
		removed = append(removed, r...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return removed, errors.Join(errs...)
}

func (a *Allocator) removeFrom(ctx context.Context, b *block, drop func(Allocation) bool) ([]Allocation, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for attempt := 1; ; attempt++ {
		if b.gone {
			return nil, nil
		}
		var keep, dropped []Allocation
		for _, al := range b.obj.Spec.Allocations {
			if drop(al) {
				dropped = append(dropped, al)
			} else {
				keep = append(keep, al)
			}
		}
		if len(dropped) == 0 {
			return nil, nil
		}
		next := b.obj.DeepCopy()
		next.Spec.Allocations = keep
		switch err := a.update(ctx, b, *next, attempt); {
		case err == nil:
			return dropped, nil
		case errors.Is(err, errGone):
			return nil, nil
		case !errors.Is(err, errStale):
			return nil, err
		}
	}
}

// update writes next, a changed copy of b's object, with b.mu held. On a conflict it
// re-reads the block and returns errStale, for the caller to recompute its change; when the
// block is gone it forgets it and returns errGone.
func (a *Allocator) update(ctx context.Context, b *block, next IPBlock, attempt int) error {
	stored, err := a.store.Update(ctx, next)
	switch {
	case err == nil:
		b.setObj(stored)
		b.seq.Add(1)
		return nil
	case apierrors.IsNotFound(err):
		a.forget(b, "deleted")
		return errGone
	case !apierrors.IsConflict(err):
		return err
	case attempt >= maxWriteAttempts:
		return fmt.Errorf("block %s still conflicts after %d attempts: %w", b.name, attempt, err)
	}
	fresh, err := a.store.Get(ctx, b.name)
	switch {
	case apierrors.IsNotFound(err):
		a.forget(b, "deleted")
		return errGone
	case err != nil:
		return fmt.Errorf("refresh block %s after a conflict: %w", b.name, err)
	case fresh.Spec.Node != a.node || fresh.Spec.CIDR != b.obj.Spec.CIDR:
		a.forget(b, "taken over by node "+fresh.Spec.Node)
		return errGone
	}
	b.setObj(fresh)
	b.seq.Add(1)
	return errStale
}

// observe records obj, just read, as one of the node's blocks. A block the node knows takes
// obj only if no write changed it since seqs were taken before the read, so a read never
// replaces a newer write; nil seqs, for an object just created, always replace.
func (a *Allocator) observe(obj IPBlock, seqs map[string]uint64) *block {
	prefix, err := obj.Spec.Prefix()
	if err != nil {
		a.log.Warn("ignoring a block of this node with an unreadable CIDR", "block", obj.Name, "error", err)
		return nil
	}
	a.mu.Lock()
	b := a.blocks[obj.Name]
	if b == nil {
		b = &block{name: obj.Name, pool: obj.Spec.Pool, prefix: prefix.Masked()}
		b.setObj(obj)
		a.blocks[obj.Name] = b
		a.mu.Unlock()
		return b
	}
	a.mu.Unlock()
	b.mu.Lock()
	if seq, ok := seqs[obj.Name]; seqs == nil || ok && !b.gone && b.seq.Load() == seq {
		b.setObj(obj)
	}
	b.mu.Unlock()
	return b
}

// seqs returns the write count of each known block, taken before a List for observe.
func (a *Allocator) seqs() map[string]uint64 {
	out := map[string]uint64{}
	for _, b := range a.snapshot(nil) {
		out[b.name] = b.seq.Load()
	}
	return out
}

// forget drops b, with b.mu held, so that no allocation is made in it again.
func (a *Allocator) forget(b *block, why string) {
	b.gone = true
	a.mu.Lock()
	if a.blocks[b.name] == b {
		delete(a.blocks, b.name)
	}
	a.mu.Unlock()
	a.log.Warn("forgetting block", "block", b.name, "pool", b.pool, "reason", why)
}

// snapshot returns the node's blocks that keep selects (all when keep is nil) in ascending
// order of address.
func (a *Allocator) snapshot(keep func(*block) bool) []*block {
	a.mu.Lock()
	var out []*block
	for _, b := range a.blocks {
		if keep == nil || keep(b) {
			out = append(out, b)
		}
	}
	a.mu.Unlock()
	slices.SortFunc(out, func(x, y *block) int {
		return cmp.Or(x.prefix.Addr().Compare(y.prefix.Addr()), cmp.Compare(x.prefix.Bits(), y.prefix.Bits()),
			cmp.Compare(x.name, y.name))
	})
	return out
}

// poolNames returns the names of the pools the node holds blocks of, in ascending order.
func (a *Allocator) poolNames() []string {
	var out []string
	for _, b := range a.snapshot(nil) {
		out = append(out, b.pool)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// inPool reports whether b is a block of pool as it is defined now: one whose pool
// definition changed to another CIDR keeps its allocations but gets no new ones.
func inPool(pool Pool, b *block) bool {
	return b.pool == pool.Name && b.prefix.Bits() >= pool.CIDR.Bits() && pool.CIDR.Contains(b.prefix.Addr())
}

// freeAddr returns the lowest address of b that pool allows and no allocation holds.
func freeAddr(pool Pool, b *block) (netip.Addr, bool) {
	used := make(map[netip.Addr]bool, len(b.obj.Spec.Allocations))
	for _, al := range b.obj.Spec.Allocations {
		if addr, err := netip.ParseAddr(al.IP); err == nil {
			used[addr] = true
		}
	}
	for addr := range pool.Addrs(b.prefix) {
		if !used[addr] {
			return addr, true
		}
	}
	return netip.Addr{}, false
}

// sortAllocations orders allocations by address, so that a block reads in order. An
// unreadable address, which this package never writes, sorts first.
func sortAllocations(as []Allocation) {
	slices.SortStableFunc(as, func(x, y Allocation) int {
		xa, _ := netip.ParseAddr(x.IP)
		ya, _ := netip.ParseAddr(y.IP)
		return xa.Compare(ya)
	})
}
