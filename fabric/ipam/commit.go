package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// want is an address a batch seeks for one owner key, and the requests waiting for it: every
// request of a batch for one key gets the same address.
type want struct {
	owner   Owner      // as the first of reqs gave it
	static  netip.Addr // the address asked for, as the first of reqs gave it; invalid for any
	reqs    []*request
	settled bool
}

func (w *want) grant(addr netip.Addr, prefix netip.Prefix) {
	for _, r := range w.reqs {
		r.addr, r.prefix = addr, prefix
	}
	w.settled = true
}

func (w *want) fail(err error) {
	for _, r := range w.reqs {
		r.errs = append(r.errs, err)
	}
	w.settled = true
}

func unsettled(wants []*want) []*want {
	var out []*want
	for _, w := range wants {
		if !w.settled {
			out = append(out, w)
		}
	}
	return out
}

// commit makes batch, requests for the pool named pool, and hands each request its result.
// It first gives the owners that already hold an address that address, then writes each of
// the node's blocks of the pool once: without the allocations the batch releases, and with
// as many of the batch's new allocations as fit, lowest blocks first. What fits in none
// spills into blocks it claims.
func (a *Allocator) commit(pool string, batch []*request) {
	ctx, cancel := batchContext(batch)
	defer cancel()
	def, wants, releases := split(batch)
	a.held(pool, wants)
	for _, b := range a.snapshot(func(b *block) bool { return b.pool == pool }) {
		var seek []*want
		if inPool(def, b) {
			seek = unsettled(wants)
		}
		if len(seek) > 0 || len(releases) > 0 {
			a.write(ctx, b, def, seek, releases)
		}
	}
	if len(unsettled(wants)) > 0 {
		a.spill(ctx, def, wants)
	}
	for _, r := range batch {
		close(r.done)
	}
}

// split sorts batch into the pool definition its allocations use, one want per owner key to
// allocate for, and the releases.
func split(batch []*request) (Pool, []*want, []*request) {
	var def Pool
	var wants []*want
	var releases []*request
	byKey := map[ownerKey]*want{}
	for _, r := range batch {
		if r.release {
			releases = append(releases, r)
			continue
		}
		def = r.pool
		if w := byKey[r.owner.key()]; w != nil {
			w.reqs = append(w.reqs, r)
			continue
		}
		w := &want{owner: r.owner, static: r.static, reqs: []*request{r}}
		byKey[r.owner.key()] = w
		wants = append(wants, w)
	}
	return def, wants, releases
}

// held grants each want whose owner already holds an address of pool that address, as the
// node last read or wrote its blocks.
func (a *Allocator) held(pool string, wants []*want) {
	if len(wants) == 0 {
		return
	}
	for _, b := range a.snapshot(func(b *block) bool { return b.pool == pool }) {
		b.mu.Lock()
		owners := ownersOf(b.obj)
		b.mu.Unlock()
		for _, w := range unsettled(wants) {
			if addr, ok := owners[w.owner.key()]; ok {
				w.grant(addr, b.prefix)
			}
		}
	}
}

// spill claims blocks for the wants the node's blocks had no room for, and allocates in
// them, until every want has an address or an error. Claims that leave every want waiting,
// because their blocks were deleted or filled first, count against maxClaims.
func (a *Allocator) spill(ctx context.Context, pool Pool, wants []*want) {
	a.spillStatic(ctx, pool, wants)
	fruitless := 0
	for {
		left := unsettled(wants)
		if len(left) == 0 {
			return
		}
		var err error
		if fruitless == maxClaims {
			err = fmt.Errorf("allocate from pool %q: %d claimed blocks were deleted or filled before this node could use them",
				pool.Name, fruitless)
		} else {
			err = a.claim(ctx, pool)
		}
		if err != nil {
			for _, w := range left {
				w.fail(err)
			}
			return
		}
		for _, b := range a.snapshot(func(b *block) bool { return inPool(pool, b) }) {
			if seek := unsettled(wants); len(seek) > 0 {
				a.write(ctx, b, pool, seek, nil)
			}
		}
		if len(unsettled(wants)) < len(left) {
			fruitless = 0
		} else {
			fruitless++
		}
	}
}

// write makes a batch's change to b with one Update: it removes the allocations of releases
// and gives each of wants that fits an address of b, the lowest free ones. After a conflict it
// re-reads b and recomputes the whole change, so that no address is given twice. A write that
// fails fails the requests it carried; a block that is gone serves none.
func (a *Allocator) write(ctx context.Context, b *block, pool Pool, wants []*want, releases []*request) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for attempt := 1; ; attempt++ {
		if b.gone {
			return
		}
		e := newEdit(b.obj, b.prefix, pool, wants, releases, a.now())
		var err error
		if e.changed {
			err = a.update(ctx, b, e.next, attempt)
		}
		switch {
		case errors.Is(err, errStale):
			continue
		case errors.Is(err, errGone):
			return
		}
		a.settle(b, pool, e, err)
		return
	}
}

// settle hands the requests e served their results, or err when e's write failed.
func (a *Allocator) settle(b *block, pool Pool, e edit, err error) {
	for _, g := range e.grants {
		switch {
		case err != nil && g.fresh:
			g.want.fail(fmt.Errorf("allocate from pool %q: %w", pool.Name, err))
		case g.fresh:
			g.want.grant(g.addr, b.prefix)
			a.log.Debug("allocated address", append(g.want.owner.logAttrs(), "pool", pool.Name, "ip", g.addr.String())...)
		default: // held already, whether or not this write went through
			g.want.grant(g.addr, b.prefix)
		}
	}
	for _, r := range e.refusals {
		r.want.fail(&AddressTakenError{Pool: pool.Name, Addr: r.want.static, Holder: r.holder})
	}
	for r, removed := range e.removed {
		if err != nil {
			r.errs = append(r.errs, err)
		} else {
			r.released = append(r.released, removed...)
		}
	}
}

// edit is the change one write makes to a block for a batch.
type edit struct {
	next     IPBlock
	changed  bool
	grants   []grant
	refusals []refusal
	removed  map[*request][]Allocation // by release request
}

// refusal is a want for an address that another owner holds.
type refusal struct {
	want   *want
	holder Owner
}

// grant is an address a block gives a want.
type grant struct {
	want  *want
	addr  netip.Addr
	fresh bool // allocated by this edit, not held already
}

// newEdit computes the next version of obj, the block prefix: without the allocations of
// releases, and with an address for each of wants that fits.
func newEdit(obj IPBlock, prefix netip.Prefix, pool Pool, wants []*want, releases []*request, now time.Time) edit {
	e := edit{removed: map[*request][]Allocation{}}
	allocs := make([]Allocation, 0, len(obj.Spec.Allocations)+len(wants))
	allocs = e.release(obj.Spec.Allocations, releases, allocs)
	if len(wants) > 0 {
		allocs = e.allocate(allocs, prefix, pool, wants, now)
	}
	if e.changed {
		meta := obj
		meta.Spec.Allocations = nil
		e.next = *meta.DeepCopy()
		e.next.Spec.Allocations = allocs
	}
	return e
}

// release appends to keep the allocations of current no request of releases drops.
func (e *edit) release(current []Allocation, releases []*request, keep []Allocation) []Allocation {
	byKey := make(map[ownerKey]*request, len(releases))
	for _, r := range releases {
		if _, dup := byKey[r.owner.key()]; !dup {
			byKey[r.owner.key()] = r
		}
	}
	for _, al := range current {
		if r := byKey[al.Owner.key()]; r != nil {
			e.removed[r] = append(e.removed[r], al)
			e.changed = true
			continue
		}
		keep = append(keep, al)
	}
	return keep
}

// allocate grants each of wants the address it holds in allocs, or the address it asked for
// when that is in prefix and free, or a free one; a want whose address another owner holds is
// refused, and one whose address is in another block is left for that block. It returns
// allocs with the new allocations, in order of address.
func (e *edit) allocate(allocs []Allocation, prefix netip.Prefix, pool Pool, wants []*want, now time.Time) []Allocation {
	// After a conflict the fresh version may hold a want's address already: an earlier write
	// of it whose response was lost.
	owners := make(map[ownerKey]netip.Addr, len(allocs))
	holders := make(map[netip.Addr]Owner, len(allocs))
	for _, al := range allocs {
		if addr, err := netip.ParseAddr(al.IP); err == nil {
			if _, dup := holders[addr]; !dup {
				holders[addr] = al.Owner
			}
			if _, dup := owners[al.Owner.key()]; !dup {
				owners[al.Owner.key()] = addr
			}
		}
	}
	take := func(w *want, addr netip.Addr) {
		allocs = append(allocs, Allocation{IP: addr.String(), Owner: w.owner, Since: metav1.NewTime(now)})
		holders[addr] = w.owner
		e.grants = append(e.grants, grant{want: w, addr: addr, fresh: true})
		e.changed = true
	}
	// Asked-for addresses first, so that no want given any free address takes one of them.
	var fresh []*want
	for _, w := range wants {
		holder, held := holders[w.static]
		switch addr, ok := owners[w.owner.key()]; {
		case ok:
			e.grants = append(e.grants, grant{want: w, addr: addr})
		case !w.static.IsValid():
			fresh = append(fresh, w)
		case !prefix.Contains(w.static):
		case held:
			e.refusals = append(e.refusals, refusal{want: w, holder: holder})
		default:
			take(w, w.static)
		}
	}
	for addr := range pool.Addrs(prefix) {
		if len(fresh) == 0 {
			break
		}
		if _, used := holders[addr]; used {
			continue
		}
		take(fresh[0], addr)
		fresh = fresh[1:]
	}
	sortAllocations(allocs)
	return allocs
}

// ownersOf returns the address each owner key holds in obj.
func ownersOf(obj IPBlock) map[ownerKey]netip.Addr {
	out := make(map[ownerKey]netip.Addr, len(obj.Spec.Allocations))
	for _, al := range obj.Spec.Allocations {
		if addr, err := netip.ParseAddr(al.IP); err == nil {
			if _, dup := out[al.Owner.key()]; !dup {
				out[al.Owner.key()] = addr
			}
		}
	}
	return out
}
