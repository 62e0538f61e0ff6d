// Command fabricbench measures Loom's primary network on a running simulated cluster (loomctl
// sim up): its datapath against a bare veth pair, and its control plane against a thousand
// simulated remote nodes. It runs on the host, as root, and reaches into the cluster's pods
// and nodes through their namespaces. It prints its figures and, last, one BENCH line per
// target, every ratio computed from measurements of this run alone.
//
//	fabricbench datapath -dir DIR -to node1,node2
//	    pod↔pod TCP throughput (iperf3) and request/response latency (sockperf) from a pod on
//	    node1 to a pod on each node named, each as a ratio to a veth pair between two network
//	    namespaces this command creates, measured in the same rounds.
//	fabricbench routes -dir DIR -nodes 1000
//	    how long node1's loomd takes to route the blocks of that many remote nodes, and its
//	    resident memory once it has: in vxlan mode from a cold start and with loomd running,
//	    in bgp mode from the moment the router announces them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fabricbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: fabricbench datapath|routes -dir DIR [flags]")
	}
	switch args[0] {
	case "datapath":
		var o datapathOptions
		fs := flag.NewFlagSet("datapath", flag.ContinueOnError)
		fs.StringVar(&o.dir, "dir", "", "the simulated cluster's directory")
		fs.StringVar(&o.from, "from", "node1", "the node of the client pod")
		fs.Func("to", "comma-separated nodes of the server pods (the client's own node: same-node traffic)", o.setTo)
		fs.StringVar(&o.prefix, "prefix", fmt.Sprintf("loomb-%d-", os.Getpid()), "name prefix of the baseline's network namespaces")
		fs.IntVar(&o.tputRounds, "throughput-rounds", 6, "throughput rounds; each measures the baseline and every path once")
		fs.DurationVar(&o.tput, "throughput-time", time.Second, "length of one iperf3 run")
		fs.IntVar(&o.rrRounds, "latency-rounds", 5, "latency rounds; each measures the baseline and every path once")
		fs.DurationVar(&o.rr, "latency-time", time.Second, "length of one sockperf run (which takes 2.3 s more: sockperf waits before it starts, and leaves out the first 0.4 s)")
		fs.StringVar(&o.cpu, "cpu", "1", "the CPU both ends of the latency test are pinned to")
		fs.Func("reference", "comma-separated nodes of -to whose underlay from the client's node is measured too, to tell the simulation's share of a path from Loom's", o.setReference)
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return runDatapath(ctx, o)
	case "routes":
		var o routesOptions
		fs := flag.NewFlagSet("routes", flag.ContinueOnError)
		fs.StringVar(&o.dir, "dir", "", "the simulated cluster's directory")
		fs.StringVar(&o.node, "node", "node1", "the node whose loomd is measured")
		fs.IntVar(&o.count, "nodes", 1000, "simulated remote nodes, one block each")
		fs.StringVar(&o.clusterCIDR, "cluster-cidr", "10.244.0.0/16", "the cluster CIDR the blocks are carved from")
		fs.IntVar(&o.blockBits, "block-bits", 26, "the prefix length of a block")
		fs.DurationVar(&o.timeout, "timeout", defaultRoutesTimeout, "how long to wait for the routes before giving up")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return runRoutes(ctx, o)
	}
	return fmt.Errorf("unknown command %q: want datapath or routes", args[0])
}
