// Command policybench measures Loom's policy enforcement with a large made-up cluster known
// to the engine: 1,000 tenants, 10,000 pods on 100 nodes, a NetworkPolicy per tenant
// namespace. It runs as root on the host, makes every network namespace it uses (named with
// -prefix, so a caller's exit trap can remove them even if it is killed) and removes them.
// It prints its figures and, last, one BENCH line per target, every ratio computed from
// measurements of this run alone.
//
//	policybench datapath -prefix P
//	    pod↔pod TCP throughput (iperf3) and request/response latency (sockperf) between two
//	    pods of the bench node with the node's compiled table applied, each as a ratio to the
//	    same pods with no table, measured in the same rounds; before measuring, it checks
//	    that the table is enforced.
//	policybench apply -prefix P
//	    how long the engine takes to admit and release one pod of a node that runs 100 and
//	    knows 10,000, and to restore the node's rules from nothing, as a restarted loomd does.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "policybench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: policybench datapath|apply -prefix PREFIX [flags]")
	}
	var common commonOptions
	addCommon := func(fs *flag.FlagSet) {
		fs.StringVar(&common.prefix, "prefix", fmt.Sprintf("loomb-%d-", os.Getpid()), "name prefix of the network namespaces this command makes")
		fs.StringVar(&common.nft, "nft", "nft", "the nft binary")
		fs.IntVar(&common.shape.tenants, "tenants", 1000, "tenants of the made-up cluster")
		fs.IntVar(&common.shape.pods, "pods", 10000, "pods of the made-up cluster")
		fs.IntVar(&common.shape.nodes, "nodes", 100, "nodes of the made-up cluster, the bench node among them")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	switch args[0] {
	case "datapath":
		o := datapathOptions{log: log}
		fs := flag.NewFlagSet("datapath", flag.ContinueOnError)
		addCommon(fs)
		fs.IntVar(&o.tputRounds, "throughput-rounds", 8, "throughput rounds; each measures the pods with and without the table once")
		fs.DurationVar(&o.tput, "throughput-time", time.Second, "length of one iperf3 run")
		fs.IntVar(&o.rrRounds, "latency-rounds", 7, "latency rounds; each measures the pods with and without the table once")
		fs.DurationVar(&o.rr, "latency-time", time.Second, "length of one sockperf run (which takes 2.3 s more: sockperf waits before it starts, and leaves out the first 0.4 s)")
		fs.StringVar(&o.cpu, "cpu", "1", "the CPU both ends of the latency test are pinned to")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		o.commonOptions = common
		return runDatapath(ctx, o)
	case "apply":
		o := applyOptions{log: log}
		fs := flag.NewFlagSet("apply", flag.ContinueOnError)
		addCommon(fs)
		fs.IntVar(&o.ops, "ops", 25, "pods admitted and released, one at a time")
		fs.IntVar(&o.resyncs, "resyncs", 5, "full resyncs")
		profile := fs.String("cpuprofile", "", "write a CPU profile of the run to this file")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		o.commonOptions = common
		if *profile != "" {
			f, err := os.Create(*profile)
			if err != nil {
				return err
			}
			defer f.Close()
			if err := pprof.StartCPUProfile(f); err != nil {
				return err
			}
			defer pprof.StopCPUProfile()
		}
		return runApply(ctx, o)
	}
	return fmt.Errorf("unknown command %q: want datapath or apply", args[0])
}

// commonOptions are the flags of every command.
type commonOptions struct {
	prefix string
	nft    string
	shape  shape
}
