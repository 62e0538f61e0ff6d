// Command cnibench measures what Loom adds to a pod's network setup. Run inside a node of the
// simulated cluster (loomctl sim node-exec), it drives ADD+DEL of pods through the loom
// conflist exactly as a container runtime does, and the same delegates directly — the very
// configurations loomd resolved, read back from the node's ledger — interleaving the two so
// drift on the machine affects both alike. It prints one JSON object with the figures;
// hack/bench.sh turns them into BENCH lines.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/loom-cni/loom/delegate"
)

type report struct {
	Iterations       int     `json:"iterations"`
	Attachments      int     `json:"attachments"`
	LoomP50Ms        float64 `json:"loomP50Ms"`
	BareP50Ms        float64 `json:"bareP50Ms"`
	LoomP90Ms        float64 `json:"loomP90Ms"`
	BareP90Ms        float64 `json:"bareP90Ms"`
	Concurrency      int     `json:"concurrency"`
	LoomConcurrentMs float64 `json:"loomConcurrentMs"`
	BareConcurrentMs float64 `json:"bareConcurrentMs"`
	LoomFailures     int     `json:"loomFailures"`
	BareFailures     int     `json:"bareFailures"`
}

type pod struct{ namespace, name, uid string }

func main() {
	conflist := flag.String("conflist", "/etc/cni/net.d/00-loom.conflist", "loom's conflist as the runtime sees it")
	binDir := flag.String("bin", "/opt/cni/bin", "CNI plugin directory")
	ledgerDir := flag.String("ledger", "/var/lib/loom/ledger", "loomd's ledger, to read the delegates' configurations back")
	pods := flag.String("pods", "", "comma-separated namespace/name/uid of pods that exist in the API, bound to this node and left alone by the runtime")
	n := flag.Int("n", 40, "sequential iterations of each variant")
	flag.Parse()
	if err := run(*conflist, *binDir, *ledgerDir, *pods, *n); err != nil {
		fmt.Fprintln(os.Stderr, "cnibench:", err)
		os.Exit(1)
	}
}

func run(conflistPath, binDir, ledgerDir, podList string, n int) error {
	var ps []pod
	for _, p := range strings.Split(podList, ",") {
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
	loom := func(ctx context.Context, netns, id string, p pod) error {
		rt := runtimeConf(netns, id, p, "eth0", nil)
		if _, err := cni.AddNetworkList(ctx, loomList, rt); err != nil {
			return err
		}
		return cni.DelNetworkList(ctx, loomList, rt)
	}
	bare := func(ctx context.Context, netns, id string, p pod) error {
		var added []int
		var errs []error
		for i, s := range specs {
			list, err := libcni.NetworkConfFromBytes(s.Config)
			if err == nil {
				_, err = cni.AddNetworkList(ctx, list, runtimeConf(netns, id, p, s.Ifname, s.CapabilityArgs))
			}
			if err != nil {
				errs = append(errs, err)
				break
			}
			added = append(added, i)
		}
		for _, i := range slices.Backward(added) {
			list, _ := libcni.NetworkConfFromBytes(specs[i].Config)
			if err := cni.DelNetworkList(ctx, list, runtimeConf(netns, id, p, specs[i].Ifname, specs[i].CapabilityArgs)); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}

	r := report{Iterations: n, Attachments: len(specs), Concurrency: len(ps)}
	var loomTimes, bareTimes []time.Duration
	for i := 0; i < n; i++ {
		for _, v := range []struct {
			f     func(context.Context, string, string, pod) error
			times *[]time.Duration
		}{{loom, &loomTimes}, {bare, &bareTimes}} {
			d, err := timed(ctx, fmt.Sprintf("seq-%d", i), ps[0], v.f)
			if err != nil {
				return err
			}
			*v.times = append(*v.times, d)
		}
	}
	r.LoomP50Ms, r.LoomP90Ms = percentile(loomTimes, 50), percentile(loomTimes, 90)
	r.BareP50Ms, r.BareP90Ms = percentile(bareTimes, 50), percentile(bareTimes, 90)
	r.LoomConcurrentMs, r.LoomFailures = concurrent(ctx, ps, "loom", loom)
	r.BareConcurrentMs, r.BareFailures = concurrent(ctx, ps, "bare", bare)
	return json.NewEncoder(os.Stdout).Encode(r)
}

func resolvedSpecs(ctx context.Context, cni *libcni.CNIConfig, loomList *libcni.NetworkConfigList, ledgerDir string, p pod) ([]delegate.Spec, error) {
	netns, cleanup, err := newNetns("cnibench-probe")
	if err != nil {
		return nil, err
	}
	defer cleanup()
	rt := runtimeConf(netns, "cnibench-probe", p, "eth0", nil)
	if _, err := cni.AddNetworkList(ctx, loomList, rt); err != nil {
		return nil, fmt.Errorf("probe ADD through loom: %w", err)
	}
	defer cni.DelNetworkList(ctx, loomList, rt)
	ledger, err := delegate.OpenLedger(ledgerDir)
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

// timed runs one ADD+DEL in a fresh netns and returns how long the CNI calls took.
func timed(ctx context.Context, id string, p pod, f func(context.Context, string, string, pod) error) (time.Duration, error) {
	netns, cleanup, err := newNetns(id)
	if err != nil {
		return 0, err
	}
	defer cleanup()
	start := time.Now()
	if err := f(ctx, netns, id, p); err != nil {
		return 0, fmt.Errorf("%s: %w", id, err)
	}
	return time.Since(start), nil
}

// concurrent starts one pod per entry of ps at once and returns the wall time of all their
// ADDs+DELs and how many failed.
func concurrent(ctx context.Context, ps []pod, label string, f func(context.Context, string, string, pod) error) (float64, int) {
	type job struct {
		netns, id string
		cleanup   func()
	}
	var jobs []job
	for i := range ps {
		id := fmt.Sprintf("conc-%s-%d", label, i)
		netns, cleanup, err := newNetns(id)
		if err != nil {
			fmt.Fprintln(os.Stderr, "cnibench:", err)
			return 0, len(ps)
		}
		jobs = append(jobs, job{netns, id, cleanup})
	}
	defer func() {
		for _, j := range jobs {
			j.cleanup()
		}
	}()
	var wg sync.WaitGroup
	var mu sync.Mutex
	failures := 0
	start := time.Now()
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx, j.netns, j.id, ps[i]); err != nil {
				mu.Lock()
				failures++
				mu.Unlock()
				fmt.Fprintf(os.Stderr, "cnibench: %s: %v\n", j.id, err)
			}
		}()
	}
	wg.Wait()
	return ms(time.Since(start)), failures
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

func percentile(ds []time.Duration, p int) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	return ms(s[(len(s)-1)*p/100])
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
