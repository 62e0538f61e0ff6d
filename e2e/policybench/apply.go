package main

// Design notes.
//
// What is timed is what loomd's CNI server waits for: Engine.Admit at ADD and Engine.Release
// at DEL, each a compile of the whole cluster, a render of the node's table, the difference
// from the table last applied and one nft transaction; and Engine.Restore on a fresh engine,
// what a restarted loomd does before it serves ADDs: the same, with the table written whole.
// The engine is the real one, fed a static Source holding the made-up cluster, with the
// bench node's 100 pods registered as their ADDs would have registered them.
//
// The engine writes the node's table into a network namespace of our own, never the host's:
// its Applier runs nft on a thread switched into that namespace, which loomd, running in
// the node's namespace already, does not need; that costs a few tens of microseconds a
// write. Before timing anything, the benchmark checks that the engine's writes land: the
// first pod's interface is in the table's egress map, and an admitted pod's appears and goes
// with it.
//
// Each figure is the median of many calls; the compile, render and whole-table write that
// make up a resync are timed apart too, as figures without a target, to tell where the time
// goes.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/loom-cni/loom/e2e/perf"
	"github.com/loom-cni/loom/policy"
)

type applyOptions struct {
	commonOptions
	log     *slog.Logger
	ops     int
	resyncs int
}

// staticSource is a Source whose cluster never changes, seen as loomd's ClusterSource shows
// it to the engine of node: the node's pods as peers only (the engine adds its own from
// their ADDs), and room after the pods for the engine to add them without a copy.
type staticSource struct{ snap policy.Snapshot }

func newStaticSource(snap policy.Snapshot, node string) staticSource {
	pods := make([]policy.Pod, len(snap.Pods), len(snap.Pods)+512)
	copy(pods, snap.Pods)
	for i := range pods {
		if pods[i].Node == node {
			pods[i].Node = ""
		}
	}
	snap.Pods = pods
	return staticSource{snap: snap}
}

// Snapshot returns the same snapshot every time, as ClusterSource does until the cluster
// changes.
func (s staticSource) Snapshot() policy.Snapshot { return s.snap }

// Changed never fires.
func (s staticSource) Changed() <-chan struct{} { return nil }

func runApply(ctx context.Context, o applyOptions) error {
	if o.ops < 1 || o.resyncs < 1 {
		return errors.New("apply: -ops and -resyncs must be positive")
	}
	c, err := synthesize(o.shape)
	if err != nil {
		return err
	}
	nss := &namespaces{prefix: o.prefix}
	defer nss.removeAll()
	netns, err := nss.add(ctx, "engine")
	if err != nil {
		return err
	}
	local := c.localPods(benchNode)
	if len(local) == 0 {
		return fmt.Errorf("no pod of the made-up cluster runs on %s", benchNode)
	}
	fmt.Printf("policy engine: %d tenants, %d pods on %d nodes known, %d of them on %s\n",
		o.shape.tenants, len(c.snap.Pods), o.shape.nodes, len(local), benchNode)
	table, pure, err := timeParts(ctx, o, c, netns)
	if err != nil {
		return err
	}
	// The admitted pods' own namespaces, one each as sandboxes have: as at a real ADD, the
	// engine writes the link rules of the pod's eth0 there.
	var podNetns []string
	for i := range o.ops {
		path, aerr := nss.add(ctx, fmt.Sprintf("extra-%d", i))
		if aerr != nil {
			return aerr
		}
		if err = ipCmd(ctx, "-n", filepath.Base(path), "link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer"); err != nil {
			return err
		}
		podNetns = append(podNetns, path)
	}
	t, err := timeEngine(ctx, o, c, netns, podNetns, local)
	if err != nil {
		return err
	}
	fmt.Printf("  the engine's table after the last release: %d rules (rendered above: %d)\n", t.hostRules, ruleCount(table))
	fmt.Printf("  full resync (Restore on a fresh engine), ms: %s\n", joinMS(t.resync))
	fmt.Printf("  admit one pod, ms: %s\n", joinMS(t.admit))
	fmt.Printf("  release one pod, ms: %s\n", joinMS(t.release))
	fmt.Printf("  of each admit and release, compile and render take about %.1f ms; the rest is the snapshot's copy, the diff and nft\n", ms(pure))
	perf.Verdict("policy-apply-one-pod", ms(perf.MedianDuration(t.admit)), "ms", "<", 20)
	perf.Verdict("policy-release-one-pod", ms(perf.MedianDuration(t.release)), "ms", "<", 20)
	perf.Verdict("policy-full-resync", perf.MedianDuration(t.resync).Seconds(), "s", "<", 2)
	return nil
}

// timings are what timeEngine measured.
type timings struct {
	resync, admit, release []time.Duration
	hostRules              int
}

// timeEngine restores the bench node's pods on o.resyncs fresh engines writing into the
// namespace netns, then on the last one admits and releases o.ops extra pods one at a time,
// each with its link rules in a namespace of podNetns, and times each call.
func timeEngine(ctx context.Context, o applyOptions, c *cluster, netns string, podNetns []string, local []policy.LocalPod) (timings, error) {
	var t timings
	src := newStaticSource(c.snap, benchNode)
	var e *policy.Engine
	for range o.resyncs {
		e = policy.NewEngine(benchNode, o.nft, netns, src, o.log)
		start := time.Now()
		if err := e.Restore(ctx, local); err != nil {
			return t, err
		}
		t.resync = append(t.resync, time.Since(start))
	}
	if err := expectInterface(ctx, o.nft, netns, local[0].Pod, true); err != nil {
		return t, err
	}
	for i := range o.ops {
		extra := c.extraPod(i)
		extra.Netns = podNetns[i]
		start := time.Now()
		if err := e.Admit(ctx, extra); err != nil {
			return t, err
		}
		t.admit = append(t.admit, time.Since(start))
		if i == 0 {
			if err := expectInterface(ctx, o.nft, netns, extra.Pod, true); err != nil {
				return t, err
			}
		}
		start = time.Now()
		if err := e.Release(ctx, extra.ContainerID); err != nil {
			return t, err
		}
		t.release = append(t.release, time.Since(start))
		if i == 0 {
			if err := expectInterface(ctx, o.nft, netns, extra.Pod, false); err != nil {
				return t, err
			}
		}
	}
	t.hostRules = e.Stats().HostRules
	return t, nil
}

// timeParts prints the parts of a full resync timed apart: Compile, Render, and the
// whole-table write of an Applier, each the median of o.resyncs runs. It returns the
// rendered table and the medians of Compile and Render added up.
func timeParts(ctx context.Context, o applyOptions, c *cluster, netns string) (policy.NftTable, time.Duration, error) {
	var compile, render, replace []time.Duration
	var table policy.NftTable
	a := policy.NewApplier(o.nft, netns, o.log)
	for range o.resyncs {
		start := time.Now()
		rs := policy.Compile(c.snap, benchNode)
		compile = append(compile, time.Since(start))
		start = time.Now()
		table = policy.Render(rs.Host, policy.HostTable)
		render = append(render, time.Since(start))
		a.Reset()
		start = time.Now()
		if err := a.Apply(ctx, table); err != nil {
			return table, 0, err
		}
		replace = append(replace, time.Since(start))
	}
	fmt.Printf("  %s's table: %s\n", benchNode, describeTable(table))
	fmt.Printf("  median of %d: compile %.1f ms, render %.1f ms, write the table whole %.1f ms\n",
		o.resyncs, ms(perf.MedianDuration(compile)), ms(perf.MedianDuration(render)), ms(perf.MedianDuration(replace)))
	return table, perf.MedianDuration(compile) + perf.MedianDuration(render), a.Delete(ctx)
}

// expectInterface checks that pod's host interface is in the egress map of the table in
// netns, or that it is not.
func expectInterface(ctx context.Context, nft, netns string, pod policy.Pod, want bool) error {
	ifname := pod.Endpoints[0].HostInterface
	out, err := nsCmd(ctx, netns, nft, "list", "map", "inet", "loom", "egress").CombinedOutput()
	if err != nil {
		return fmt.Errorf("list the engine's egress map in %s: %w: %s", netns, err, strings.TrimSpace(string(out)))
	}
	if got := strings.Contains(string(out), `"`+ifname+`"`); got != want {
		return fmt.Errorf("pod %s: its interface %s in the engine's egress map: %v, want %v", pod.PodKey, ifname, got, want)
	}
	return nil
}

func ruleCount(t policy.NftTable) int {
	n := 0
	for _, c := range t.Chains {
		n += len(c.Rules)
	}
	return n
}

// ms is d in milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// joinMS renders ds in milliseconds, to a tenth, separated by spaces.
func joinMS(ds []time.Duration) string {
	fs := make([]float64, len(ds))
	for i, d := range ds {
		fs[i] = ms(d)
	}
	return perf.Join(fs, "%.1f")
}
