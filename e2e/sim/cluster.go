package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Cluster is a running simulated cluster.
type Cluster struct {
	l    layout
	slot slotDir
	st   state
	p    *progress
	rest *rest.Config
	cs   kubernetes.Interface
}

// Up builds and starts a cluster as o says and returns once the API server is ready, the
// CRDs are established and every node is Ready with a CNI configuration in place. If it
// fails, it tears down what it built (the logs in o.Dir stay).
func Up(ctx context.Context, o Options) (*Cluster, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("sim options: %w", err)
	}
	p := newProgress(o.Progress)
	if err = os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	s, err := reserveSlot(ctx, o.RunDir, o.Dir, p, teardownSlot)
	if err != nil {
		return nil, err
	}
	p.printf("slot %d reserved for %s", s.slot, o.Dir)
	c := &Cluster{l: layout{o.Dir}, slot: s, p: p}
	ok := false
	defer func() {
		if !ok {
			if err := Down(context.WithoutCancel(ctx), Options{Dir: o.Dir, RunDir: o.RunDir, Progress: o.Progress}); err != nil {
				p.printf("cleaning up after the failed start: %v", err)
			}
		}
	}()
	if err := c.build(ctx, o); err != nil {
		return nil, fmt.Errorf("sim up %s: %w", o.Dir, err)
	}
	ok = true
	p.printf("cluster ready: %d nodes, mode %s, API server %s, kubeconfig %s", len(c.st.Nodes), o.Mode, c.APIServerURL(), c.Kubeconfig())
	return c, nil
}

// build does Up's work once the slot is reserved. The underlay, the router (and its BIRD)
// and the nodes' namespaces are built while the API server boots (3-4 s); the node
// supervisors start once it serves the CRDs, so that loomd's and the runtime's informers do
// not start in client-go's retry back-off.
func (c *Cluster) build(ctx context.Context, o Options) error {
	if err := c.prepareDir(o); err != nil {
		return err
	}
	if err := buildUnderlay(o.IP, c.slot, o.SRIOV); err != nil {
		return err
	}
	if err := buildRouter(o.IP, c.slot, o.Mode, c.st.Nodes); err != nil {
		return err
	}
	r := c.Router()
	c.p.printf("underlay %s: subnets %s and %s; router %s; external network %s in %s",
		c.slot.underlayNetNS(), c.slot.subnets()[0].prefix, c.slot.subnets()[1].prefix, r.NetNS, r.ExternalNet, r.ExternalNetNS)
	if err := writePKI(c.l, c.slot.apiServerIP()); err != nil {
		return err
	}
	if err := c.loadClient(); err != nil {
		return err
	}
	if err := c.startEtcd(ctx); err != nil {
		return err
	}
	c.p.printf("etcd ready on %s", c.etcdURL())
	apiserver, err := c.startAPIServerProcess()
	if err != nil {
		return err
	}
	if o.Mode == ModeBGP {
		if err := c.startBird(ctx); err != nil {
			return err
		}
		c.p.printf("BIRD up in %s: route reflector of AS %d", r.NetNS, r.ASN)
	}
	if err := c.makeNodeNamespaceDir(); err != nil {
		return err
	}
	for _, n := range c.st.Nodes {
		if err := buildNodeNetwork(o.IP, c.slot, o, n, c.st.Nodes); err != nil {
			return err
		}
		c.p.printf("%s: netns %s, underlay %s on %s", n.Name, n.NetNS, n.UnderlayIP, n.Subnet)
	}
	if err := c.waitAPIServer(ctx, apiserver); err != nil {
		return err
	}
	c.p.printf("kube-apiserver ready on %s", c.APIServerURL())
	if err := c.installCRDs(ctx); err != nil {
		return err
	}
	c.p.printf("CRDs established")
	if o.Controller != "" {
		if err := c.startController(ctx); err != nil {
			return err
		}
		c.p.printf("loom-controller started; health on %s", c.controllerHealthAddress())
	}
	c.p.printf("starting the node supervisors (mode %s)", o.Mode)
	for _, n := range c.st.Nodes {
		if err := c.startSupervisor(n); err != nil {
			return err
		}
	}
	return c.waitNodesReady(ctx)
}

// prepareDir clears what a previous cluster left in the directory and records the new
// cluster's state.
func (c *Cluster) prepareDir(o Options) error {
	for _, name := range []string{"etcd", "pki", "nodes", "kubeconfig", "etcd.log", "apiserver.log", "controller.log", "bird.conf", "bird.log"} {
		if err := os.RemoveAll(filepath.Join(o.Dir, name)); err != nil {
			return err
		}
	}
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	c.st = state{
		Slot:           c.slot.slot,
		APIServerIP:    c.slot.apiServerIP().String(),
		EtcdClientPort: ports[0],
		EtcdPeerPort:   ports[1],
		Options:        o,
	}
	for i := 1; i <= o.Nodes; i++ {
		n := newNode(c.l, c.slot, o.Mode, i, o.Nodes)
		if err := os.MkdirAll(n.Root, 0o755); err != nil {
			return err
		}
		c.st.Nodes = append(c.st.Nodes, n)
	}
	return writeState(o.Dir, c.st)
}

// makeNodeNamespaceDir makes the slot's ns directory a private mount, the one kind of place
// where a mount namespace can be pinned: a shared one would propagate the pin into the very
// namespace it pins.
func (c *Cluster) makeNodeNamespaceDir() error {
	d := c.slot.nsDir()
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(d, d, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind mount %s: %w", d, err)
	}
	if err := unix.Mount("", d, "", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make %s private: %w", d, err)
	}
	return nil
}

// Open returns the running cluster whose directory is dir.
func Open(dir string) (*Cluster, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	st, err := readState(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no simulated cluster in %s: start one with loomctl sim up --dir %s", dir, dir)
	}
	if err != nil {
		return nil, err
	}
	s := slotDir{st.Options.RunDir, st.Slot}
	if s.clusterDir() != dir {
		return nil, fmt.Errorf("the simulated cluster in %s is not running (slot %d is not its): run loomctl sim down --dir %s", dir, st.Slot, dir)
	}
	c := &Cluster{l: layout{dir}, slot: s, st: st, p: newProgress(nil)}
	if err := c.loadClient(); err != nil {
		return nil, err
	}
	return c, nil
}

// Down stops the cluster; see the package-level Down.
func (c *Cluster) Down(ctx context.Context) error {
	return Down(ctx, Options{Dir: c.l.dir, RunDir: c.st.Options.RunDir, Progress: c.p.w})
}

// Dir is the cluster's directory.
func (c *Cluster) Dir() string { return c.l.dir }

// Slot is the cluster's slot number, which its namespace and link names carry.
func (c *Cluster) Slot() int { return c.slot.slot }

// Options are the options the cluster was started with, defaults filled in.
func (c *Cluster) Options() Options { return c.st.Options }

// Kubeconfig is the path of the admin kubeconfig, usable by kubectl and from inside nodes.
func (c *Cluster) Kubeconfig() string { return c.l.kubeconfig() }

// APIServerURL is https://198.18.S.1:6443.
func (c *Cluster) APIServerURL() string {
	return "https://" + net.JoinHostPort(c.st.APIServerIP, "6443")
}

// Nodes lists the nodes in order.
func (c *Cluster) Nodes() []Node { return append([]Node(nil), c.st.Nodes...) }

// Node returns the node with the given name.
func (c *Cluster) Node(name string) (Node, error) {
	for _, n := range c.st.Nodes {
		if n.Name == name {
			return n, nil
		}
	}
	return Node{}, fmt.Errorf("no node %q in the simulated cluster in %s", name, c.l.dir)
}

// loadClient reads the admin kubeconfig into the cluster's client configuration.
func (c *Cluster) loadClient() error {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.l.kubeconfig())
	if err != nil {
		return fmt.Errorf("read kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = 100, 200
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	c.rest, c.cs = cfg, cs
	return nil
}

// RESTConfig returns a copy of the admin client configuration.
func (c *Cluster) RESTConfig() *rest.Config { return rest.CopyConfig(c.rest) }

// Client returns an admin clientset.
func (c *Cluster) Client() kubernetes.Interface { return c.cs }

// Kubectl runs Options.Kubectl with the cluster's kubeconfig and returns its combined output.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) ([]byte, error) {
	if c.st.Options.Kubectl == "" {
		return nil, errors.New("kubectl: Options.Kubectl (LOOM_KUBECTL) is not set")
	}
	cmd := exec.CommandContext(ctx, c.st.Options.Kubectl, append([]string{"--kubeconfig", c.l.kubeconfig()}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("kubectl %v: %w", args, err)
	}
	return out, nil
}

// progress writes timestamped lines about what Up and Down do.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
}

func newProgress(w io.Writer) *progress { return &progress{w: w, start: time.Now()} }

func (p *progress) printf(format string, args ...any) {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "[%5.1fs] %s\n", time.Since(p.start).Seconds(), fmt.Sprintf(format, args...))
}
