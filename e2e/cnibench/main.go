// Command cnibench measures what Loom adds to a pod's network setup. Run inside a node of the
// simulated cluster (loomctl sim node-exec), it drives ADD+DEL of pods through the loom
// conflist exactly as a container runtime does, and the same delegates directly — the very
// configurations loomd resolved, read back from the node's ledger — interleaving the two so
// drift on the machine affects both alike. It prints the figures and, last, one BENCH line
// per target, computed from this run alone.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/loom-cni/loom/delegate"
	"github.com/loom-cni/loom/e2e/perf"
)

type pod struct{ namespace, name, uid string }

// variant is one way of giving a pod its networks: through loom, or the bare delegates.
type variant struct {
	name string
	add  func(ctx context.Context, netns, id string, p pod) error
	del  func(ctx context.Context, netns, id string, p pod) error
}

func main() {
	conflist := flag.String("conflist", "/etc/cni/net.d/00-loom.conflist", "loom's conflist as the runtime sees it")
	binDir := flag.String("bin", "/opt/cni/bin", "CNI plugin directory")
	ledgerDir := flag.String("ledger", "/var/lib/loom/ledger", "loomd's ledger, to read the delegates' configurations back")
	pods := flag.String("pods", "", "comma-separated namespace/name/uid of pods that exist in the API, bound to this node and left alone by the runtime")
	n := flag.Int("n", 40, "sequential pod lifecycles (ADD, life, DEL) of each variant")
	life := flag.Duration("life", 200*time.Millisecond, "how long each pod lives between ADD and DEL")
	flag.Parse()
	if err := run(*conflist, *binDir, *ledgerDir, *pods, *n, *life); err != nil {
		fmt.Fprintln(os.Stderr, "cnibench:", err)
		os.Exit(1)
	}
}

func run(conflistPath, binDir, ledgerDir, podList string, n int, life time.Duration) error {
	var ps []pod
	for _, p := range strings.Split(strings.Trim(podList, ","), ",") {
		f := strings.Split(p, "/")
		if len(f) != 3 {
			return fmt.Errorf("pod %q: want namespace/name/uid", p)
		}
		ps = append(ps, pod{f[0], f[1], f[2]})
	}
	loomList, err := libcni.ConfListFromFile(conflistPath)
	if err != nil {
		return err
	}
	cacheDir, err := os.MkdirTemp("", "cnibench-cache-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(cacheDir)
	cni := libcni.NewCNIConfigWithCacheDir([]string{binDir}, cacheDir, nil)
	ctx := context.Background()

	// One ADD through loom tells us exactly which delegates it runs, and with what.
	specs, err := resolvedSpecs(ctx, cni, loomList, ledgerDir, ps[0])
	if err != nil {
		return err
	}
	loom := variant{
		name: "loom",
		add: func(ctx context.Context, netns, id string, p pod) error {
			_, addErr := cni.AddNetworkList(ctx, loomList, runtimeConf(netns, id, p, "eth0", nil))
			return addErr
		},
		del: func(ctx context.Context, netns, id string, p pod) error {
			return cni.DelNetworkList(ctx, loomList, runtimeConf(netns, id, p, "eth0", nil))
		},
	}
	lists := make([]*libcni.NetworkConfigList, len(specs))
	for i, s := range specs {
		if lists[i], err = libcni.NetworkConfFromBytes(s.Config); err != nil {
			return err
		}
	}
	bare := variant{
		name: "bare delegates",
		add: func(ctx context.Context, netns, id string, p pod) error {
			for i, s := range specs {
				if _, err := cni.AddNetworkList(ctx, lists[i], runtimeConf(netns, id, p, s.Ifname, s.CapabilityArgs)); err != nil {
					return err
				}
			}
			return nil
		},
		del: func(ctx context.Context, netns, id string, p pod) error {
			var errs []error
			for i, s := range slices.Backward(specs) {
				errs = append(errs, cni.DelNetworkList(ctx, lists[i], runtimeConf(netns, id, p, s.Ifname, s.CapabilityArgs)))
			}
			return errors.Join(errs...)
		},
	}

	// Sequential pod lifecycles, the two variants interleaved so drift affects both alike.
	adds, dels := map[string][]time.Duration{}, map[string][]time.Duration{}
	for i := 0; i < n; i++ {
		for _, v := range []variant{loom, bare} {
			add, del, err := lifecycle(ctx, fmt.Sprintf("seq%d", i), ps[0], v, life)
			if err != nil {
				return fmt.Errorf("%s: %w", v.name, err)
			}
			adds[v.name], dels[v.name] = append(adds[v.name], add), append(dels[v.name], del)
		}
	}
	// Each loom lifecycle ran right next to a bare one, so their ratio cancels the machine's
	// drift; the median of those paired ratios is the overhead at p50.
	var ratios []float64
	for i := range adds[loom.name] {
		ratios = append(ratios, float64(adds[loom.name][i]+dels[loom.name][i])/float64(adds[bare.name][i]+dels[bare.name][i]))
	}
	slices.Sort(ratios)
	for _, v := range []variant{loom, bare} {
		fmt.Printf("%-15s p50 ADD %6.1f ms  DEL %6.1f ms  (p90 %6.1f / %6.1f ms) over %d pods with %d attachments\n", v.name,
			ms(percentile(adds[v.name], 50)), ms(percentile(dels[v.name], 50)),
			ms(percentile(adds[v.name], 90)), ms(percentile(dels[v.name], 90)), n, len(specs))
	}

	loomWall, loomFail := concurrentAdds(ctx, ps, loom)
	bareWall, bareFail := concurrentAdds(ctx, ps, bare)
	fmt.Printf("%d concurrent pod ADDs: loom %.0f ms wall (%d failed), bare delegates %.0f ms wall (%d failed): %.2fx\n",
		len(ps), ms(loomWall), loomFail, ms(bareWall), bareFail, float64(loomWall)/float64(bareWall))

	fmt.Printf("ADD+DEL through loom / bare delegates, paired: p50 %.3f, p10 %.3f, p90 %.3f\n",
		ratios[len(ratios)/2], ratios[len(ratios)/10], ratios[len(ratios)*9/10])
	perf.Verdict("cni_add_del_p50_vs_bare", ratios[len(ratios)/2], "ratio", "<=", 1.15)
	perf.Verdict("concurrent_add_failures", float64(loomFail), "count", "==", 0)
	return nil
}

func resolvedSpecs(ctx context.Context, cni *libcni.CNIConfig, loomList *libcni.NetworkConfigList, ledgerDir string, p pod) ([]delegate.Spec, error) {
	netns, cleanup, err := newNetns("probe")
	if err != nil {
		return nil, err
	}
	defer cleanup()
	rt := runtimeConf(netns, "cnibench-probe", p, "eth0", nil)
	if _, err = cni.AddNetworkList(ctx, loomList, rt); err != nil {
		return nil, fmt.Errorf("probe ADD through loom: %w", err)
	}
	defer cni.DelNetworkList(ctx, loomList, rt)
	ledger, err := delegate.OpenLedger(ledgerDir, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	rec, ok, err := ledger.Load("cnibench-probe")
	if err != nil || !ok {
		return nil, fmt.Errorf("read the probe's ledger record: ok=%v: %w", ok, err)
	}
	var specs []delegate.Spec
	for _, e := range rec.Attachments {
		specs = append(specs, e.Spec)
	}
	return specs, nil
}

// lifecycle gives one pod its networks in a fresh netns, lets it live, and takes them away
// again. It returns how long ADD and DEL took; the pod's life between them is not timed, as
// a real pod's is not: loomd writes the pod's network-status meanwhile, as it would then.
func lifecycle(ctx context.Context, id string, p pod, v variant, life time.Duration) (add, del time.Duration, err error) {
	netns, cleanup, err := newNetns(id)
	if err != nil {
		return 0, 0, err
	}
	defer cleanup()
	start := time.Now()
	if err := v.add(ctx, netns, id, p); err != nil {
		return 0, 0, fmt.Errorf("ADD %s: %w", id, err)
	}
	add = time.Since(start)
	time.Sleep(life)
	start = time.Now()
	if err := v.del(ctx, netns, id, p); err != nil {
		return 0, 0, fmt.Errorf("DEL %s: %w", id, err)
	}
	return add, time.Since(start), nil
}

// concurrentAdds starts one pod per entry of ps at once and returns the wall time until all
// their ADDs returned, and how many failed. The pods are deleted afterwards, untimed.
func concurrentAdds(ctx context.Context, ps []pod, v variant) (time.Duration, int) {
	netnses := make([]string, len(ps))
	for i := range ps {
		netns, cleanup, err := newNetns(fmt.Sprintf("conc%d", i))
		if err != nil {
			fmt.Fprintln(os.Stderr, "cnibench:", err)
			return 0, len(ps)
		}
		defer cleanup()
		netnses[i] = netns
	}
	var wg sync.WaitGroup
	var failures atomic.Int32
	start := time.Now()
	for i, p := range ps {
		wg.Go(func() {
			if err := v.add(ctx, netnses[i], fmt.Sprintf("conc%d", i), p); err != nil {
				failures.Add(1)
				fmt.Fprintf(os.Stderr, "cnibench: %s: concurrent ADD %d: %v\n", v.name, i, err)
			}
		})
	}
	wg.Wait()
	wall := time.Since(start)
	for i, p := range ps {
		wg.Go(func() { v.del(ctx, netnses[i], fmt.Sprintf("conc%d", i), p) })
	}
	wg.Wait()
	return wall, int(failures.Load())
}

func runtimeConf(netns, id string, p pod, ifname string, capArgs map[string]any) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: id, NetNS: netns, IfName: ifname,
		Args: [][2]string{
			{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", p.namespace}, {"K8S_POD_NAME", p.name},
			{"K8S_POD_INFRA_CONTAINER_ID", id}, {"K8S_POD_UID", p.uid},
		},
		CapabilityArgs: capArgs,
	}
}

func newNetns(id string) (string, func(), error) {
	name := "cnibench-" + id
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return "", nil, fmt.Errorf("ip netns add %s: %v: %s", name, err, out)
	}
	return filepath.Join("/run/netns", name), func() { exec.Command("ip", "netns", "del", name).Run() }, nil
}

func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
