// Command sriovbench measures how fast Loom's SR-IOV device plugins tell the kubelet that a
// node's VFs changed. It needs no root and no cluster: a fake sysfs tree (package sriovtest)
// stands for the NIC, a Manager rescans it at loomd's default interval and serves one pool's
// device plugin, and a fake kubelet (package fakekubelet) registers the plugin and keeps its
// ListAndWatch stream open, as the kubelet's device manager does. Each round makes four
// changes the way the kernel shows them in sysfs — sriov_numvfs up, sriov_numvfs down, a VF's
// link down, the link up — and times each from the change until the kubelet's list shows it.
//
// A change lands at a random moment of the rescan cycle, as changes on a node do: each waits
// a random part of the interval first. Measured this way, the reaction time is spread over
// about one interval, and its median is about half of it plus the cost of a scan and a
// ListAndWatch update.
//
// It prints the median and p90 of each kind of change and of all of them and, last, the
// BENCH line of the median over all changes.
//
//	sriovbench [-rounds 25] [-interval 200ms] [-vfs 8]
//
// With the subcommand add, it measures instead the CNI ADD of a pod with a VF attachment
// against the same pod with a macvlan attachment, on a simulated cluster (see add.go):
//
//	sriovbench add -dir DIR [-node node1] [-rounds 20]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/loom-cni/loom/e2e/perf"
	"github.com/loom-cni/loom/internal/fakekubelet"
	"github.com/loom-cni/loom/sriov"
	"github.com/loom-cni/loom/sriov/deviceplugin"
	"github.com/loom-cni/loom/sriov/sriovtest"
)

const (
	// pool is the benchmark's one pool: every VF of pf.
	pool sriov.ResourceName = "loom.dev/sriov_bench"
	pf                      = "ens1f0"
	// target is the reaction time the median must stay under, in milliseconds.
	target = 1000
	// changeTimeout bounds the wait for one change to reach the kubelet.
	changeTimeout = 10 * time.Second
)

type options struct {
	rounds   int
	interval time.Duration
	vfs      int
	log      *slog.Logger
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	if len(os.Args) > 1 && os.Args[1] == "add" {
		var o addOptions
		fs := flag.NewFlagSet("add", flag.ExitOnError)
		fs.StringVar(&o.dir, "dir", "", "directory of a simulated cluster started with --sriov")
		fs.StringVar(&o.node, "node", "node1", "node the pods run on")
		fs.IntVar(&o.rounds, "rounds", 20, "measured rounds, each one pod of each kind")
		_ = fs.Parse(os.Args[2:])
		err := runAdd(ctx, o)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "sriovbench add:", err)
			os.Exit(1)
		}
		return
	}
	o := options{log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	flag.IntVar(&o.rounds, "rounds", 25, "rounds; each makes the four changes once")
	flag.DurationVar(&o.interval, "interval", deviceplugin.DefaultInterval, "the Manager's rescan interval (loomd's sriov.rescanInterval)")
	flag.IntVar(&o.vfs, "vfs", 8, "VFs of the PF between changes")
	flag.Parse()
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sriovbench:", err)
		os.Exit(1)
	}
}

// change is one kind of change made to the tree, and how the kubelet's list shows it.
type change struct {
	name  string
	apply func() error
	shown func([]fakekubelet.Device) bool
}

func run(ctx context.Context, o options) error {
	if o.rounds < 1 || o.vfs < 1 || o.interval <= 0 {
		return errors.New("want -rounds and -vfs of at least 1 and a positive -interval")
	}
	work, err := os.MkdirTemp("", "sriovbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	sysfs := filepath.Join(work, "sysfs")
	if err = os.Mkdir(sysfs, 0o755); err != nil {
		return err
	}
	tree, err := sriovtest.Write(sysfs, sriovtest.PF{Name: pf, TotalVFs: o.vfs + 1, NumVFs: o.vfs})
	if err != nil {
		return fmt.Errorf("write fake sysfs: %w", err)
	}
	if err = os.Setenv("PCIDB_PATH", tree.PCIIDs); err != nil {
		return err
	}
	pluginDir := filepath.Join(work, "dp") // short: unix socket paths are limited
	kubelet, err := fakekubelet.Start(fakekubelet.Config{PluginDir: pluginDir, Logger: o.log})
	if err != nil {
		return err
	}
	defer kubelet.Stop()

	manager := deviceplugin.NewManager(deviceplugin.ManagerConfig{
		Root:       tree.Root,
		Pools:      []sriov.PoolConfig{{Name: pool, PFs: []sriov.PFSelector{{PF: pf}}}},
		Dir:        pluginDir,
		DevInfoDir: filepath.Join(work, "devinfo"),
		Interval:   o.interval,
		Logger:     o.log,
	})
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- manager.Run(runCtx) }()
	defer func() {
		cancel()
		<-done
	}()
	if err := waitShown(ctx, kubelet, hasN(o.vfs)); err != nil {
		return fmt.Errorf("the pool never reached the kubelet: %w", err)
	}

	first := pf + "v0"
	changes := []change{
		{"sriov_numvfs up", func() error { return tree.SetNumVFs(pf, o.vfs+1) }, hasN(o.vfs + 1)},
		{"sriov_numvfs down", func() error { return tree.SetNumVFs(pf, o.vfs) }, hasN(o.vfs)},
		{"link down", func() error { return tree.SetOperstate(first, "down") }, health(tree.VFAddress(pf, 0), pluginapi.Unhealthy)},
		{"link up", func() error { return tree.SetOperstate(first, "up") }, health(tree.VFAddress(pf, 0), pluginapi.Healthy)},
	}
	times := make(map[string][]time.Duration, len(changes))
	var all []time.Duration
	for range o.rounds {
		for _, c := range changes {
			if err := sleep(ctx, rand.N(o.interval)); err != nil {
				return err
			}
			start := time.Now()
			if err := c.apply(); err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			if err := waitShown(ctx, kubelet, c.shown); err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			d := time.Since(start)
			times[c.name] = append(times[c.name], d)
			all = append(all, d)
		}
	}

	fmt.Printf("device plugin reaction, from a change in sysfs to the kubelet's list; rescan every %s, %d rounds:\n", o.interval, o.rounds)
	for _, c := range changes {
		fmt.Printf("  %-18s median %6.1f ms  p90 %6.1f ms\n", c.name, ms(perf.MedianDuration(times[c.name])), ms(percentile(times[c.name], 90)))
	}
	fmt.Printf("  %-18s median %6.1f ms  p90 %6.1f ms  (max %.1f ms)\n", "all", ms(perf.MedianDuration(all)), ms(percentile(all, 90)), ms(slices.Max(all)))
	perf.Verdict("sriov-plugin-reaction", ms(perf.MedianDuration(all)), "ms", "<", target)
	return nil
}

// waitShown waits until the kubelet's list of the pool satisfies shown.
func waitShown(ctx context.Context, k *fakekubelet.Kubelet, shown func([]fakekubelet.Device) bool) error {
	ctx, cancel := context.WithTimeout(ctx, changeTimeout)
	defer cancel()
	return k.WaitDevices(ctx, string(pool), shown)
}

// hasN is shown when the pool has n devices, all healthy.
func hasN(n int) func([]fakekubelet.Device) bool {
	return func(ds []fakekubelet.Device) bool {
		return len(ds) == n && !slices.ContainsFunc(ds, func(d fakekubelet.Device) bool { return d.Health != pluginapi.Healthy })
	}
}

// health is shown when device id has the health h.
func health(id, h string) func([]fakekubelet.Device) bool {
	return func(ds []fakekubelet.Device) bool {
		return slices.ContainsFunc(ds, func(d fakekubelet.Device) bool { return d.ID == id && d.Health == h })
	}
}

// sleep waits d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// percentile is the p-th percentile of ds by nearest rank: the smallest figure that at
// least p percent of them do not exceed.
func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[max(0, (len(s)*p+99)/100-1)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
