package main

// Design notes.
//
// Single-stream throughput on this kind of machine moves by 20-30% from one run to the next
// (TESTBED.md), far more than the differences the targets are about, so no absolute figure is
// compared with anything. Every round measures the baseline, a veth pair between two network
// namespaces of our own (the simplest path between two namespaces), and every path under
// test once, back to back; each path's figure in a round is divided by the baseline's of the
// same round, and the verdict is the median of those paired ratios. The order within a round
// alternates (baseline first, then last), so that a drift of the machine during a round
// favours neither side. Latency is measured the same way, with sockperf's TCP ping-pong and
// both ends pinned to one CPU: unpinned, it measures the VM's wake-up from idle, not the path.
// Throughput runs are short and many (6 × 1 s by default) rather than few and long: the
// machine's drift is slow next to a second, so close pairs cancel more of it, and a median of
// more pairs shrugs off the runs a burst of someone else's work spoiled.
//
// A pod on another node is reached across the simulated underlay, two more veth hops and a
// bridge (and, on the other subnet, the router) that a real cluster's wire replaces. With
// -reference, the underlay alone between the two nodes is measured in the same rounds, as a
// path of its own without a target, so that a report can tell the simulation's share of a
// cross-node path from Loom's.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/loom-cni/loom/e2e/perf"
	"github.com/loom-cni/loom/e2e/sim"
)

// benchNamespace holds the pods the datapath benchmark measures between.
const benchNamespace = "fabricbench"

type datapathOptions struct {
	dir        string
	from       string
	to         []string
	prefix     string
	tputRounds int
	tput       time.Duration
	rrRounds   int
	rr         time.Duration
	cpu        string
	reference  []string
}

func (o *datapathOptions) setTo(s string) error {
	o.to = append(o.to, splitList(s)...)
	return nil
}

func (o *datapathOptions) setReference(s string) error {
	o.reference = append(o.reference, splitList(s)...)
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, n := range strings.Split(s, ",") {
		if n = strings.TrimSpace(n); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// target is what a path is held to, relative to the veth pair.
type target struct {
	// kind says what carries the traffic.
	kind string
	// throughput is the least fraction of the veth pair's throughput the path must reach.
	throughput float64
	// latency is the largest multiple of the veth pair's p50 latency the path may have.
	latency float64
}

// targetFor returns the target of traffic from a pod on node from to a pod on node to. In
// vxlan-crosssubnet mode a peer on the same underlay subnet is routed without encapsulation
// and is held to what the bgp mode is held to.
func targetFor(mode sim.Mode, from, to sim.Node) (target, error) {
	var (
		sameNode = target{kind: "same node", throughput: 0.95, latency: 1.25}
		routed   = target{kind: "routed", throughput: 0.9, latency: 1.25}
		overlay  = target{kind: "vxlan", throughput: 0.75, latency: 1.4}
	)
	switch {
	case from.Name == to.Name:
		return sameNode, nil
	case mode == sim.ModeBGP:
		return routed, nil
	case mode == sim.ModeVXLAN:
		return overlay, nil
	case mode == sim.ModeVXLANCrossSubnet && from.Subnet == to.Subnet:
		return routed, nil
	case mode == sim.ModeVXLANCrossSubnet:
		return overlay, nil
	}
	return target{}, fmt.Errorf("mode %s is not one of Loom's own networks: nothing to hold it to", mode)
}

// path is a client and a server endpoint and what the traffic between them is held to.
type path struct {
	name           string // what the BENCH lines are called after
	label          string // what the report calls it
	pod            string // the server pod, for a path between pods
	client, server perf.Endpoint
	target         target
	// reference marks a path measured only to explain the others: the underlay between two
	// nodes, which every cross-node path crosses and which is the simulation's, not Loom's.
	reference bool
}

func runDatapath(ctx context.Context, o datapathOptions) error {
	if o.dir == "" || len(o.to) == 0 || o.tputRounds < 1 || o.rrRounds < 1 {
		return errors.New("datapath: -dir, -to and positive numbers of rounds are required")
	}
	c, err := sim.Open(o.dir)
	if err != nil {
		return err
	}
	paths, pods, err := planPaths(c, o)
	if err != nil {
		return err
	}
	eps, err := startPods(ctx, c, benchNamespace, pods)
	if err != nil {
		return err
	}
	for i := range paths {
		if paths[i].pod != "" {
			paths[i].client, paths[i].server = eps[clientPod], eps[paths[i].pod]
		}
	}
	client, server, removeVeth, err := newVethPair(ctx, o.prefix)
	if err != nil {
		return err
	}
	defer removeVeth()
	base := path{name: "veth", label: "veth pair (baseline)", client: client, server: server}
	all := append([]path{base}, paths...)
	servers := make([]perf.Endpoint, len(all))
	for i, p := range all {
		servers[i] = p.server
	}
	stopServers, err := perf.StartServers(ctx, o.cpu, servers...)
	if err != nil {
		return err
	}
	defer stopServers()
	for _, p := range all {
		if err = waitReachable(ctx, p, 30*time.Second); err != nil {
			return err
		}
	}
	fmt.Printf("datapath, mode %s: %d rounds of iperf3 (%s, one TCP stream), %d of sockperf TCP ping-pong (%s, both ends on CPU %s)\n",
		c.Options().Mode, o.tputRounds, o.tput, o.rrRounds, o.rr, o.cpu)
	tput, err := measureRounds(ctx, o.tputRounds, all, func(ctx context.Context, p path) (float64, error) {
		return perf.Throughput(ctx, p.client, p.server, o.tput)
	})
	if err != nil {
		return err
	}
	rtt, err := measureLatency(ctx, o, all)
	if err != nil {
		return err
	}
	report(all, tput, rtt)
	return nil
}

// clientPod is the pod every measured path starts from.
const clientPod = "client"

// planPaths returns the paths from a pod on o.from to a pod on each node of o.to, followed by
// the underlay references asked for, and the pods they need (name → node). The pod paths'
// endpoints are filled in once the pods run.
func planPaths(c *sim.Cluster, o datapathOptions) ([]path, map[string]string, error) {
	mode := c.Options().Mode
	from, err := c.Node(o.from)
	if err != nil {
		return nil, nil, err
	}
	pods := map[string]string{clientPod: from.Name}
	var paths, refs []path
	for _, name := range o.to {
		var (
			to sim.Node
			t  target
		)
		if to, err = c.Node(name); err != nil {
			return nil, nil, err
		}
		if t, err = targetFor(mode, from, to); err != nil {
			return nil, nil, err
		}
		server := "server-" + to.Name
		pods[server] = to.Name
		paths = append(paths, path{
			name:   fmt.Sprintf("datapath_%s_%s_%s", mode, from.Name, to.Name),
			label:  fmt.Sprintf("%s→%s (%s)", from.Name, to.Name, t.kind),
			pod:    server,
			target: t,
		})
		if slices.Contains(o.reference, to.Name) && to.Name != from.Name {
			refs = append(refs, path{
				label:  fmt.Sprintf("%s→%s underlay (reference)", from.Name, to.Name),
				client: nodeEndpoint(c, from), server: nodeEndpoint(c, to), reference: true,
			})
		}
	}
	return append(paths, refs...), pods, nil
}

// measureRounds measures every path once per round and returns each path's figures by
// round, indexed like paths: figures[i][r] and figures[0][r] were measured in the same round.
// The order within a round alternates so that a drift of the machine favours neither the
// baseline, paths[0], nor the paths under test.
func measureRounds(ctx context.Context, rounds int, paths []path, measure func(context.Context, path) (float64, error)) ([][]float64, error) {
	figures := make([][]float64, len(paths))
	for r := range rounds {
		order := make([]int, len(paths))
		for i := range order {
			order[i] = i
		}
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, i := range order {
			v, err := measure(ctx, paths[i])
			if err != nil {
				return nil, err
			}
			figures[i] = append(figures[i], v)
		}
	}
	return figures, nil
}

// report prints every path's figures and its ratios to the baseline, paths[0], then the
// verdicts.
func report(paths []path, tput, rtt [][]float64) {
	for i, p := range paths {
		fmt.Printf("  %-34s throughput %s Gbit/s   p50 RTT %s µs\n", p.label, perf.Join(tput[i], "%.2f"), perf.Join(rtt[i], "%.1f"))
	}
	tputRatio, rttRatio := make([]float64, len(paths)), make([]float64, len(paths))
	for i, p := range paths[1:] {
		tr, lr := perf.PairedRatios(tput[i+1], tput[0]), perf.PairedRatios(rtt[i+1], rtt[0])
		tputRatio[i+1], rttRatio[i+1] = perf.Median(tr), perf.Median(lr)
		fmt.Printf("  %-34s / veth pair, by round: throughput %s (median %.3f), p50 RTT %s (median %.3f)\n",
			p.label, perf.Join(tr, "%.3f"), tputRatio[i+1], perf.Join(lr, "%.3f"), rttRatio[i+1])
	}
	for i, p := range paths[1:] {
		if p.reference {
			continue
		}
		perf.Verdict(p.name+"_throughput_vs_veth", tputRatio[i+1], "ratio", ">=", p.target.throughput)
		perf.Verdict(p.name+"_latency_p50_vs_veth", rttRatio[i+1], "ratio", "<=", p.target.latency)
	}
}

// measureLatency runs the latency rounds with o.cpu emptied of every other thread (the
// simulated control plane's among them: API server, etcd, every loomd and pod runtime), and
// gives every thread its CPUs back whatever happens.
func measureLatency(ctx context.Context, o datapathOptions, all []path) ([][]float64, error) {
	defer perf.IsolateCPU(o.cpu)()
	return measureRounds(ctx, o.rrRounds, all, func(ctx context.Context, p path) (float64, error) {
		return perf.LatencyP50(ctx, p.client, p.server, o.rr, o.cpu)
	})
}

// waitReachable waits until the client end of p gets an answer to a ping from its server
// end: in bgp mode the routes arrive a moment after the cluster is up.
func waitReachable(ctx context.Context, p path, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := perf.Ping(ctx, p.client, p.server, time.Second)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %s gets no answer from %s (%s) within %s: %w",
				p.label, p.client.Name, p.server.Name, p.server.IP, timeout, err)
		}
		if !perf.Sleep(ctx, 200*time.Millisecond) {
			return ctx.Err()
		}
	}
}
