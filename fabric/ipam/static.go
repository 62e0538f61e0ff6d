package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Asked-for addresses
//
// A pod may ask for its address (the networks annotation's "ips"). The allocator gives it
// that address only when no other owner holds it: two interfaces with one address would
// each receive the other's traffic, across tenants if they are of different tenants. The
// check is the allocation itself, made under the same block write as every other, so an
// address can never be handed out twice, also when two pods ask for it at once. The
// address's block must be this node's (a node writes only its own blocks): a block nobody
// claimed is claimed for the request; a block of another node is read, to name the holder
// if there is one, and is otherwise refused with ErrOtherNodesBlock.

// ErrAddressTaken is wrapped by the error AllocateAddr returns when another owner holds the
// address asked for; the error is an *AddressTakenError naming the holder.
var ErrAddressTaken = errors.New("address already allocated")

// ErrNotInPool is wrapped by the error AllocateAddr returns for an address the pool never
// hands out: outside its CIDR, its network or broadcast address, or excluded.
var ErrNotInPool = errors.New("address not allocatable in the pool")

// ErrOtherNodesBlock is wrapped by the error AllocateAddr returns for a free address in a
// block another node owns: only that node allocates in it.
var ErrOtherNodesBlock = errors.New("address in another node's block")

// AddressTakenError refuses an address that another owner holds in the pool.
type AddressTakenError struct {
	Pool   string
	Addr   netip.Addr
	Holder Owner
	// Node is the node whose block holds the address; empty for this node's.
	Node string
}

func (e *AddressTakenError) Error() string {
	who := "this node's " + e.Holder.Name
	if e.Holder.Kind == OwnerPod {
		who = fmt.Sprintf("pod %s/%s (interface %s)", e.Holder.Namespace, e.Holder.Name, e.Holder.Ifname)
	}
	if e.Node != "" {
		who += " on node " + e.Node
	}
	return fmt.Sprintf("address %s of pool %q is allocated to %s: ask for a free address, or for none", e.Addr, e.Pool, who)
}

// Is makes errors.Is(err, ErrAddressTaken) true.
func (e *AddressTakenError) Is(target error) bool { return target == ErrAddressTaken }

// AllocateAddr allocates addr of pool to owner and returns it and its block. It is
// idempotent as Allocate is: an owner key that already holds an address of the pool gets that
// address again. An address another owner holds is refused with an *AddressTakenError, one
// the pool never hands out with ErrNotInPool, a free one of another node's block with
// ErrOtherNodesBlock; nothing is allocated then.
func (a *Allocator) AllocateAddr(ctx context.Context, pool Pool, owner Owner, addr netip.Addr) (netip.Addr, netip.Prefix, error) {
	pool = pool.WithDefaults()
	if err := pool.Validate(); err != nil {
		return netip.Addr{}, netip.Prefix{}, fmt.Errorf("allocate address %s: %w", addr, err)
	}
	if err := owner.validate(); err != nil {
		return netip.Addr{}, netip.Prefix{}, fmt.Errorf("allocate address %s of pool %q: %w", addr, pool.Name, err)
	}
	switch {
	case addr.Is6():
		return netip.Addr{}, netip.Prefix{}, fmt.Errorf("allocate address %s of pool %q (%s): %w", addr, pool.Name, pool.CIDR, ErrIPv6Unsupported)
	case !pool.Usable(addr):
		return netip.Addr{}, netip.Prefix{}, fmt.Errorf("allocate address %s of pool %q (%s, excluded %v): %w",
			addr, pool.Name, pool.CIDR, pool.Exclude, ErrNotInPool)
	}
	r := newRequest(ctx, owner, false)
	r.pool, r.static = pool, addr
	a.submit(pool.Name, r)
	if err := r.wait(ctx); err != nil {
		return netip.Addr{}, netip.Prefix{}, fmt.Errorf("allocate address %s of pool %q: %w", addr, pool.Name, err)
	}
	if err := errors.Join(r.errs...); err != nil {
		return netip.Addr{}, netip.Prefix{}, err
	}
	return r.addr, r.prefix, nil
}

// spillStatic settles the wants for asked-for addresses that none of the node's blocks
// holds: it claims each one's block and allocates there, or fails the want.
func (a *Allocator) spillStatic(ctx context.Context, pool Pool, wants []*want) {
	for _, w := range unsettled(wants) {
		if !w.static.IsValid() {
			continue
		}
		if err := a.ownBlockOf(ctx, pool, w.static); err != nil {
			w.fail(err)
			continue
		}
		for _, b := range a.snapshot(func(b *block) bool { return inPool(pool, b) && b.prefix.Contains(w.static) }) {
			a.write(ctx, b, pool, []*want{w}, nil)
		}
		if !w.settled {
			w.fail(fmt.Errorf("allocate address %s of pool %q: its block was deleted meanwhile; try again", w.static, pool.Name))
		}
	}
}

// ownBlockOf makes the block of pool holding addr one of the node's: it claims it when nobody
// has, or adopts it when it is the node's already. A block of another node is refused, with
// an *AddressTakenError when addr is allocated there.
func (a *Allocator) ownBlockOf(ctx context.Context, pool Pool, addr netip.Addr) error {
	prefix, _ := pool.BlockOf(addr)
	won, err := a.tryClaim(ctx, pool, prefix)
	if err != nil || won {
		return err
	}
	name := BlockName(pool.Name, prefix)
	seqs := a.seqs()
	obj, err := a.store.Get(ctx, name)
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Errorf("allocate address %s of pool %q: block %s overlaps a block of another pool; ask for another address",
			addr, pool.Name, prefix)
	case err != nil:
		return fmt.Errorf("allocate address %s of pool %q: read block %s: %w", addr, pool.Name, name, err)
	case obj.Spec.Node == a.node:
		a.observe(obj, seqs)
		return nil
	}
	for _, al := range obj.Spec.Allocations {
		if al.IP == addr.String() {
			return &AddressTakenError{Pool: pool.Name, Addr: addr, Holder: al.Owner, Node: obj.Spec.Node}
		}
	}
	return fmt.Errorf("allocate address %s of pool %q: block %s belongs to node %s, and only that node allocates its addresses: "+
		"run the pod on %s, or ask for an address of this node's blocks: %w", addr, pool.Name, prefix, obj.Spec.Node, obj.Spec.Node, ErrOtherNodesBlock)
}
