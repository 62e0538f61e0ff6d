package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"

	"github.com/loom-cni/loom/connectivity"
	"github.com/loom-cni/loom/e2e/sim"
	"github.com/loom-cni/loom/fabric"
	"github.com/loom-cni/loom/policy"
	"github.com/loom-cni/loom/policy/source"
)

type connectivityFlags struct {
	dir, kubeconfig, kubectl, probeImage, output string
	namespaces, clusterCIDRs                     []string
	timeout                                      time.Duration
	parallel                                     int
}

func newConnectivityCommand(getenv func(string) string) *cobra.Command {
	f := connectivityFlags{dir: defaultSimDir, kubectl: "kubectl"}
	if d := getenv("LOOM_SIM_DIR"); d != "" {
		f.dir = d
	}
	if k := getenv("LOOM_KUBECTL"); k != "" {
		f.kubectl = k
	}
	cmd := &cobra.Command{
		Use:   "connectivity",
		Short: "Probe every pod pair on every network and compare with what tenants and policies allow",
		Long: `connectivity sends, from every pod to every other pod, on every network both are attached
to and in each address family both have an address of there, an ICMP echo and a TCP and a UDP
probe on every port a policy applying there names (named ports resolved on the receiving pod)
and on one port no policy names. It compares what each probe did with the verdict of a reference
evaluator written from the Kubernetes NetworkPolicy documentation, the MultiNetworkPolicy
semantics and Loom's tenant rules (policy/oracle), not with Loom's own rules, and prints one
matrix per network and family (row: sender, column: receiver):
  ✓ allowed and reached    · denied and blocked    ✓· some ports allowed, the rest denied
  LEAK reached but denied  DROP allowed but blocked
then every probe that differs and a closing count; it exits with status 1 on any difference.

In the simulated cluster of --dir it probes the cluster's own pods, running loomctl inside
them. With --kubeconfig it probes any cluster with pods of its own: two per namespace under
test and set of secondary networks its pods use, from --probe-image (an image holding loomctl
at /usr/local/bin/loomctl), through kubectl exec; they are deleted when it ends, also when it is
interrupted, and carry the label loom.dev/connectivity-run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runConnectivity(cmd, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.dir, "dir", f.dir, "the simulated cluster's directory; $LOOM_SIM_DIR sets the default")
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "probe the cluster of this kubeconfig with probe pods instead")
	fl.StringVar(&f.probeImage, "probe-image", "", "with --kubeconfig: the probe pods' image, holding loomctl at "+connectivity.ProbeLoomctl)
	fl.StringVar(&f.kubectl, "kubectl", f.kubectl, "with --kubeconfig: kubectl, which runs the probes through pods/exec; $LOOM_KUBECTL sets the default")
	fl.StringSliceVarP(&f.namespaces, "namespace", "n", nil, "only pods of these namespaces (default: every namespace)")
	fl.StringVarP(&f.output, "output", "o", "table", "table or json")
	fl.StringSliceVar(&f.clusterCIDRs, "cluster-cidr", []string{sim.ClusterCIDR}, "the primary network's pod ranges, one per family")
	fl.DurationVar(&f.timeout, "timeout", time.Second, "how long a probe waits for its answer")
	fl.IntVar(&f.parallel, "parallel", 32, "probes in flight from one pod")
	cmd.AddCommand(
		probeCommand(connectivity.ServeCommand, connectivity.Serve),
		probeCommand(connectivity.DialCommand, connectivity.Dial),
		probeCommand(connectivity.IdleCommand, idle),
	)
	return cmd
}

// probeCommand is one of the commands connectivity runs inside pods, on its standard input
// and output.
func probeCommand(name string, run func(context.Context, io.Reader, io.Writer) error) *cobra.Command {
	return &cobra.Command{
		Use:    name,
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), cmd.InOrStdin(), cmd.OutOrStdout())
		},
	}
}

// idle is what a probe pod runs: nothing, until it is told to stop.
func idle(ctx context.Context, _ io.Reader, _ io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	return nil
}

func runConnectivity(cmd *cobra.Command, f connectivityFlags) error {
	ctx, progress := cmd.Context(), cmd.ErrOrStderr()
	if f.output != "table" && f.output != "json" {
		return fmt.Errorf("--output %q: want table or json", f.output)
	}
	cidrs, err := parsePrefixes(f.clusterCIDRs)
	if err != nil {
		return err
	}
	kube := cmd.Flags().Changed("kubeconfig")
	if kube && cmd.Flags().Changed("dir") {
		return errors.New("--dir and --kubeconfig: give one")
	}
	if kube && f.probeImage == "" {
		return errors.New("--probe-image: required with --kubeconfig: an image holding loomctl at " + connectivity.ProbeLoomctl)
	}
	inNamespaces := func(p policy.Pod) bool { return len(f.namespaces) == 0 || slices.Contains(f.namespaces, p.Namespace) }

	var c *sim.Cluster
	var rc *rest.Config
	if kube {
		rc, err = clusterConfig(f.kubeconfig, "")
	} else if c, err = sim.Open(f.dir); err == nil {
		rc = c.RESTConfig()
	}
	if err != nil {
		return err
	}
	cs, err := newClients(rc)
	if err != nil {
		return err
	}
	src, stop, err := policySource(ctx, cs, cidrs, progress)
	if err != nil {
		return err
	}
	defer stop()
	snap := src.Snapshot()

	var pods connectivity.Pods
	include := inNamespaces
	if kube {
		kubectl := append(strings.Fields(f.kubectl), "--kubeconfig", f.kubeconfig)
		pp, perr := connectivity.NewProbePods(cs.kube, kubectl, f.probeImage)
		if perr != nil {
			return perr
		}
		defer deleteProbePods(ctx, pp, progress)
		if snap, err = startProbePods(ctx, pp, &snap, inNamespaces, src.Snapshot, progress); err != nil {
			return err
		}
		pods, include = pp, pp.Include
	} else {
		self, serr := os.Executable()
		if serr != nil {
			return fmt.Errorf("find loomctl's own path, which runs the probes in the pods: %w", serr)
		}
		pods = simPods{c, self}
	}

	probes := connectivity.Plan(&snap, include)
	if len(probes) == 0 {
		return errors.New("no two pods share a network: nothing to probe")
	}
	results, err := connectivity.Run(ctx, pods, probes, connectivity.Options{Timeout: f.timeout, Parallel: f.parallel, Pods: 8, Progress: progress})
	if err != nil {
		return err
	}
	if f.output == "json" {
		enc := json.NewEncoder(cmd.OutOrStdout())
		enc.SetIndent("", "  ")
		err = enc.Encode(results)
	} else {
		connectivity.Report(cmd.OutOrStdout(), results)
	}
	if err != nil {
		return err
	}
	if s := connectivity.Summarize(results); s.Matched != s.Probes {
		return exitCode(1)
	}
	return nil
}

func parsePrefixes(ss []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range ss {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("--cluster-cidr %q: %w", s, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// policySource starts the policy engine's view of the cluster, as loomd reads it, and
// returns once it has read everything.
func policySource(ctx context.Context, cs clients, cidrs []netip.Prefix, progress io.Writer) (*source.ClusterSource, func(), error) {
	src := source.NewClusterSource(source.SourceConfig{ClusterCIDRs: cidrs, HostAddressAnnotation: fabric.AnnotationVTEPAddr},
		cs.kube, cs.dyn, cs.nads, slog.New(slog.DiscardHandler))
	stop := make(chan struct{})
	src.Run(stop)
	fmt.Fprintln(progress, "reading tenants, policies and pods…")
	for !src.HasSynced() {
		select {
		case <-ctx.Done():
			close(stop)
			return nil, nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return src, func() { close(stop) }, nil
}

// startProbePods creates the probe pods standing in for the pods of snap that include
// accepts, waits until they run and returns the first snapshot that knows their addresses.
func startProbePods(ctx context.Context, pp *connectivity.ProbePods, snap *policy.Snapshot, include func(policy.Pod) bool, snapshot func() policy.Snapshot, progress io.Writer) (policy.Snapshot, error) {
	specs := connectivity.ProbeSpecs(snap, include)
	if len(specs) == 0 {
		return policy.Snapshot{}, errors.New("no running pod in the namespaces given: nothing to stand in for")
	}
	fmt.Fprintf(progress, "creating probe pods for %d namespace and network combinations (%s=%s)…\n", len(specs), connectivity.RunLabel, pp.Run())
	if err := pp.Create(ctx, specs); err != nil {
		return policy.Snapshot{}, err
	}
	if err := pp.Wait(ctx, progress); err != nil {
		return policy.Snapshot{}, err
	}
	return pp.AwaitSnapshot(ctx, snapshot)
}

// deleteProbePods deletes the run's probe pods, also when ctx is done: an interrupted run
// cleans up too.
func deleteProbePods(ctx context.Context, pp *connectivity.ProbePods, progress io.Writer) {
	fmt.Fprintf(progress, "deleting the probe pods (%s=%s)…\n", connectivity.RunLabel, pp.Run())
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := pp.Delete(ctx); err != nil {
		fmt.Fprintln(progress, "loomctl:", err)
	}
}

// simPods runs the probe commands in the simulated cluster's pods: the host's loomctl in the
// pod's network namespace.
type simPods struct {
	c       *sim.Cluster
	loomctl string
}

func (s simPods) Probe(ctx context.Context, pod policy.PodKey, command string, stdin io.Reader, stdout io.Writer) error {
	cmd, err := s.c.PodCmd(ctx, pod.Namespace, pod.Name, s.loomctl, "connectivity", command)
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, &stderr
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s in pod %s: %w: %s", command, pod, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
