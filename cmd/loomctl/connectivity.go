package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/loom-cni/loom/e2e/sim"
	"github.com/loom-cni/loom/fabric"
	"github.com/loom-cni/loom/policy"
)

// pairResult is one tried connection.
type pairResult struct {
	From    string `json:"from"`
	To      string `json:"to"`
	Network string `json:"network"`
	Address string `json:"address"`
	Allowed bool   `json:"allowed"` // what the tenants and policies say
	Reached bool   `json:"reached"` // what the packets did
}

func newConnectivityCommand(getenv func(string) string) *cobra.Command {
	dir := defaultSimDir
	if d := getenv("LOOM_SIM_DIR"); d != "" {
		dir = d
	}
	var namespaces []string
	var output, clusterCIDR string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "connectivity",
		Short: "Try every pod pair on every network and compare with what tenants and policies allow",
		Long: `connectivity pings, from every pod, every other pod on every network both are attached to,
and compares the outcome with the verdict of Loom's tenants, NetworkPolicies and
MultiNetworkPolicies. It prints one matrix per network (row: sender, column: receiver):
  ✓ allowed and reached    · denied and blocked
  LEAK reached but denied  DROP allowed but blocked
and exits with status 1 when any pair differs. Pods are probed where they run: in the
simulated cluster of --dir.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cidr, err := netip.ParsePrefix(clusterCIDR)
			if err != nil {
				return fmt.Errorf("--cluster-cidr: %w", err)
			}
			c, err := sim.Open(dir)
			if err != nil {
				return err
			}
			results, err := connectivity(cmd.Context(), c, cidr, namespaces, timeout, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(results); err != nil {
					return err
				}
			} else {
				printMatrices(cmd.OutOrStdout(), results)
			}
			for _, r := range results {
				if r.Allowed != r.Reached {
					return exitCode(1)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", dir, "the simulated cluster's directory; $LOOM_SIM_DIR sets the default")
	cmd.Flags().StringSliceVarP(&namespaces, "namespace", "n", nil, "only pods of these namespaces (default: every namespace)")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	cmd.Flags().StringVar(&clusterCIDR, "cluster-cidr", sim.ClusterCIDR, "the primary network's pod range")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Second, "how long a probe waits for its reply")
	return cmd
}

// connectivity reads the cluster, asks the policy for each pair's verdict and probes it.
func connectivity(ctx context.Context, c *sim.Cluster, cidr netip.Prefix, namespaces []string, timeout time.Duration, progress io.Writer) ([]pairResult, error) {
	cs, err := newClients(c.RESTConfig())
	if err != nil {
		return nil, err
	}
	kube, dyn, nads := cs.kube, cs.dyn, cs.nads
	src := policy.NewClusterSource(policy.SourceConfig{ClusterCIDRs: []netip.Prefix{cidr}, HostAddressAnnotation: fabric.AnnotationVTEPAddr},
		kube, dyn, nads, slog.New(slog.DiscardHandler))
	stop := make(chan struct{})
	defer close(stop)
	src.Run(stop)
	fmt.Fprintln(progress, "reading tenants, policies and pods…")
	for !src.HasSynced() {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	snap := src.Snapshot()
	oracle := policy.NewOracle(snap)
	type probe struct {
		from, to policy.Pod
		network  policy.NetworkID
		addr     netip.Addr
	}
	var pods []policy.Pod
	for _, p := range snap.Pods {
		if p.Node != "" && (len(namespaces) == 0 || slices.Contains(namespaces, p.Namespace)) {
			pods = append(pods, p)
		}
	}
	slices.SortFunc(pods, func(a, b policy.Pod) int { return strings.Compare(a.PodKey.String(), b.PodKey.String()) })
	var probes []probe
	for _, from := range pods {
		for _, to := range pods {
			if from.PodKey == to.PodKey {
				continue
			}
			for _, ep := range to.Endpoints {
				if len(ep.IPs) > 0 && attachedTo(from, ep.Network) {
					probes = append(probes, probe{from, to, ep.Network, ep.IPs[0]})
				}
			}
		}
	}
	if len(probes) == 0 {
		return nil, errors.New("no two pods share a network: nothing to try")
	}
	fmt.Fprintf(progress, "trying %d connections between %d pods…\n", len(probes), len(pods))
	results := make([]pairResult, len(probes))
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	wait := fmt.Sprint(max(1, int(timeout.Seconds())))
	for i, p := range probes {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			reached := false
			if x, err := c.PodCmd(ctx, p.from.Namespace, p.from.Name, "ping", "-n", "-q", "-c", "1", "-W", wait, p.addr.String()); err == nil {
				reached = x.Run() == nil
			}
			results[i] = pairResult{
				From: p.from.PodKey.String(), To: p.to.PodKey.String(), Network: networkName(p.network), Address: p.addr.String(),
				Allowed: oracle.Allows(p.from.PodKey, p.to.PodKey, p.network, "ICMP", 0),
				Reached: reached,
			}
		}()
	}
	wg.Wait()
	return results, nil
}

func attachedTo(p policy.Pod, n policy.NetworkID) bool {
	for _, ep := range p.Endpoints {
		if ep.Network == n && len(ep.IPs) > 0 {
			return true
		}
	}
	return false
}

func networkName(n policy.NetworkID) string {
	if n == policy.Primary {
		return "primary"
	}
	return string(n)
}

// printMatrices prints one matrix per network, then the differences.
func printMatrices(w io.Writer, results []pairResult) {
	byNet := map[string][]pairResult{}
	for _, r := range results {
		byNet[r.Network] = append(byNet[r.Network], r)
	}
	nets := make([]string, 0, len(byNet))
	for n := range byNet {
		nets = append(nets, n)
	}
	slices.Sort(nets)
	var diffs []string
	for _, n := range nets {
		rs := byNet[n]
		var names []string
		cell := map[[2]string]string{}
		for _, r := range rs {
			names = append(names, r.From, r.To)
			mark := map[[2]bool]string{{true, true}: "✓", {false, false}: "·", {false, true}: "LEAK", {true, false}: "DROP"}[[2]bool{r.Allowed, r.Reached}]
			cell[[2]string{r.From, r.To}] = mark
			if r.Allowed != r.Reached {
				diffs = append(diffs, fmt.Sprintf("%s → %s on %s (%s): policy %s it, the packet %s", r.From, r.To, n, r.Address,
					map[bool]string{true: "allows", false: "denies"}[r.Allowed], map[bool]string{true: "got through", false: "was dropped"}[r.Reached]))
			}
		}
		slices.Sort(names)
		names = slices.Compact(names)
		width := 4
		for _, name := range names {
			width = max(width, len(name))
		}
		fmt.Fprintf(w, "network %s\n%*s", n, width, "")
		for i := range names {
			fmt.Fprintf(w, " %4d", i+1)
		}
		fmt.Fprintln(w)
		for i, from := range names {
			fmt.Fprintf(w, "%-*s", width, from)
			for _, to := range names {
				mark, ok := cell[[2]string{from, to}]
				if !ok {
					mark = ""
				}
				fmt.Fprintf(w, " %4s", mark)
			}
			fmt.Fprintf(w, "   (%d)\n", i+1)
		}
		fmt.Fprintln(w)
	}
	if len(diffs) == 0 {
		fmt.Fprintf(w, "%d connections tried: every one matches the policy\n", len(results))
		return
	}
	fmt.Fprintf(w, "%d of %d connections differ from the policy:\n", len(diffs), len(results))
	for _, d := range diffs {
		fmt.Fprintln(w, "  "+d)
	}
}
