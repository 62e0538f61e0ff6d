package sim

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/loom-cni/loom/e2e/sim/podruntime"
)

// NodeConfig says which node a supervisor runs.
type NodeConfig struct {
	// Dir is the cluster directory, Node the node's name.
	Dir  string
	Node string
	// GCInterval overrides the cluster's CNI GC interval when set.
	GCInterval time.Duration
	Log        *slog.Logger
}

// RunNode is a node's supervisor: what `loomctl sim node` runs inside the node's network
// and mount namespaces. It mounts the node-local directories, writes the node's
// configuration, runs loomd (restarting it unless held) and the pod runtime, until the
// context ends.
func RunNode(ctx context.Context, cfg NodeConfig) error {
	st, err := readState(cfg.Dir)
	if err != nil {
		return fmt.Errorf("read cluster state: %w", err)
	}
	l := layout{cfg.Dir}
	var n Node
	for _, cand := range st.Nodes {
		if cand.Name == cfg.Node {
			n = cand
		}
	}
	if n.Name == "" {
		return fmt.Errorf("no node %q in the cluster in %s", cfg.Node, cfg.Dir)
	}
	if err = checkInsideNode(slotDir{st.Options.RunDir, st.Slot}, n); err != nil {
		return err
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if err = mountNodeDirs(n); err != nil {
		return err
	}
	if err = prepareNode(st, l, n); err != nil {
		return err
	}
	status := &statusWriter{path: n.statusFile(), st: NodeStatus{SupervisorPID: os.Getpid()}}
	status.update(func(*NodeStatus) {})
	client, err := nodeClient(l)
	if err != nil {
		return err
	}
	gcInterval := st.Options.GCInterval
	if cfg.GCInterval > 0 {
		gcInterval = cfg.GCInterval
	}
	devices, err := startDeviceManager(log)
	if err != nil {
		return err
	}
	defer devices.k.Stop()
	rt, err := podruntime.New(podruntime.Config{
		NodeName: n.Name, NodeIP: n.UnderlayIP, PodCIDR: n.PodCIDR, Client: client,
		CNIConfDir: "/etc/cni/net.d", CNIBinDirs: []string{"/opt/cni/bin"}, CNICacheDir: "/var/lib/cni",
		NetNSDir: "/run/netns", StateDir: n.SandboxDir(), GCInterval: gcInterval,
		Schedule: func() bool { return firstNode(cfg.Dir) == n.Name },
		Ready:    func() { status.update(func(s *NodeStatus) { s.RuntimeReady = true }) },
		Log:      log,
		Devices:  devices,
	})
	if err != nil {
		return err
	}
	loomd := &loomdRunner{
		argv:    append(append([]string(nil), st.Options.Loomd...), "--config", loomdConfigPath),
		logPath: filepath.Join(n.Dir, "loomd.log"),
		hold:    n.holdFile(),
		status:  status,
		log:     log.With("component", "loomd-runner"),
	}
	if st.Options.SRIOV {
		// ghw finds its PCI ID database only through the environment.
		loomd.env = append(loomd.env, "PCIDB_PATH="+simPCIIDs())
	}
	if !st.Options.LoomdWithoutHealth {
		loomd.health = loomdHealthAddress(st.Options)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { loomd.run(ctx) })
	log.Info("node supervisor started", "node", n.Name, "pid", os.Getpid())
	err = rt.Run(ctx)
	cancel()
	wg.Wait()
	return err
}

// firstNode names the cluster's first node, which also runs the scheduler: node1 until
// RemoveNode takes it away, then the next.
func firstNode(dir string) string {
	st, err := readState(dir)
	if err != nil || len(st.Nodes) == 0 {
		return ""
	}
	return st.Nodes[0].Name
}

func nodeClient(l layout) (kubernetes.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", l.kubeconfig())
	if err != nil {
		return nil, fmt.Errorf("read kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	cfg.UserAgent = "loom-sim-kubelet"
	return kubernetes.NewForConfig(cfg)
}

// ReexecArg, as a test binary's first argument, makes it a node supervisor: such a test
// sets Options.SupervisorCommand to []string{os.Args[0], sim.ReexecArg} and starts its
// TestMain with
//
//	if len(os.Args) > 1 && os.Args[1] == sim.ReexecArg {
//		os.Exit(sim.ReexecMain(os.Args[2:]))
//	}
const ReexecArg = "loom-sim-node"

// ReexecMain runs a node supervisor from command-line arguments (--dir, --node,
// --gc-interval) until SIGTERM or SIGINT, and returns the process's exit code.
func ReexecMain(args []string) int {
	fs := flag.NewFlagSet("loom-sim-node", flag.ContinueOnError)
	var cfg NodeConfig
	fs.StringVar(&cfg.Dir, "dir", "", "cluster directory")
	fs.StringVar(&cfg.Node, "node", "", "node name")
	fs.DurationVar(&cfg.GCInterval, "gc-interval", 0, "CNI GC interval (default: the cluster's)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := RunNode(ctx, cfg); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "node supervisor:", err)
		return 1
	}
	return 0
}
