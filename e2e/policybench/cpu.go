package main

import (
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// isolateCPU gives cpu to the latency test alone, as isolcpus would: every thread allowed on
// cpu and others too (whatever else the machine runs, this program's own goroutines, the
// shell) is moved off it; threads pinned to cpu alone (the test's own sockperf) and kernel
// threads bound to it stay. fabricbench does the same for the same reason. The returned func restores every affinity it changed.
func isolateCPU(cpu int) (restore func()) {
	type saved struct {
		tid  int
		mask unix.CPUSet
	}
	var changed []saved
	tasks, _ := filepath.Glob("/proc/[0-9]*/task/[0-9]*")
	for _, t := range tasks {
		tid, err := strconv.Atoi(filepath.Base(t))
		if err != nil {
			continue
		}
		var old unix.CPUSet
		if unix.SchedGetaffinity(tid, &old) != nil || !old.IsSet(cpu) || old.Count() < 2 {
			continue
		}
		next := old
		next.Clear(cpu)
		if unix.SchedSetaffinity(tid, &next) == nil {
			changed = append(changed, saved{tid, old})
		}
	}
	return func() {
		for _, s := range changed {
			_ = unix.SchedSetaffinity(s.tid, &s.mask) // a thread that has exited needs nothing
		}
	}
}
