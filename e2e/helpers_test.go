package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	nadclient "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/loom-cni/loom/delegate"
	"github.com/loom-cni/loom/delegate/npwg"
	"github.com/loom-cni/loom/e2e/sim"
	"github.com/loom-cni/loom/e2e/sim/podruntime"
)

// env is one test's view of the shared cluster: its own namespace, so tests never see each
// other's pods or networks.
type env struct {
	t    *testing.T
	c    *sim.Cluster
	ns   string
	ctx  context.Context
	nads nadclient.Interface
}

func newEnv(t *testing.T, c *sim.Cluster, ns string) *env {
	t.Helper()
	nads, err := nadclient.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, c: c, ns: ns, ctx: context.Background(), nads: nads}
	_, err = c.Client().CoreV1().Namespaces().Create(e.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace %s: %v", ns, err)
	}
	// No namespace controller runs in the simulated cluster, so namespaces are never deleted;
	// what the test made in it is.
	t.Cleanup(e.deleteAll)
	return e
}

// nad creates a NetworkAttachmentDefinition in the test's namespace.
func (e *env) nad(name, config string) {
	e.t.Helper()
	nad := &nadv1.NetworkAttachmentDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns},
		Spec:       nadv1.NetworkAttachmentDefinitionSpec{Config: config},
	}
	if _, err := e.nads.K8sCniCncfIoV1().NetworkAttachmentDefinitions(e.ns).Create(e.ctx, nad, metav1.CreateOptions{}); err != nil {
		e.t.Fatalf("create NAD %s: %v", name, err)
	}
}

// podSpec describes a test pod.
type podSpec struct {
	name        string
	node        string // empty: the scheduler picks
	networks    string // k8s.v1.cni.cncf.io/networks
	annotations map[string]string
	labels      map[string]string
	unmanaged   bool // the runtime leaves its networking to the test
	// limits are the container's extended resource limits, e.g. SR-IOV VFs of a pool.
	limits map[string]int64
}

func (e *env) pod(p podSpec) *corev1.Pod {
	e.t.Helper()
	ann := map[string]string{}
	for k, v := range p.annotations {
		ann[k] = v
	}
	if p.networks != "" {
		ann[nadv1.NetworkAttachmentAnnot] = p.networks
	}
	if p.unmanaged {
		ann[podruntime.UnmanagedAnnotation] = "true"
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: e.ns, Annotations: ann, Labels: p.labels},
		Spec: corev1.PodSpec{
			NodeName:   p.node,
			Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}},
		},
	}
	if len(p.limits) > 0 {
		limits := corev1.ResourceList{}
		for name, n := range p.limits {
			limits[corev1.ResourceName(name)] = *resource.NewQuantity(n, resource.DecimalSI)
		}
		pod.Spec.Containers[0].Resources = corev1.ResourceRequirements{Limits: limits, Requests: limits}
	}
	out, err := e.c.Client().CoreV1().Pods(e.ns).Create(e.ctx, pod, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatalf("create pod %s: %v", p.name, err)
	}
	return out
}

// runningOnBridgeAndMacvlan starts a pod with a bridge and a macvlan secondary (NADs "br" and
// "mv", host-local on the subnets 172.31.<n>.0/24 and 172.31.<n+1>.0/24) and waits until it
// runs: the pod the outage tests take down.
func (e *env) runningOnBridgeAndMacvlan(name, node, bridge string, n int) {
	e.t.Helper()
	e.nad("br", bridgeHostLocal(bridge, fmt.Sprintf("172.31.%d.0/24", n)))
	e.nad("mv", macvlanHostLocal("eth0", fmt.Sprintf("172.31.%d.0/24", n+1)))
	e.pod(podSpec{name: name, node: node, networks: "br, mv"})
	e.running(name)
}

func (e *env) running(name string) *corev1.Pod {
	e.t.Helper()
	p, err := e.c.WaitPodRunning(e.ctx, e.ns, name)
	if err != nil {
		e.t.Fatalf("pod %s/%s not running: %v (%s)", e.ns, name, err, podMessage(p))
	}
	return p
}

func (e *env) failed(name string) *corev1.Pod {
	e.t.Helper()
	p, err := e.c.WaitPodFailed(e.ctx, e.ns, name)
	if err != nil {
		e.t.Fatalf("pod %s/%s did not fail: %v", e.ns, name, err)
	}
	return p
}

func podMessage(p *corev1.Pod) string {
	if p == nil {
		return "no pod"
	}
	return fmt.Sprintf("phase %s: %s", p.Status.Phase, p.Status.Message)
}

// deletePod deletes a pod gracefully, as kubectl does, and waits until the runtime has torn
// it down and the object is gone.
func (e *env) deletePod(name string) {
	e.t.Helper()
	if err := e.c.Client().CoreV1().Pods(e.ns).Delete(e.ctx, name, metav1.DeleteOptions{}); err != nil {
		e.t.Fatalf("delete pod %s: %v", name, err)
	}
	if err := e.c.WaitPodGone(e.ctx, e.ns, name); err != nil {
		e.t.Fatalf("pod %s not gone: %v", name, err)
	}
}

// deleteAll removes the test's pods and NADs.
func (e *env) deleteAll() {
	ctx := context.Background()
	pods, err := e.c.Client().CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{})
	if err == nil {
		for _, p := range pods.Items {
			e.c.Client().CoreV1().Pods(e.ns).Delete(ctx, p.Name, metav1.DeleteOptions{})
		}
		for _, p := range pods.Items {
			e.c.WaitPodGone(ctx, e.ns, p.Name)
		}
	}
	e.nads.K8sCniCncfIoV1().NetworkAttachmentDefinitions(e.ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
}

// status returns a pod's network-status, waiting briefly for loomd's patch to land.
func (e *env) status(name string) []npwg.Status {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p, err := e.c.Client().CoreV1().Pods(e.ns).Get(e.ctx, name, metav1.GetOptions{})
		if err != nil {
			e.t.Fatal(err)
		}
		if v, ok := p.Annotations[nadv1.NetworkStatusAnnot]; ok {
			var st []npwg.Status
			if err := json.Unmarshal([]byte(v), &st); err != nil {
				e.t.Fatalf("network-status of %s is not valid JSON: %v: %s", name, err, v)
			}
			return st
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("pod %s has no network-status annotation", name)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// exec runs a command in a pod's network namespace.
func (e *env) exec(pod string, argv ...string) string {
	e.t.Helper()
	out, err := e.c.PodExec(e.ctx, e.ns, pod, argv...)
	if err != nil {
		e.t.Fatalf("in pod %s: %s: %v: %s", pod, strings.Join(argv, " "), err, out)
	}
	return out
}

func (e *env) ping(from, to string) {
	e.t.Helper()
	e.exec(from, "ping", "-n", "-c", "1", "-W", "2", to)
}

// podAddrs returns the IPv4 addresses of each interface in a pod, from `ip -j addr`.
func (e *env) podAddrs(pod string) map[string][]string {
	e.t.Helper()
	var links []struct {
		Ifname   string `json:"ifname"`
		Address  string `json:"address"`
		AddrInfo []struct {
			Family string `json:"family"`
			Local  string `json:"local"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(e.exec(pod, "ip", "-j", "addr")), &links); err != nil {
		e.t.Fatal(err)
	}
	out := map[string][]string{}
	for _, l := range links {
		out[l.Ifname] = nil
		for _, a := range l.AddrInfo {
			if a.Family == "inet" {
				out[l.Ifname] = append(out[l.Ifname], a.Local)
			}
		}
	}
	return out
}

// ledgerRecord returns the ledger record of a pod's sandbox on its node.
func (e *env) ledgerRecord(pod string) delegate.Record {
	e.t.Helper()
	sb, node, err := e.c.PodSandbox(e.ns, pod)
	if err != nil {
		e.t.Fatal(err)
	}
	l, err := delegate.OpenLedger(filepath.Join(node.LoomStateDir(), "ledger"), slog.New(slog.DiscardHandler))
	if err != nil {
		e.t.Fatal(err)
	}
	r, ok, err := l.Load(delegate.ContainerID(sb.ContainerID))
	if err != nil || !ok {
		e.t.Fatalf("ledger record of %s: ok=%v err=%v", pod, ok, err)
	}
	return r
}

// leftovers lists, per node, what is still held for pods: sandbox records, netns pins,
// cache entries, address reservations, ledger records, VF claims and veth links.
func leftovers(c *sim.Cluster) ([]string, error) {
	var left []string
	for _, n := range c.Nodes() {
		l, err := n.Leftovers()
		if err != nil {
			return nil, err
		}
		ledger := filepath.Join(n.LoomStateDir(), "ledger")
		entries, _ := os.ReadDir(ledger)
		for _, de := range entries {
			if de.Name() != ".lock" {
				l = append(l, "ledger entry "+filepath.Join(ledger, de.Name()))
			}
		}
		// A VF claim names a VF some pod holds; its lock file stays, as flock files do.
		claims := filepath.Join(n.LoomStateDir(), "sriov")
		entries, _ = os.ReadDir(claims)
		for _, de := range entries {
			if !strings.HasSuffix(de.Name(), ".lock") {
				l = append(l, "VF claim "+filepath.Join(claims, de.Name()))
			}
		}
		cache := filepath.Join(n.LoomStateDir(), "cni", "results")
		entries, _ = os.ReadDir(cache)
		for _, de := range entries {
			l = append(l, "loom delegate cache entry "+filepath.Join(cache, de.Name()))
		}
		out, err := exec.Command("ip", "-n", n.NetNS, "-o", "link", "show", "type", "veth").CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("list links of %s: %v: %s", n.Name, err, out)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if f := strings.Fields(line); len(f) > 1 && !strings.HasPrefix(f[1], "eth0@") && !strings.HasPrefix(f[1], sim.SimPF+"@") {
				l = append(l, "link "+strings.TrimSuffix(f[1], ":"))
			}
		}
		for _, x := range l {
			left = append(left, n.Name+": "+x)
		}
	}
	return left, nil
}

// waitClean waits until no node holds anything for a pod (the runtime finishes a teardown a
// moment after the pod object is gone), and fails the test with the list if that does not
// happen.
func waitClean(t *testing.T, c *sim.Cluster) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		left, err := leftovers(c)
		if err != nil {
			t.Fatal(err)
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nodes still hold:\n  %s", strings.Join(left, "\n  "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// loomCall invokes the loom binary inside a node exactly as a runtime does: CNI_* in the
// environment, the network configuration on stdin. It returns stdout and the exit error.
type loomCall struct {
	command, containerID, netns, ifname, args string
	conf                                      map[string]any // extra top-level keys
	cniVersion                                string
}

func (e *env) invokeLoom(node string, call loomCall) (string, error) {
	e.t.Helper()
	n, err := e.c.Node(node)
	if err != nil {
		e.t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(n.HostPath("/etc/cni/net.d"), "00-loom.conflist"))
	if err != nil {
		e.t.Fatal(err)
	}
	var list struct {
		Name    string           `json:"name"`
		Plugins []map[string]any `json:"plugins"`
	}
	if err = json.Unmarshal(b, &list); err != nil {
		e.t.Fatal(err)
	}
	conf := list.Plugins[0]
	conf["name"] = list.Name
	conf["cniVersion"] = call.cniVersion
	for k, v := range call.conf {
		conf[k] = v
	}
	stdin, _ := json.Marshal(conf)
	if call.ifname == "" {
		call.ifname = "eth0"
	}
	cmd, err := e.c.NodeCmd(e.ctx, node, "env",
		"CNI_COMMAND="+call.command, "CNI_CONTAINERID="+call.containerID, "CNI_NETNS="+call.netns,
		"CNI_IFNAME="+call.ifname, "CNI_ARGS="+call.args, "CNI_PATH=/opt/cni/bin", "/opt/cni/bin/loom")
	if err != nil {
		e.t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(stdin), &stdout, &stderr
	err = cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("%w: %s%s", err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

func podArgs(p *corev1.Pod, containerID string) string {
	return fmt.Sprintf("IgnoreUnknown=1;K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;K8S_POD_INFRA_CONTAINER_ID=%s;K8S_POD_UID=%s",
		p.Namespace, p.Name, containerID, p.UID)
}

// nodeNetns creates a network namespace inside a node, as a runtime does for a sandbox, and
// returns its path there and a func that removes it. It is removed when the test ends in any
// case.
func (e *env) nodeNetns(node, name string) (path string, remove func()) {
	e.t.Helper()
	if out, err := e.c.NodeExec(e.ctx, node, "ip", "netns", "add", name); err != nil {
		e.t.Fatalf("ip netns add %s in %s: %v: %s", name, node, err, out)
	}
	var once sync.Once
	remove = func() {
		once.Do(func() { e.c.NodeExec(context.Background(), node, "ip", "netns", "del", name) })
	}
	e.t.Cleanup(remove)
	return "/run/netns/" + name, remove
}
