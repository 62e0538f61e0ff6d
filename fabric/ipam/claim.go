package ipam

import (
	"context"
	"fmt"
	"hash/fnv"
	"net/netip"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation"
)

// maxClaimRounds bounds how many claims one Allocate attempts when other nodes keep
// claiming the blocks it picks. Each lost race marks one more block as taken, and nodes
// start their search at different offsets, so losing this often means the pool is nearly
// exhausted or something else is wrong.
const maxClaimRounds = 32

// claim makes sure the node owns a block of pool with a free address. It reads every block
// of the cluster, adopts a block of the node's it did not know of (or that loom-controller
// freed addresses in) if one has room, and otherwise claims a free block: it creates the
// IPBlock of the block's deterministic name, which fails with AlreadyExists when another
// node claimed it first.
func (a *Allocator) claim(ctx context.Context, pool Pool) error {
	if msgs := validation.IsValidLabelValue(a.node); len(msgs) > 0 {
		return fmt.Errorf("claim a block of pool %q: node name %q cannot be a label value: %s",
			pool.Name, a.node, strings.Join(msgs, "; "))
	}
	taken := newClaimed(pool)
	start := int(nodeHash(a.node) % uint32(pool.BlockCount()))
	for range maxClaimRounds {
		seqs := a.seqs()
		all, err := a.store.List(ctx, Filter{})
		if err != nil {
			return fmt.Errorf("claim a block of pool %q: %w", pool.Name, err)
		}
		if a.adoptFree(ctx, pool, all, seqs) {
			return nil
		}
		taken.addBlocks(all)
		index, ok := taken.next(start)
		if !ok {
			return a.exhausted(pool)
		}
		prefix, _ := pool.Block(index)
		won, err := a.tryClaim(ctx, pool, prefix)
		if err != nil || won {
			return err
		}
		taken.add(prefix)
		start = index + 1
	}
	return fmt.Errorf("claim a block of pool %q: other claims won %d times in a row", pool.Name, maxClaimRounds)
}

// tryClaim creates the IPBlock of prefix and makes sure no overlapping block of another pool
// was claimed at the same time. It returns false when another claim won.
func (a *Allocator) tryClaim(ctx context.Context, pool Pool, prefix netip.Prefix) (bool, error) {
	created, err := a.store.Create(ctx, newIPBlock(pool, prefix, a.node))
	switch {
	case apierrors.IsAlreadyExists(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("claim block %s of pool %q: %w", prefix, pool.Name, err)
	}
	// Blocks of different pools that share addresses have different names, so Create alone
	// does not keep them apart. Each claim lists after its Create and gives way to any
	// overlapping block. If claim X's List missed claim Y, Y was created after that List
	// started, so after X was; Y's List, which starts later still, then sees X, and Y gives
	// way. So of two overlapping claims at least one gives way (both may, which costs only a
	// retry), and two overlapping blocks are never both used.
	all, err := a.store.List(ctx, Filter{})
	if err != nil {
		return false, fmt.Errorf("check claim of block %s of pool %q: %w", prefix, pool.Name, err)
	}
	if overlapsOther(created.Name, prefix, all) {
		if err := a.store.Delete(ctx, created.Name, created.ResourceVersion); err != nil && !apierrors.IsNotFound(err) {
			return false, fmt.Errorf("give up block %s of pool %q to an overlapping claim: %w", prefix, pool.Name, err)
		}
		return false, nil
	}
	a.observe(created, nil)
	a.log.Info("claimed block", "pool", pool.Name, "block", prefix.String())
	return true, nil
}

// adoptFree observes the node's blocks among all and reports whether one of pool has a free
// address.
func (a *Allocator) adoptFree(ctx context.Context, pool Pool, all []IPBlock, seqs map[string]uint64) bool {
	free := false
	for _, obj := range a.usable(ctx, all) {
		b := a.observe(obj, seqs)
		if b == nil || !inPool(pool, b) {
			continue
		}
		b.mu.Lock()
		_, ok := freeAddr(pool, b)
		b.mu.Unlock()
		free = free || ok
	}
	return free
}

// usable returns the node's blocks among all. It leaves out, and deletes, an empty block of
// the node that overlaps another block: the remains of a claim interrupted before it made
// sure it had not raced another pool. A block with allocations passed that check.
func (a *Allocator) usable(ctx context.Context, all []IPBlock) []IPBlock {
	var own []IPBlock
	for _, obj := range all {
		if obj.Spec.Node != a.node {
			continue
		}
		prefix, err := obj.Spec.Prefix()
		if err != nil || len(obj.Spec.Allocations) > 0 || !overlapsOther(obj.Name, prefix, all) {
			own = append(own, obj)
			continue
		}
		a.setAside(ctx, obj)
	}
	return own
}

// setAside deletes the node's empty block obj, unless it has changed since it was read.
func (a *Allocator) setAside(ctx context.Context, obj IPBlock) {
	if err := a.store.Delete(ctx, obj.Name, obj.ResourceVersion); err != nil && !apierrors.IsNotFound(err) {
		a.log.Warn("could not delete an empty block that overlaps another", "block", obj.Name, "error", err)
		return
	}
	a.mu.Lock()
	b := a.blocks[obj.Name]
	a.mu.Unlock()
	if b != nil {
		b.mu.Lock()
		a.forget(b, "overlaps another block")
		b.mu.Unlock()
	}
}

// exhausted returns the error of a pool with no free block while the node's are full.
func (a *Allocator) exhausted(pool Pool) error {
	own := len(a.snapshot(func(b *block) bool { return inPool(pool, b) }))
	return fmt.Errorf("allocate from pool %q (%s): every /%d block is claimed and the %d of node %s are full; "+
		"widen the pool's CIDR, or free the addresses of pods that are gone: %w",
		pool.Name, pool.CIDR, pool.BlockSize, own, a.node, ErrPoolExhausted)
}

// overlapsOther reports whether a block other than the one named name overlaps prefix.
func overlapsOther(name string, prefix netip.Prefix, all []IPBlock) bool {
	for _, obj := range all {
		if obj.Name == name {
			continue
		}
		if p, err := obj.Spec.Prefix(); err == nil && p.Overlaps(prefix) {
			return true
		}
	}
	return false
}

// claimed is the set of a pool's blocks that existing blocks, of any pool, overlap.
type claimed struct {
	pool   Pool
	blocks map[int]bool   // indexes of the pool's blocks that a block overlaps
	wide   []netip.Prefix // blocks larger than the pool's, which overlap several of them
}

func newClaimed(pool Pool) *claimed {
	return &claimed{pool: pool, blocks: map[int]bool{}}
}

func (c *claimed) addBlocks(all []IPBlock) {
	for _, obj := range all {
		if p, err := obj.Spec.Prefix(); err == nil {
			c.add(p)
		}
	}
}

func (c *claimed) add(p netip.Prefix) {
	p = p.Masked()
	switch {
	case !p.Overlaps(c.pool.CIDR):
	case p.Bits() < c.pool.BlockSize:
		c.wide = append(c.wide, p)
	default:
		block, _ := c.pool.BlockOf(p.Addr())
		index, _ := c.pool.blockIndex(block)
		c.blocks[index] = true
	}
}

// next returns the first index, from start on and wrapping around, of a block that no
// block overlaps and that has a usable address.
func (c *claimed) next(start int) (int, bool) {
	count := c.pool.BlockCount()
	for i := range count {
		index := (start + i) % count
		if c.blocks[index] {
			continue
		}
		prefix, _ := c.pool.Block(index)
		if c.overlapsWide(prefix) || !hasUsable(c.pool, prefix) {
			continue
		}
		return index, true
	}
	return 0, false
}

func (c *claimed) overlapsWide(prefix netip.Prefix) bool {
	for _, w := range c.wide {
		if w.Overlaps(prefix) {
			return true
		}
	}
	return false
}

func hasUsable(pool Pool, block netip.Prefix) bool {
	for range pool.Addrs(block) {
		return true
	}
	return false
}

// nodeHash spreads nodes over a pool, so that nodes starting together rarely try to claim
// the same block.
func nodeHash(node string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(node))
	return h.Sum32()
}
