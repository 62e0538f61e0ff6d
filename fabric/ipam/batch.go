package ipam

// Group commit
//
// Every change to a block is an Update of the whole IPBlock, a round trip to the API server
// of several milliseconds, and no other change to the block can be made meanwhile: it would
// conflict. Made one at a time, the changes of pods that start or stop together would queue
// for one round trip each. So a node's changes to the blocks of one pool are batched: Allocate,
// Release and ReleaseNode queue a request on the pool's queue and wait, and one goroutine at a
// time per pool takes every request waiting and makes them all with one Update per block they
// touch, while the requests that arrive meanwhile wait for the next batch. A request that
// finds the queue idle is taken at once, so batching adds no delay: batches form only behind
// writes in flight, and grow with the load. commit.go makes a batch.
//
// A batch is the waiting requests in order of arrival, up to and not including the first that
// does not commute with those before it: an allocation for another definition of the pool, or
// a request for an owner key that an earlier request of the batch allocates when it releases,
// or releases when it allocates. So a batch ends as making its requests one at a time in order
// of arrival would.
//
// Cancellation. A caller whose context ends stops waiting and gets the context's error. If its
// request was still waiting it is dropped, never made. If it was already taken into a batch,
// the batch goes on for the others, since its writes use a context that ends only when every
// caller's has; the cancelled caller's allocation may then be committed though the caller was
// told it failed. That allocation is kept, not released. It is keyed by the container
// interface, so the runtime's retry of the ADD gets the same address, its DEL of the failed
// sandbox releases it, and Reconcile and loom-controller release it like any leaked address
// when neither comes. Releasing it here instead would be another request, racing that retry:
// if the retry was handed the address first, the pod would keep an address its block records
// as free, and the next pod would get it too. A leaked address costs one address until it is
// reclaimed; an address handed out twice breaks two pods.

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
)

// request is one caller's change to a pool, waiting for a batch to make it.
type request struct {
	ctx     context.Context
	owner   Owner
	release bool       // release owner's addresses instead of allocating one
	pool    Pool       // for an allocation, the pool's definition
	static  netip.Addr // for an allocation, the address asked for; invalid for any free one

	// The results, set by the batch before it closes done.
	done     chan struct{}
	addr     netip.Addr
	prefix   netip.Prefix
	released []Allocation
	errs     []error
}

func newRequest(ctx context.Context, owner Owner, release bool) *request {
	return &request{ctx: ctx, owner: owner, release: release, done: make(chan struct{})}
}

// wait waits until r has been made or ctx ends; it returns ctx's error in the second case.
func (r *request) wait(ctx context.Context) error {
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
	}
	// A request made meanwhile has a result, which is worth more than the cancellation.
	select {
	case <-r.done:
		return nil
	default:
		return ctx.Err()
	}
}

// queue holds the requests waiting for the next batch of one pool.
type queue struct {
	mu      sync.Mutex
	waiting []*request
	busy    bool // a goroutine is making batches; it stops once no request waits
}

// submit queues r for pool and starts a goroutine to make batches if none is running.
func (a *Allocator) submit(pool string, r *request) {
	q := a.queueOf(pool)
	q.mu.Lock()
	q.waiting = append(q.waiting, r)
	start := !q.busy
	q.busy = true
	q.mu.Unlock()
	if start {
		go a.drain(pool, q)
	}
}

// drain makes batches of q's requests until none is waiting.
func (a *Allocator) drain(pool string, q *queue) {
	for {
		batch := q.take()
		if len(batch) == 0 {
			return
		}
		a.commit(pool, batch)
	}
}

// take removes the next batch from q and returns it. With no request waiting it marks q idle
// in the same critical section, so that the next submit starts a new drain.
func (q *queue) take() []*request {
	q.mu.Lock()
	defer q.mu.Unlock()
	var batch []*request
	var def *Pool
	releases := map[ownerKey]bool{} // for each owner key of the batch, whether it is released
	n := 0
	for _, r := range q.waiting {
		if r.ctx.Err() != nil { // its caller has stopped waiting; never make it
			n++
			continue
		}
		k := r.owner.key()
		if release, seen := releases[k]; seen && release != r.release {
			break
		}
		if !r.release {
			if def != nil && !samePool(*def, r.pool) {
				break
			}
			def = &r.pool
		}
		releases[k] = r.release
		batch = append(batch, r)
		n++
	}
	q.waiting = slices.Delete(q.waiting, 0, n)
	if len(batch) == 0 {
		q.busy = false
	}
	return batch
}

// batchContext returns the context of a batch's reads and writes. It carries the values of
// the first request's context and ends once every request's context has ended, so that one
// caller giving up does not fail the others.
func batchContext(batch []*request) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(batch[0].ctx))
	var left atomic.Int64
	left.Store(int64(len(batch)))
	stops := make([]func() bool, len(batch))
	for i, r := range batch {
		stops[i] = context.AfterFunc(r.ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}

func (a *Allocator) queueOf(pool string) *queue {
	a.mu.Lock()
	defer a.mu.Unlock()
	q := a.queues[pool]
	if q == nil {
		q = &queue{}
		a.queues[pool] = q
	}
	return q
}

// samePool reports whether p and q define a pool the same way.
func samePool(p, q Pool) bool {
	return p.Name == q.Name && p.CIDR == q.CIDR && p.BlockSize == q.BlockSize && p.Tenant == q.Tenant &&
		slices.Equal(p.Exclude, q.Exclude)
}
