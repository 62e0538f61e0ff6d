package sim_test

import (
	"bufio"
	"context"
	"crypto/sha512"
	"fmt"
	"net/netip"
	"os"
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

// startCluster brings up a two-node cluster whose loomd is the stand-in and whose node
// supervisors are this test binary, and tears it down when the test ends.
func startCluster(t *testing.T) *sim.Cluster {
	return simtest.Start(t, func(o *sim.Options) {
		o.Loomd = simtest.StandInLoomd(t)
		o.LoomdWithoutHealth = true
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
		{"pods run with addresses from their node's pod CIDR", testPods},
		{"a pod whose CNI ADD fails ends Failed with the error", testFailedADD},
		{"kubectl works with the kubeconfig", testKubectl},
		{"loomd stops and starts again; pods wait for a network", testLoomdRestart},
		{"a restarted supervisor keeps live sandboxes, tears down dead ones and GCs", testSupervisorRestart},
		{"the API server stops and starts with its state", testAPIServerRestart},
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

func testPods(t *testing.T, c *sim.Cluster) {
	ctx := context.Background()
	nodes := nodesByName(c)
	pods := createPods(t, c, newPod("a1", "node1"), newPod("a2", "node1"), newPod("b1", "node2"),
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
	for _, target := range []string{"a2", "b1"} {
		if out, err := c.PodExec(ctx, "default", "a1", "ping", "-c1", "-W2", pods[target].Status.PodIP); err != nil {
			t.Errorf("ping a1 -> %s: %v\n%s", target, err, out)
		}
	}
	deletePods(t, c, "a1", "a2", "b1", "free1", "free2")
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
	if err != nil || strings.TrimSpace(string(out)) != "node/node1\nnode/node2" {
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
	if out, pingErr := c.NodeExec(ctx, "node2", "ping", "-c1", "-W2", pods["keep"].Status.PodIP); pingErr != nil {
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

func testDown(t *testing.T, c *sim.Cluster) {
	ctx := context.Background()
	var pids []int
	for _, n := range c.Nodes() {
		st, err := c.NodeStatus(n.Name)
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, st.SupervisorPID, st.Loomd.PID)
	}
	if err := c.Down(ctx); err != nil {
		t.Fatal(err)
	}
	assertDown(t, c, pids)
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
