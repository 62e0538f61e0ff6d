package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/loom-cni/loom/e2e/sim"
)

const defaultSimDir = "/tmp/loom-demo"

func newSimCommand(getenv func(string) string) *cobra.Command {
	dir := defaultSimDir
	if d := getenv("LOOM_SIM_DIR"); d != "" {
		dir = d
	}
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Run a simulated cluster on this machine: real kube-apiserver and etcd, nodes and pods as namespaces",
		Long: `A simulated cluster runs a real kube-apiserver and etcd, and simulates each node as a
network namespace with a mount namespace of its own, running loomd and a pod runtime that
plays kubelet and containerd (pods are network namespaces attached through libcni).
Nodes sit on two underlay subnets, 198.18.S.0/24 (with the API server on
https://198.18.S.1:6443) and 198.19.S.0/24, joined by a router (netns loomS-router) behind
which lies a network outside the cluster (netns loomS-ext). Everything it creates is named
after its slot S: netns loomS-node1…. Needs root.`,
	}
	cmd.PersistentFlags().StringVar(&dir, "dir", dir, "the cluster's directory (state, kubeconfig, logs); $LOOM_SIM_DIR sets the default")
	cmd.AddCommand(
		newSimUpCommand(getenv, &dir),
		newSimDownCommand(&dir),
		newSimStatusCommand(&dir),
		newSimExecCommand(&dir),
		newSimNodeExecCommand(&dir),
		newSimBirdcCommand(&dir),
		newSimNodeCommand(&dir),
	)
	return cmd
}

func newSimUpCommand(getenv func(string) string, dir *string) *cobra.Command {
	o := sim.OptionsFromEnv(getenv)
	var loomd, mode string
	var loomdConfig []string
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start a simulated cluster",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			self, err := os.Executable()
			if err != nil {
				return err
			}
			if o.BinDir == "" {
				o.BinDir = filepath.Dir(self)
			}
			o.SupervisorCommand = []string{self, "sim", "node"}
			if loomd != "" {
				o.Loomd = strings.Fields(loomd)
			}
			if o.LoomdConfig, err = parseLoomdConfig(loomdConfig); err != nil {
				return err
			}
			o.Mode = sim.Mode(mode)
			o.Dir, o.Progress = *dir, cmd.ErrOrStderr()
			start := time.Now()
			c, err := sim.Up(cmd.Context(), o)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "simulated cluster up in %.1fs (slot %d)\n  export KUBECONFIG=%s\n  %s sim exec --dir %s NAMESPACE/POD -- CMD...\n  %s sim down --dir %s\n",
				time.Since(start).Seconds(), c.Slot(), c.Kubeconfig(), self, c.Dir(), self, c.Dir())
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Nodes, "nodes", 3, "number of nodes; the first half (rounded up) on subnet A, the rest on subnet B")
	defaultMode := sim.ModeVXLAN
	if o.Mode != "" {
		defaultMode = o.Mode
	}
	f.StringVar(&mode, "mode", string(defaultMode), "primary network: vxlan, bgp or vxlan-crosssubnet (Loom's own), or bridge (the reference bridge plugin, statically routed); $LOOM_SIM_MODE sets the default")
	f.BoolVar(&o.SRIOV, "sriov", false, "give every node a simulated SR-IOV NIC (8 netdev VFs, 8 DPDK VFs) and loomd SR-IOV pools for it")
	f.StringVar(&o.BinDir, "bin-dir", o.BinDir, "directory of loom and loomd (default $LOOM_BIN_DIR, else loomctl's own)")
	f.StringVar(&loomd, "loomd", "", "command to run as loomd in each node (default BIN-DIR/loomd)")
	f.BoolVar(&o.LoomdWithoutHealth, "loomd-without-health", false, "loomd serves no /readyz: ready once a CNI configuration exists")
	f.StringArrayVar(&loomdConfig, "loomd-config", nil, "extra loomd configuration field KEY=VALUE (VALUE in YAML), repeatable")
	f.DurationVar(&o.GCInterval, "gc-interval", time.Minute, "how often each node's runtime calls CNI GC")
	return cmd
}

// parseLoomdConfig turns KEY=VALUE pairs into configuration fields, VALUE read as YAML so
// that namespaceIsolation=true is a boolean.
func parseLoomdConfig(pairs []string) (map[string]any, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	cfg := map[string]any{}
	for _, kv := range pairs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--loomd-config %q: want KEY=VALUE", kv)
		}
		var val any
		if err := yaml.Unmarshal([]byte(v), &val); err != nil {
			return nil, fmt.Errorf("--loomd-config %s: %w", k, err)
		}
		cfg[k] = val
	}
	return cfg, nil
}

func newSimDownCommand(dir *string) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Stop a simulated cluster and remove everything it made outside its directory",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return sim.Down(cmd.Context(), sim.Options{Dir: *dir, Progress: cmd.ErrOrStderr()})
		},
	}
}

func newSimStatusCommand(dir *string) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the nodes of a simulated cluster and the state of their loomd",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := sim.Open(*dir)
			if err != nil {
				return err
			}
			r := c.Router()
			fmt.Fprintf(cmd.OutOrStdout(), "slot %d, mode %s, API server %s, kubeconfig %s\n", c.Slot(), c.Options().Mode, c.APIServerURL(), c.Kubeconfig())
			fmt.Fprintf(cmd.OutOrStdout(), "router %s on %s; external network %s in %s (%s)\n\n",
				r.NetNS, joinPrefixes(r.Addresses), r.ExternalNet, r.ExternalNetNS, r.ExternalIP)
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NODE\tNETNS\tUNDERLAY\tGATEWAY\tPOD CIDR\tRUNTIME\tLOOMD\tRESTARTS")
			for _, n := range c.Nodes() {
				st, err := c.NodeStatus(n.Name)
				runtime, loomd := "down", "unknown"
				if err == nil {
					loomd = st.Loomd.State
					if st.RuntimeReady {
						runtime = "ready"
					}
				}
				podCIDR := "-"
				if n.PodCIDR.IsValid() {
					podCIDR = n.PodCIDR.String()
				}
				fmt.Fprintf(w, "%s\t%s\t%s/%d\t%s\t%s\t%s\t%s\t%d\n", n.Name, n.NetNS, n.UnderlayIP, n.Subnet.Bits(), n.Gateway,
					podCIDR, runtime, loomd, st.Loomd.Restarts)
			}
			return w.Flush()
		},
	}
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

func newSimExecCommand(dir *string) *cobra.Command {
	return &cobra.Command{
		Use:   "exec NAMESPACE/POD -- COMMAND [ARG...]",
		Short: "Run a command in a pod's network namespace",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 1 {
				return errors.New("usage: loomctl sim exec NAMESPACE/POD -- COMMAND [ARG...]")
			}
			namespace, pod, ok := strings.Cut(args[0], "/")
			if !ok {
				namespace, pod = "default", args[0]
			}
			c, err := sim.Open(*dir)
			if err != nil {
				return err
			}
			x, err := c.PodCmd(cmd.Context(), namespace, pod, args[1:]...)
			if err != nil {
				return err
			}
			return runInteractive(x)
		},
	}
}

func newSimNodeExecCommand(dir *string) *cobra.Command {
	return &cobra.Command{
		Use:   "node-exec NODE -- COMMAND [ARG...]",
		Short: "Run a command in a node's network and mount namespaces",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 1 {
				return errors.New("usage: loomctl sim node-exec NODE -- COMMAND [ARG...]")
			}
			c, err := sim.Open(*dir)
			if err != nil {
				return err
			}
			x, err := c.NodeCmd(cmd.Context(), args[0], args[1:]...)
			if err != nil {
				return err
			}
			return runInteractive(x)
		},
	}
}

func newSimBirdcCommand(dir *string) *cobra.Command {
	return &cobra.Command{
		Use:   "birdc [COMMAND...]",
		Short: "Ask the router's BIRD (mode bgp), e.g. loomctl sim birdc show route",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sim.Open(*dir)
			if err != nil {
				return err
			}
			out, err := c.Birdc(cmd.Context(), args...)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
}

// runInteractive runs a command with loomctl's own standard streams and passes its exit
// status on.
func runInteractive(x *exec.Cmd) error {
	x.Stdin, x.Stdout, x.Stderr = os.Stdin, os.Stdout, os.Stderr
	err := x.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if code := exit.ExitCode(); code >= 0 {
			return exitCode(code)
		}
	}
	return err
}

func newSimNodeCommand(dir *string) *cobra.Command {
	var node string
	var gcInterval time.Duration
	cmd := &cobra.Command{
		Use:    "node",
		Short:  "Run a node's supervisor (started by sim up inside the node's namespaces)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			err := sim.RunNode(cmd.Context(), sim.NodeConfig{Dir: *dir, Node: node, GCInterval: gcInterval})
			if cmd.Context().Err() != nil {
				return nil
			}
			return err
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "node name")
	cmd.Flags().DurationVar(&gcInterval, "gc-interval", 0, "CNI GC interval (default: the cluster's)")
	_ = cmd.MarkFlagRequired("node")
	return cmd
}
