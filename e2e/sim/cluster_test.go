package sim_test

import (
	"bufio"
	"context"
	"crypto/sha512"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/loom-cni/loom/e2e/sim"
	"github.com/loom-cni/loom/e2e/sim/simtest"
)

// startCluster brings up a three-node cluster (node1 and node2 on subnet A, node3 on
// subnet B) in mode bridge, whose loomd and loom-controller are stand-ins and whose node
// supervisors are this test binary, and tears it down when the test ends.
func startCluster(t *testing.T) *sim.Cluster {
	return simtest.Start(t, func(o *sim.Options) {
		o.Mode = sim.ModeBridge
		o.Loomd = simtest.StandInLoomd(t)
		o.LoomdWithoutHealth = true
		o.Controller = standInControllerCommand(t)
	})
}

func newPod(name, node string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{
			NodeName:   node,
			Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}},
		},
	}
}

func createPods(t *testing.T, c *sim.Cluster, pods ...*corev1.Pod) map[string]*corev1.Pod {
	t.Helper()
	ctx := context.Background()
	for _, p := range pods {
		if _, err := c.Client().CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	running := map[string]*corev1.Pod{}
	for _, p := range pods {
		got, err := c.WaitPodRunning(ctx, p.Namespace, p.Name)
		if err != nil {
			t.Fatal(err)
		}
		running[p.Name] = got
	}
	return running
}

func deletePods(t *testing.T, c *sim.Cluster, names ...string) {
	t.Helper()
	ctx := context.Background()
	for _, name := range names {
		if err := c.Client().CoreV1().Pods("default").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range names {
		if err := c.WaitPodGone(ctx, "default", name); err != nil {
			t.Fatalf("pod %s not deleted: %v", name, err)
		}
	}
}

func assertNoLeftovers(t *testing.T, c *sim.Cluster) {
	t.Helper()
	for _, n := range c.Nodes() {
		left, err := n.Leftovers()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range left {
			t.Errorf("%s: %s left behind", n.Name, l)
		}
	}
}

// TestCluster runs its steps in order against one cluster: bringing one up takes most of
// the time.
func TestCluster(t *testing.T) {
	c := startCluster(t)
	for _, step := range []struct {
		name string
		run  func(*testing.T, *sim.Cluster)
	}{
		{"nodes sit on two subnets joined by the router", testTopology},
		{"pods run with addresses from their node's pod CIDR", testPods},
		{"a pod whose CNI ADD fails ends Failed with the error", testFailedADD},
		{"kubectl works with the kubeconfig", testKubectl},
		{"loom-controller stops and starts again", testController},
		{"loomd stops and starts again; pods wait for a network", testLoomdRestart},
		{"a restarted supervisor keeps live sandboxes, tears down dead ones and GCs", testSupervisorRestart},
		{"the API server stops and starts with its state", testAPIServerRestart},
		{"a removed node leaves nothing behind and the rest keeps working", testRemoveNode},
		{"down leaves nothing behind", testDown},
	} {
		if !t.Run(step.name, func(t *testing.T) { step.run(t, c) }) {
			break
		}
	}
}

func nodesByName(c *sim.Cluster) map[string]sim.Node {
	nodes := map[string]sim.Node{}
	for _, n := range c.Nodes() {
		nodes[n.Name] = n
	}
	return nodes
}

func testTopology(t *testing.T, c *sim.Cluster) {
	ctx := context.Background()
	r := c.Router()
	a, b := r.Addresses[0], r.Addresses[1]
	for _, n := range c.Nodes() {
		want := a
		if n.Name == "node3" {
			want = b
		}
		if n.Subnet != want.Masked() || n.Gateway != want.Addr() || !n.Subnet.Contains(n.UnderlayIP) {
			t.Errorf("%s: underlay %s on %s via %s, want on %s via %s", n.Name, n.UnderlayIP, n.Subnet, n.Gateway, want.Masked(), want.Addr())
		}
		node, err := c.Client().CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil || len(node.Status.Addresses) == 0 || node.Status.Addresses[0].Address != n.UnderlayIP.String() {
			t.Errorf("Node %s: %v, addresses %v", n.Name, err, node.Status.Addresses)
		}
		if out, err := c.NodeExec(ctx, n.Name, "ip", "-4", "route", "show", "default"); err != nil || strings.TrimSpace(out) != "" {
			t.Errorf("%s has a default route: %v %s", n.Name, err, out)
		}
	}
	// node3 reaches the API server through the router, and the API server answers it.
	apiServer := apiServerHost(t, c)
	if out, err := c.NodeExec(ctx, "node3", "ping", "-n", "-c1", "-W2", apiServer); err != nil {
		t.Errorf("node3 -> API server %s: %v\n%s", apiServer, err, out)
	}
	if out, err := c.NodeExec(ctx, "node3", "ping", "-n", "-c1", "-W1", r.ExternalIP.String()); err == nil {
		t.Errorf("node3 reaches the external network in mode bridge:\n%s", out)
	}
	if out, err := netnsExec(ctx, r.NetNS, "ip", "-4", "route", "show", "default"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("the router has a default route: %v %s", err, out)
	}
	if out, err := netnsExec(ctx, r.NetNS, "ping", "-n", "-c1", "-W2", r.ExternalIP.String()); err != nil {
		t.Errorf("router -> external %s: %v\n%s", r.ExternalIP, err, out)
	}
	if !hasRootRoute(t, b.Masked(), a.Addr()) {
		t.Errorf("the root namespace has no route to %s via %s", b.Masked(), a.Addr())
	}
}

// apiServerHost is the API server's address: 198.18.S.1.
func apiServerHost(t *testing.T, c *sim.Cluster) string {
	t.Helper()
	u, err := url.Parse(c.APIServerURL())
	if err != nil {
		t.Fatal(err)
	}
	return u.Hostname()
}

// netnsExec runs argv in a named network namespace of the host and returns its output.
func netnsExec(ctx context.Context, netns string, argv ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", netns}, argv...)...).CombinedOutput()
	return string(out), err
}

// hasRootRoute says whether the root namespace routes dst via gw.
func hasRootRoute(t *testing.T, dst netip.Prefix, gw netip.Addr) bool {
	t.Helper()
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Dst != nil && r.Dst.String() == dst.String() && r.Gw.Equal(gw.AsSlice()) {
			return true
		}
	}
	return false
}

func testPods(t *testing.T, c *sim.Cluster) {
	ctx := context.Background()
	nodes := nodesByName(c)
	pods := createPods(t, c, newPod("a1", "node1"), newPod("a2", "node1"), newPod("b1", "node2"), newPod("c1", "node3"),
		newPod("free1", ""), newPod("free2", ""))
	for _, p := range pods {
		n := nodes[p.Spec.NodeName]
		ip := netip.MustParseAddr(p.Status.PodIP)
		if !n.PodCIDR.Contains(ip) {
			t.Errorf("pod %s on %s has IP %s outside %s", p.Name, n.Name, ip, n.PodCIDR)
		}
		if p.Status.HostIP != n.UnderlayIP.String() || p.Status.StartTime == nil || len(p.Status.PodIPs) != 1 {
			t.Errorf("pod %s: hostIP %q (want %s), startTime %v, podIPs %v", p.Name, p.Status.HostIP, n.UnderlayIP, p.Status.StartTime, p.Status.PodIPs)
		}
		for _, cond := range p.Status.Conditions {
			if cond.Status != corev1.ConditionTrue {
				t.Errorf("pod %s: condition %s is %s", p.Name, cond.Type, cond.Status)
			}
		}
		if len(p.Status.ContainerStatuses) != 1 || p.Status.ContainerStatuses[0].State.Running == nil {
			t.Errorf("pod %s: container statuses %+v", p.Name, p.Status.ContainerStatuses)
		}
	}
	if pods["free1"].Spec.NodeName == pods["free2"].Spec.NodeName {
		t.Errorf("the scheduler bound free1 and free2 both to %s, want one on each node", pods["free1"].Spec.NodeName)
	}
	// a2 on the same node, b1 on the same subnet, c1 behind the router.
	for _, target := range []string{"a2", "b1", "c1"} {
		if out, err := c.PodExec(ctx, "default", "a1", "ping", "-n", "-c1", "-W2", pods[target].Status.PodIP); err != nil {
			t.Errorf("ping a1 -> %s: %v\n%s", target, err, out)
		}
	}
	deletePods(t, c, "a1", "a2", "b1", "c1", "free1", "free2")
	assertNoLeftovers(t, c)
}

func testFailedADD(t *testing.T, c *sim.Cluster) {
	ctx := context.Background()
	nodes := nodesByName(c)
	// Sorted before 00-loom.conflist, so it is the configuration the runtime uses. Its ADD
	// fails (eth0 is no bridge) but its DEL succeeds.
	broken := filepath.Join(nodes["node2"].HostPath("/etc/cni/net.d"), "00-0-broken.conflist")
	conf := `{"cniVersion":"1.1.0","name":"broken","plugins":[{"type":"bridge","bridge":"eth0","ipam":{"type":"host-local","subnet":"10.99.0.0/24"}}]}`
	if err := os.WriteFile(broken, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(broken)
	if _, err := c.Client().CoreV1().Pods("default").Create(ctx, newPod("doomed", "node2"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p, err := c.WaitPodFailed(ctx, "default", "doomed")
	if err != nil {
		t.Fatal(err)
	}
	const want = `"eth0" already exists but is not a bridge`
	if p.Status.Reason != "FailedCreatePodSandBox" || !strings.Contains(p.Status.Message, want) {
		t.Errorf("pod status reason %q message %q, want FailedCreatePodSandBox and %q", p.Status.Reason, p.Status.Message, want)
	}
	events, err := c.Client().CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=doomed"})
	if err != nil || len(events.Items) == 0 || events.Items[0].Reason != "FailedCreatePodSandBox" {
		t.Errorf("no FailedCreatePodSandBox event (err %v, events %v)", err, events)
	}
	os.Remove(broken)
	deletePods(t, c, "doomed")
	assertNoLeftovers(t, c)
}

func testKubectl(t *testing.T, c *sim.Cluster) {
	ctx := context.Background()
	if c.Options().Kubectl == "" {
		t.Skip("LOOM_KUBECTL not set")
	}
	out, err := c.Kubectl(ctx, "get", "nodes", "-o", "name")
	if err != nil || strings.TrimSpace(string(out)) != "node/node1\nnode/node2\nnode/node3" {
		t.Errorf("kubectl get nodes: %v\n%s", err, out)
	}
	if out, err := c.Kubectl(ctx, "get", "net-attach-def", "-A"); err != nil {
		t.Errorf("kubectl get net-attach-def: %v\n%s", err, out)
	}
}

func testLoomdRestart(t *testing.T, c *sim.Cluster) {
	ctx := context.Background()
	nodes := nodesByName(c)
	before, err := c.NodeStatus("node1")
	if err != nil {
		t.Fatal(err)
	}
	if err = c.StopLoomd("node1"); err != nil {
		t.Fatal(err)
	}
	if alive(before.Loomd.PID) {
		t.Errorf("loomd (pid %d) still runs after StopLoomd", before.Loomd.PID)
	}
	// Without loomd and its configuration the node has no network: pods wait, as they
	// do for kubelet's NetworkPluginNotReady.
	if err = os.Remove(filepath.Join(nodes["node1"].HostPath("/etc/cni/net.d"), "00-loom.conflist")); err != nil {
		t.Fatal(err)
	}
	if _, err = c.Client().CoreV1().Pods("default").Create(ctx, newPod("waiting", "node1"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if st, _ := c.NodeStatus("node1"); st.Loomd.State != sim.LoomdHeld {
		t.Errorf("loomd state %q while held", st.Loomd.State)
	}
	p, err := c.Client().CoreV1().Pods("default").Get(ctx, "waiting", metav1.GetOptions{})
	if err != nil || p.Status.Phase != corev1.PodPending {
		t.Errorf("pod on a node without network: %v, phase %s, want Pending", err, p.Status.Phase)
	}
	if err = c.StartLoomd(ctx, "node1"); err != nil {
		t.Fatal(err)
	}
	after, _ := c.NodeStatus("node1")
	if after.Loomd.PID == before.Loomd.PID || !alive(after.Loomd.PID) {
		t.Errorf("loomd pid %d after restart (was %d)", after.Loomd.PID, before.Loomd.PID)
	}
	if _, err = c.WaitPodRunning(ctx, "default", "waiting"); err != nil {
		t.Error(err)
	}
	deletePods(t, c, "waiting")
}

func testSupervisorRestart(t *testing.T, c *sim.Cluster) {
	ctx := context.Background()
	nodes := nodesByName(c)
	pods := createPods(t, c, newPod("keep", "node2"), newPod("gone", "node2"))
	keep, _, err := c.PodSandbox("default", "keep")
	if err != nil {
		t.Fatal(err)
	}
	if err = c.StopSupervisor("node2"); err != nil {
		t.Fatal(err)
	}
	zero := int64(0)
	if err = c.Client().CoreV1().Pods("default").Delete(ctx, "gone", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	stale := addStaleAttachment(t, c, "node2")
	if err = c.StartSupervisor(ctx, "node2"); err != nil {
		t.Fatal(err)
	}
	err = poll(10*time.Second, func() bool { _, _, lookupErr := c.PodSandbox("default", "gone"); return lookupErr != nil })
	if err != nil {
		t.Errorf("the sandbox of the force-deleted pod was not torn down: %v", err)
	}
	again, _, err := c.PodSandbox("default", "keep")
	if err != nil || again.ContainerID != keep.ContainerID {
		t.Errorf("sandbox of keep changed: %v (%s, was %s)", err, again.ContainerID, keep.ContainerID)
	}
	if out, pingErr := c.NodeExec(ctx, "node2", "ping", "-n", "-c1", "-W2", pods["keep"].Status.PodIP); pingErr != nil {
		t.Errorf("keep unreachable after the restart: %v\n%s", pingErr, out)
	}
	if stale != "" {
		cache := filepath.Join(nodes["node2"].CNIStateDir(), "results", "loom-default-"+stale+"-eth0")
		if err = poll(10*time.Second, func() bool { _, statErr := os.Stat(cache); return os.IsNotExist(statErr) }); err != nil {
			t.Errorf("GC at start left the stale attachment %s: %v", stale, err)
		}
		if out, delErr := c.NodeExec(ctx, "node2", "ip", "netns", "del", "stale"); delErr != nil {
			t.Errorf("%v: %s", delErr, out)
		}
	}
	deletePods(t, c, "keep")
	assertNoLeftovers(t, c)
}

func testAPIServerRestart(t *testing.T, c *sim.Cluster) {
	ctx := context.Background()
	stop := time.Now()
	if err := c.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	t.Logf("API server stop took %.1fs", time.Since(stop).Seconds())
	short, cancel := context.WithTimeout(ctx, time.Second)
	_, err := c.Client().CoreV1().Nodes().List(short, metav1.ListOptions{})
	cancel()
	if err == nil {
		t.Fatal("the API server still answers after StopAPIServer")
	}
	start := time.Now()
	if err := c.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("API server restart took %.1fs", time.Since(start).Seconds())
	start = time.Now()
	createPods(t, c, newPod("after", ""))
	t.Logf("first pod after the restart ran in %.1fs", time.Since(start).Seconds())
	deletePods(t, c, "after")
	assertNoLeftovers(t, c)
}

// testRemoveNode removes node1, which also runs the scheduler, while pods run on every node.
func testRemoveNode(t *testing.T, c *sim.Cluster) {
	ctx := context.Background()
	pods := createPods(t, c, newPod("lost", "node1"), newPod("stay2", "node2"), newPod("stay3", "node3"))
	n1, err := c.Node("node1")
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.NodeStatus("node1")
	if err != nil {
		t.Fatal(err)
	}
	lost, _, err := c.PodSandbox("default", "lost")
	if err != nil {
		t.Fatal(err)
	}
	// The processes in the namespaces of node1 and of its pod (named as readlink names them,
	// net:[INODE]), found before the namespaces go: a namespace's number is free for reuse
	// once it is gone.
	inodes := map[string]string{}
	for what, argv := range map[string][]string{
		"node1's network namespace": {"readlink", "/proc/self/ns/net"},
		"node1's mount namespace":   {"readlink", "/proc/self/ns/mnt"},
	} {
		ns, execErr := c.NodeExec(ctx, "node1", argv...)
		if execErr != nil {
			t.Fatal(execErr)
		}
		inodes[strings.TrimSpace(ns)] = what
	}
	out, err := c.PodExec(ctx, "default", "lost", "readlink", "/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	inodes[strings.TrimSpace(out)] = "the network namespace of pod lost"
	var inNode []nsProc
	for _, p := range procsByNamespace() {
		if _, ok := inodes[p.ns]; ok {
			inNode = append(inNode, p)
		}
	}
	if len(inNode) == 0 {
		t.Fatal("no process found in node1's namespaces")
	}

	start := time.Now()
	if err = c.RemoveNode(ctx, "node1"); err != nil {
		t.Fatal(err)
	}
	t.Logf("RemoveNode took %.1fs", time.Since(start).Seconds())

	for _, pid := range []int{st.SupervisorPID, st.Loomd.PID} {
		if alive(pid) {
			t.Errorf("process %d of node1 still runs", pid)
		}
	}
	for _, p := range inNode {
		if alive(p.pid) {
			t.Errorf("process %d still runs (it ran in %s)", p.pid, inodes[p.ns])
		}
	}
	if _, statErr := os.Stat(filepath.Join("/run/netns", n1.NetNS)); statErr == nil {
		t.Errorf("netns %s left behind", n1.NetNS)
	}
	if link, linkErr := netnsExec(ctx, fmt.Sprintf("loom%d-underlay", c.Slot()), "ip", "link", "show", "node1"); linkErr == nil {
		t.Errorf("underlay link node1 left behind:\n%s", link)
	}
	if _, nodeErr := c.Node("node1"); nodeErr == nil {
		t.Error("Node(node1) still finds the removed node")
	}
	reopened, err := sim.Open(c.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if names := nodeNames(reopened.Nodes()); names != "node2 node3" {
		t.Errorf("the cluster's state lists %s, want node2 node3", names)
	}
	if _, err := c.Client().CoreV1().Nodes().Get(ctx, "node1", metav1.GetOptions{}); err == nil {
		t.Error("Node node1 still in the API")
	}
	if err := c.WaitPodGone(ctx, "default", "lost"); err != nil {
		t.Errorf("pod lost (sandbox %s) still in the API: %v", lost.ContainerID[:12], err)
	}

	// The others keep running: pods across the router still talk, and unscheduled pods are
	// bound by the scheduler that node2 took over.
	if out, err := c.PodExec(ctx, "default", "stay2", "ping", "-n", "-c1", "-W2", pods["stay3"].Status.PodIP); err != nil {
		t.Errorf("ping stay2 -> stay3: %v\n%s", err, out)
	}
	after := createPods(t, c, newPod("after1", ""), newPod("after2", ""))
	if after["after1"].Spec.NodeName == after["after2"].Spec.NodeName {
		t.Errorf("after1 and after2 both bound to %s, want one on node2 and one on node3", after["after1"].Spec.NodeName)
	}
	deletePods(t, c, "stay2", "stay3", "after1", "after2")
	assertNoLeftovers(t, c)
}

func nodeNames(nodes []sim.Node) string {
	var names []string
	for _, n := range nodes {
		names = append(names, n.Name)
	}
	return strings.Join(names, " ")
}

// nsProc is a process and one of its namespaces, as readlink shows it: net:[4026532281].
type nsProc struct {
	pid int
	ns  string
}

// procsByNamespace lists the network and mount namespaces of every process.
func procsByNamespace() []nsProc {
	var procs []nsProc
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		for _, kind := range []string{"net", "mnt"} {
			if ns, err := os.Readlink(filepath.Join(d, "ns", kind)); err == nil {
				procs = append(procs, nsProc{atoi(filepath.Base(d)), ns})
			}
		}
	}
	return procs
}

// downChecked takes the cluster down and checks that its nodes' supervisors and loomds
// went with it.
func downChecked(t *testing.T, c *sim.Cluster) {
	t.Helper()
	var pids []int
	for _, n := range c.Nodes() {
		st, err := c.NodeStatus(n.Name)
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, st.SupervisorPID, st.Loomd.PID)
	}
	if err := c.Down(context.Background()); err != nil {
		t.Fatal(err)
	}
	assertDown(t, c, pids)
}

func testDown(t *testing.T, c *sim.Cluster) {
	ctx := context.Background()
	downChecked(t, c)
	if err := c.Down(ctx); err != nil {
		t.Errorf("second down: %v", err)
	}
}

// assertDown checks that nothing of the cluster remains outside its directory.
func assertDown(t *testing.T, c *sim.Cluster, pids []int) {
	t.Helper()
	prefix := fmt.Sprintf("loom%d-", c.Slot())
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			t.Errorf("netns %s left behind", e.Name())
		}
	}
	if _, err := netlink.LinkByName(prefix + "ul"); err == nil {
		t.Errorf("link %sul left behind", prefix)
	}
	r := c.Router()
	if hasRootRoute(t, r.Addresses[1].Masked(), r.Addresses[0].Addr()) {
		t.Errorf("route to %s left behind", r.Addresses[1].Masked())
	}
	slot := filepath.Join(c.Options().RunDir, fmt.Sprintf("slot-%d", c.Slot()))
	if _, err := os.Stat(slot); err == nil {
		t.Errorf("slot directory %s left behind", slot)
	}
	if etcd, _ := filepath.Glob("/dev/shm/loom-sim-etcd" + strings.ReplaceAll(slot, "/", "-")); len(etcd) > 0 {
		t.Errorf("etcd data left behind: %v", etcd)
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if strings.Contains(s.Text(), c.Dir()) || strings.Contains(s.Text(), slot) || strings.Contains(s.Text(), "/run/netns/"+prefix) {
			t.Errorf("mount left behind: %s", s.Text())
		}
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("process %d still runs", pid)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		pid := filepath.Base(filepath.Dir(p))
		if strings.Contains(string(b), c.Dir()) && alive(atoi(pid)) {
			t.Errorf("process %s still runs: %s", pid, strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
}

// alive says whether a process runs (a zombie does not).
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && len(b) > i+2 && b[i+2] != 'Z' && b[i+2] != 'X'
}

func atoi(s string) int {
	var n int
	fmt.Sscanf(s, "%d", &n)
	return n
}

func poll(timeout time.Duration, ok func() bool) error {
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not after %s", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// addStaleAttachment attaches a namespace "stale" in the node to the default network with
// cnitool, behind the pod runtime's back, and returns the attachment's container id; the
// runtime's GC must remove it. Without LOOM_CNITOOL it does nothing and returns "".
func addStaleAttachment(t *testing.T, c *sim.Cluster, node string) string {
	t.Helper()
	cnitool := os.Getenv("LOOM_CNITOOL")
	if cnitool == "" {
		t.Log("LOOM_CNITOOL not set: not checking CNI GC")
		return ""
	}
	ctx := context.Background()
	if out, err := c.NodeExec(ctx, node, "ip", "netns", "add", "stale"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	out, err := c.NodeExec(ctx, node, "env", "NETCONFPATH=/etc/cni/net.d", "CNI_PATH=/opt/cni/bin",
		cnitool, "add", "loom-default", "/run/netns/stale")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	// cnitool names the attachment after its namespace path.
	sum := sha512.Sum512([]byte("/run/netns/stale"))
	id := fmt.Sprintf("cnitool-%x", sum[:10])
	n, _ := c.Node(node)
	if _, err := os.Stat(filepath.Join(n.CNIStateDir(), "results", "loom-default-"+id+"-eth0")); err != nil {
		t.Fatalf("cnitool left no cache entry: %v", err)
	}
	return id
}
