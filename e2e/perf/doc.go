// Package perf measures datapaths between network namespaces: iperf3 throughput, sockperf
// latency with both ends pinned to an emptied CPU, and the paired-ratio statistics Loom's
// benchmarks report.
//
// Design notes.
//
// Throughput is one iperf3 TCP stream, neither end pinned: pinned to separate CPUs, the
// figures scattered more widely on the test machine. Latency is sockperf's TCP ping-pong with
// both ends pinned to one CPU, which IsolateCPU empties of every other thread: unpinned, it
// measures the VM's wake-up from idle, not the path. A client run is tried a few times before
// a measurement fails: a server that has just started, or has not yet noticed the previous
// client leave, refuses once.
//
// No absolute figure on such a machine is worth comparing with anything, so a benchmark
// measures its baseline and what it is about back to back, round after round, and judges the
// median of the per-round ratios (PairedRatios, Median).
package perf
