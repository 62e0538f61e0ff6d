package perf

import (
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// IsolateCPU gives cpu to the latency test alone, as isolcpus would: every thread allowed on
// cpu and others too (whatever else the machine runs, the caller's own goroutines, the shell)
// is moved off it; threads pinned to cpu alone (the test's own sockperf) and kernel threads
// bound to it stay. cpu is as taskset -c takes it; unless it is one CPU's number, IsolateCPU
// leaves every thread alone. The returned func restores every affinity it changed.
func IsolateCPU(cpu string) (restore func()) {
	n, err := strconv.Atoi(cpu)
	if err != nil {
		return func() {}
	}
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
		if unix.SchedGetaffinity(tid, &old) != nil || !old.IsSet(n) || old.Count() < 2 {
			continue
		}
		next := old
		next.Clear(n)
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
