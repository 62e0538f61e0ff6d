package ipam

// Queued returns how many requests wait in a's queue of pool for a batch, not counting those
// of the batch being made. Tests use it to know that concurrent calls have queued.
func Queued(a *Allocator, pool string) int {
	q := a.queueOf(pool)
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.waiting)
}
