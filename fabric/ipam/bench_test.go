package ipam_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/loom-cni/loom/fabric/ipam"
	"github.com/loom-cni/loom/fabric/ipam/ipamtest"
)

// slowWrites is a BeforeWrite hook that makes every write take delay, as a round trip to the
// API server does, and counts the Updates. then, when set, runs after the delay of the nth
// Update and may fail it or write in its way.
type slowWrites struct {
	delay   time.Duration
	updates atomic.Int64
	then    func(n int64, name string) error
}

func (s *slowWrites) before(verb, name string) error {
	time.Sleep(s.delay)
	if verb != ipamtest.VerbUpdate {
		return nil
	}
	n := s.updates.Add(1)
	if s.then != nil {
		return s.then(n, name)
	}
	return nil
}

// BenchmarkAllocateConcurrent allocates 32 addresses on one node whose every write takes
// 5ms, one after another and all at once. allocs/s is the throughput, writes/op how many
// Updates of the block the 32 allocations cost.
func BenchmarkAllocateConcurrent(b *testing.B) {
	const n = 32
	for _, bc := range []struct {
		name       string
		concurrent bool
	}{{"serial", false}, {"concurrent", true}} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			store := ipamtest.NewStore()
			a := ipam.NewAllocator(store, "node-a", nil, nil)
			if _, _, err := a.Allocate(ctx, clusterPool, ipam.Owner{Kind: ipam.OwnerNode, Name: "vtep"}); err != nil {
				b.Fatal(err)
			}
			slow := &slowWrites{delay: 5 * time.Millisecond}
			store.BeforeWrite = slow.before
			var writes int64
			b.ResetTimer()
			for i := range b.N {
				before := slow.updates.Load()
				each(n, bc.concurrent, func(j int) {
					if _, _, err := a.Allocate(ctx, clusterPool, pod(i*n+j, "eth0")); err != nil {
						b.Error(err)
					}
				})
				writes += slow.updates.Load() - before
				b.StopTimer()
				each(n, true, func(j int) {
					if err := a.Release(ctx, pod(i*n+j, "eth0").ContainerID, "eth0"); err != nil {
						b.Error(err)
					}
				})
				b.StartTimer()
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "allocs/s")
			b.ReportMetric(float64(writes)/float64(b.N), "writes/op")
		})
	}
}

// each calls f(0) to f(n-1), all at once or one after another.
func each(n int, concurrent bool, f func(int)) {
	if !concurrent {
		for i := range n {
			f(i)
		}
		return
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { f(i) })
	}
	wg.Wait()
}
