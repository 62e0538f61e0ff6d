package sriov

import (
	"context"
	"maps"
	"slices"
	"time"
)

// Watch scans the host with s and sorts its VFs into pools at once and then every interval,
// until ctx ends. It calls fn with the first assignment and with every one that differs from
// the last it called fn with; a failed scan or assignment calls fn with the error instead,
// and the next success is passed on even if it is the same as before the failure. fn runs on
// Watch's goroutine: a scan waits for it.
//
// Scanning is polling because sysfs has no change notification for sriov_numvfs, VF removal
// or operstate that works under a chroot of generated files; a scan of a host's few PFs costs
// well under a millisecond of CPU.
func Watch(ctx context.Context, s *Scanner, pools []PoolConfig, interval time.Duration, fn func(map[ResourceName][]VF, error)) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	var last map[ResourceName][]VF // nil after a failure, so the next success is passed on
	for {
		assigned, err := scanAndAssign(s, pools)
		switch {
		case err != nil:
			last = nil
			fn(nil, err)
		case last == nil || !sameAssignment(last, assigned):
			last = assigned
			fn(assigned, nil)
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

func scanAndAssign(s *Scanner, pools []PoolConfig) (map[ResourceName][]VF, error) {
	inv, err := s.Scan()
	if err != nil {
		return nil, err
	}
	return Assign(inv, pools)
}

// sameAssignment says a and b have the same pools with the same VFs, in the same order, alike
// in every field: health (LinkUp), driver and NUMA node included.
func sameAssignment(a, b map[ResourceName][]VF) bool {
	return maps.EqualFunc(a, b, func(x, y []VF) bool { return slices.Equal(x, y) })
}
