package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/loom-cni/loom/delegate"
	"github.com/loom-cni/loom/delegate/npwg"
	"github.com/loom-cni/loom/e2e/sim"
	"github.com/loom-cni/loom/e2e/sim/simtest"
	"github.com/loom-cni/loom/sriov"
	"github.com/loom-cni/loom/sriov/attach"
	"github.com/loom-cni/loom/sriov/vf"
	"github.com/loom-cni/loom/tenants"
)

// The SR-IOV suite, on two nodes with simulated NICs (sim.Options.SRIOV): VFs discovered by
// loomd, advertised by its device plugins, allocated by the node's runtime as the kubelet
// does, attached by the loom-sriov network type, and every VF given back to the host as it
// was.

const vfSubnet = "192.168.80.0/24"

// vfNAD is a loom-sriov network of pool, on VLAN vlan, with ipam ("" for none).
func vfNAD(vlan int, ipam string) string {
	conf := fmt.Sprintf(`{"cniVersion":"1.0.0","type":"loom-sriov","vlan":%d,"capabilities":{"mac":true}`, vlan)
	if ipam != "" {
		conf += `,"ipam":` + ipam
	}
	return conf + "}"
}

// nadFor creates a NAD whose interfaces are devices of resource.
func (e *env) nadFor(name, resource, config string) {
	e.t.Helper()
	nad := &nadv1.NetworkAttachmentDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns, Annotations: map[string]string{npwg.ResourceNameAnnot: resource}},
		Spec:       nadv1.NetworkAttachmentDefinitionSpec{Config: config},
	}
	if _, err := e.nads.K8sCniCncfIoV1().NetworkAttachmentDefinitions(e.ns).Create(e.ctx, nad, metav1.CreateOptions{}); err != nil {
		e.t.Fatalf("create NAD %s: %v", name, err)
	}
}

// hostVF is a VF netdev in its node's namespace, as the test compares it before and after.
type hostVF struct {
	MAC string
	MTU int
}

// hostVFs lists the netdev VFs in each node's own namespace: name → MAC and MTU.
func hostVFs(t *testing.T, c *sim.Cluster) map[string]map[string]hostVF {
	t.Helper()
	out := map[string]map[string]hostVF{}
	for _, n := range c.Nodes() {
		b, err := exec.Command("ip", "-n", n.NetNS, "-j", "link", "show").Output()
		if err != nil {
			t.Fatalf("links of %s: %v", n.Name, err)
		}
		var links []struct {
			Ifname  string `json:"ifname"`
			Address string `json:"address"`
			MTU     int    `json:"mtu"`
		}
		if err := json.Unmarshal(b, &links); err != nil {
			t.Fatal(err)
		}
		out[n.Name] = map[string]hostVF{}
		for _, l := range links {
			if strings.HasPrefix(l.Ifname, sim.SimPF+"v") {
				out[n.Name][l.Ifname] = hostVF{l.Address, l.MTU}
			}
		}
	}
	return out
}

// vfWorld is what the test expects to find unchanged after pods come and go: the VF netdevs
// in the nodes and the VF settings on their PFs.
type vfWorld struct {
	netdevs  map[string]map[string]hostVF
	settings map[string]string
}

func snapshotVFs(t *testing.T, c *sim.Cluster) vfWorld {
	t.Helper()
	return vfWorld{netdevs: hostVFs(t, c), settings: vfSettings(t, c)}
}

// requireVFsBack fails unless every VF is back in its node as it was, with its PF settings as
// they were, and (waitClean) no claim is left.
func requireVFsBack(t *testing.T, c *sim.Cluster, want vfWorld) {
	t.Helper()
	waitClean(t, c)
	got := snapshotVFs(t, c)
	for node, vfs := range want.netdevs {
		if !maps.Equal(vfs, got.netdevs[node]) {
			t.Errorf("%s: VF netdevs are\n  %v\nwant\n  %v", node, got.netdevs[node], vfs)
		}
	}
	if !maps.Equal(want.settings, got.settings) {
		t.Errorf("VF settings on the PFs are\n  %v\nwant\n  %v", got.settings, want.settings)
	}
}

// deviceInfo returns the device-info of a pod's attachment to network.
func (e *env) deviceInfo(pod, network string) *nadv1.DeviceInfo {
	e.t.Helper()
	for _, s := range e.status(pod) {
		if s.Name == network {
			if len(s.DeviceInfo) == 0 {
				e.t.Fatalf("pod %s: network-status of %s has no device-info", pod, network)
			}
			var di nadv1.DeviceInfo
			if err := json.Unmarshal(s.DeviceInfo, &di); err != nil {
				e.t.Fatal(err)
			}
			return &di
		}
	}
	e.t.Fatalf("pod %s: no network-status entry for %s", pod, network)
	return nil
}

func TestSRIOV(t *testing.T) {
	c := simtest.Start(t, func(o *sim.Options) {
		o.Nodes = 2
		o.SRIOV = true
	})
	e := newEnv(t, c, "e2e-sriov")
	e.nadFor("vf-a", sim.SRIOVPoolA, vfNAD(100, fmt.Sprintf(`{"type":"loom-ipam","range":%q,"blockSize":28}`, vfSubnet)))
	e.nadFor("vf-bad-ipam", sim.SRIOVPoolA, vfNAD(101, `{"type":"no-such-ipam"}`))
	e.nadFor("vf-dpdk", sim.SRIOVPoolDPDK, vfNAD(200, ""))
	before := snapshotVFs(t, c)
	if n := len(before.netdevs["node1"]); n != 8 {
		t.Fatalf("node1 has %d VF netdevs, want 8: %v", n, before.netdevs["node1"])
	}
	vfPod := func(name, node, networks string, limits map[string]int64) {
		e.pod(podSpec{name: name, node: node, networks: networks, limits: limits})
	}
	steps := []struct {
		name string
		f    func(*testing.T)
	}{
		{"NodesAdvertiseTheirPools", func(t *testing.T) {
			// The device plugins' devices reach the Node as the kubelet reports them.
			want := map[string]int64{sim.SRIOVPoolA: 4, sim.SRIOVPoolB: 4, sim.SRIOVPoolDPDK: 8}
			advertised := func() (bool, error) {
				n, err := c.Client().CoreV1().Nodes().Get(e.ctx, "node2", metav1.GetOptions{})
				if err != nil {
					return false, err
				}
				for name, count := range want {
					q := n.Status.Allocatable[corev1.ResourceName(name)]
					if q.Value() != count {
						return false, nil
					}
				}
				return true, nil
			}
			if err := waitFor(10*time.Second, advertised); err != nil {
				t.Fatalf("node2 does not show allocatable %v: %v", want, err)
			}
		}},
		{"PodsOnTwoNodesReachEachOtherOverVFs", func(t *testing.T) {
			vfPod("v1", "node1", "vf-a", map[string]int64{sim.SRIOVPoolA: 1})
			vfPod("v2", "node2", "vf-a", map[string]int64{sim.SRIOVPoolA: 1})
			e.running("v1")
			e.running("v2")
			a1, a2 := e.podAddrs("v1")["net1"], e.podAddrs("v2")["net1"]
			if len(a1) != 1 || len(a2) != 1 {
				t.Fatalf("net1 addresses: v1 %v, v2 %v", a1, a2)
			}
			e.ping("v1", a2[0])
			e.ping("v2", a1[0])
			di := e.deviceInfo("v1", e.ns+"/vf-a")
			if di.Type != "pci" || di.Pci == nil || di.Pci.PciAddress == "" || di.Pci.PfPciAddress == "" {
				t.Fatalf("device-info of v1's VF: %+v", di)
			}
			checkVFInPod(t, e, c, "v1", "node1", di.Pci.PciAddress, 100)

			// loomctl status shows the VF among node1's attachments, and the pools.
			out, err := exec.CommandContext(e.ctx, filepath.Join(c.Options().BinDir, "loomctl"), "status", "node1", "--dir", c.Dir()).CombinedOutput()
			if err != nil {
				t.Fatalf("loomctl status: %v\n%s", err, out)
			}
			// From node1's loomd: the policy engine's state and the VF held by v1.
			loomdSays := regexp.MustCompile(`(?m)^  policy: \d+ pods, \d+ rules; last sync ok|^  ` + regexp.QuoteMeta(sim.SRIOVPoolA) + ` +attached +1$`)
			if n := len(loomdSays.FindAllString(string(out), -1)); n != 2 {
				t.Errorf("loomctl status node1 does not show loomd's policy state and one attached VF of %s:\n%s", sim.SRIOVPoolA, out)
			}
			for _, want := range []string{"primary network vxlan", "node2", e.ns + "/v1", "net1", e.ns + "/vf-a", a1[0], di.Pci.PciAddress, sim.SRIOVPoolA} {
				if !strings.Contains(string(out), want) {
					t.Errorf("loomctl status node1 lacks %q:\n%s", want, out)
				}
			}
		}},
		{"DeleteReturnsTheVFAsItWas", func(t *testing.T) {
			e.deletePod("v1")
			e.deletePod("v2")
			requireVFsBack(t, c, before)
		}},
		{"FailureAfterTheMoveReturnsTheVF", func(t *testing.T) {
			vfPod("vbad", "node1", "vf-bad-ipam", map[string]int64{sim.SRIOVPoolA: 1})
			p := e.failed("vbad")
			if msg := podMessage(p); !strings.Contains(msg, "no-such-ipam") || !strings.Contains(msg, "vf-bad-ipam") {
				t.Errorf("failure message does not name the network and its IPAM: %s", msg)
			}
			e.deletePod("vbad")
			requireVFsBack(t, c, before)
		}},
		{"DPDKVFGetsPFSettingsAndDeviceInfo", func(t *testing.T) {
			vfPod("vd", "node1", "vf-dpdk", map[string]int64{sim.SRIOVPoolDPDK: 1})
			e.running("vd")
			di := e.deviceInfo("vd", e.ns+"/vf-dpdk")
			if di.Pci == nil || di.Pci.PciAddress == "" {
				t.Fatalf("device-info of vd's VF: %+v", di)
			}
			if _, ok := e.podAddrs("vd")["net1"]; ok {
				t.Error("a DPDK VF has a netdev in the pod")
			}
			checkVFSettings(t, c, "node1", di.Pci.PciAddress, 200)
			e.deletePod("vd")
			requireVFsBack(t, c, before)
		}},
		{"MoreVFsThanThePoolHasIsRefused", func(t *testing.T) {
			vfPod("vmany", "node1", "vf-a", map[string]int64{sim.SRIOVPoolA: 5})
			p := e.failed("vmany")
			if msg := podMessage(p); !strings.Contains(msg, sim.SRIOVPoolA) {
				t.Errorf("refusal does not name the pool: %s", msg)
			}
			e.deletePod("vmany")
			requireVFsBack(t, c, before)
		}},
		{"PodDeletedWhileLoomdIsDownGetsItsVFBackOnceLoomdIsUp", func(t *testing.T) {
			vfPod("vr", "node2", "vf-a", map[string]int64{sim.SRIOVPoolA: 1})
			e.running("vr")
			sb, node, err := c.PodSandbox(e.ns, "vr")
			if err != nil {
				t.Fatal(err)
			}
			if err = c.StopLoomd("node2"); err != nil {
				t.Fatal(err)
			}
			// The loom binary releases what it can from the ledger; the VF waits for loomd,
			// and the runtime retries DEL until it is back.
			if err = c.Client().CoreV1().Pods(e.ns).Delete(e.ctx, "vr", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			ledger, err := delegate.OpenLedger(filepath.Join(node.LoomStateDir(), "ledger"), slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			onlyVFLeft := func() (bool, error) {
				r, ok, err := ledger.Load(delegate.ContainerID(sb.ContainerID))
				return ok && len(r.Attachments) == 1 && r.Attachments[0].Kind == attach.Kind, err
			}
			if err := waitFor(20*time.Second, onlyVFLeft); err != nil {
				t.Fatalf("the ledger never kept the VF alone while loomd was down: %v", err)
			}
			if err := c.StartLoomd(e.ctx, "node2"); err != nil {
				t.Fatal(err)
			}
			if err := c.WaitPodGone(e.ctx, e.ns, "vr"); err != nil {
				t.Fatal(err)
			}
			requireVFsBack(t, c, before)
		}},
		{"TenantsApartOnVFs", func(t *testing.T) { testTenantsOnVFs(t, c, e.ns, before) }},
		{"ChurnOfAHundredPodsLeavesEveryVFFree", func(t *testing.T) {
			const total, perNode = 100, 4 // pool A has 4 VFs per node
			for start := 0; start < total; start += 2 * perNode {
				var names []string
				for i := start; i < min(total, start+2*perNode); i++ {
					name := fmt.Sprintf("churn-%03d", i)
					vfPod(name, fmt.Sprintf("node%d", 1+i%2), "vf-a", map[string]int64{sim.SRIOVPoolA: 1})
					names = append(names, name)
				}
				errs := make([]error, len(names))
				var wg sync.WaitGroup
				for i, name := range names {
					wg.Go(func() {
						if p, err := c.WaitPodRunning(e.ctx, e.ns, name); err != nil {
							errs[i] = fmt.Errorf("pod %s not running: %w (%s)", name, err, podMessage(p))
						}
					})
				}
				wg.Wait()
				if err := errors.Join(errs...); err != nil {
					t.Fatal(err)
				}
				for i, name := range names {
					wg.Go(func() {
						if err := e.c.Client().CoreV1().Pods(e.ns).Delete(e.ctx, name, metav1.DeleteOptions{}); err != nil {
							errs[i] = err
							return
						}
						errs[i] = c.WaitPodGone(e.ctx, e.ns, name)
					})
				}
				wg.Wait()
				if err := errors.Join(errs...); err != nil {
					t.Fatal(err)
				}
			}
			requireVFsBack(t, c, before)
		}},
	}
	for _, s := range steps {
		ok := t.Run(s.name, func(t *testing.T) {
			e.t = t // the env's helpers fail the step that calls them
			s.f(t)
		})
		e.t = t
		if !ok {
			t.Logf("%s failed; the cluster's state may affect the steps after it", s.name)
		}
	}
}

// vfSettings returns the VF settings recorded on every node's PFs, "node vf N of pf P" →
// settings, leaving out VFs whose settings are the default ones.
func vfSettings(t *testing.T, c *sim.Cluster) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, n := range c.Nodes() {
		states, err := vf.NewRecorder(n.SimVFStateFile()).States()
		if err != nil {
			t.Fatalf("%s: recorded VF settings: %v", n.Name, err)
		}
		for k, s := range states {
			if s != vf.Default() {
				out[n.Name+" "+k.String()] = fmt.Sprintf("%+v", s)
			}
		}
	}
	return out
}

// lookupVF reads the VF at a PCI address from a node's fake sysfs.
func lookupVF(t *testing.T, c *sim.Cluster, node, address string) sriov.Function {
	t.Helper()
	n, err := c.Node(node)
	if err != nil {
		t.Fatal(err)
	}
	f, err := sriov.NewScanner(n.SimSysfsRoot()).Function(address)
	if err != nil {
		t.Fatalf("%s: %v", node, err)
	}
	return f
}

// checkVFSettings checks what the PF holds for the VF at address: the VLAN, spoof checking on
// and trust off, and returns it.
func checkVFSettings(t *testing.T, c *sim.Cluster, node, address string, vlan int) vf.State {
	t.Helper()
	f := lookupVF(t, c, node, address)
	n, _ := c.Node(node)
	s, err := vf.NewRecorder(n.SimVFStateFile()).State(f.PFNetdev, f.Index)
	if err != nil {
		t.Fatal(err)
	}
	if s.VLAN != vlan || !s.SpoofChk || s.Trust {
		t.Errorf("%s: settings of %s = %+v, want VLAN %d, spoof checking on, trust off", node, f.VF, s, vlan)
	}
	return s
}

// checkVFInPod checks that the VF at address left its node for the pod's net1, with the MAC
// the PF holds for it.
func checkVFInPod(t *testing.T, e *env, c *sim.Cluster, pod, node, address string, vlan int) {
	t.Helper()
	f := lookupVF(t, c, node, address)
	if _, still := hostVFs(t, c)[node][f.Netdev]; still {
		t.Errorf("%s: VF netdev %s is still in the node", node, f.Netdev)
	}
	s := checkVFSettings(t, c, node, address, vlan)
	var links []struct {
		Ifname  string `json:"ifname"`
		Address string `json:"address"`
	}
	if err := json.Unmarshal([]byte(e.exec(pod, "ip", "-j", "link", "show", "net1")), &links); err != nil || len(links) != 1 {
		t.Fatalf("net1 of %s: %v", pod, err)
	}
	if links[0].Address != s.MAC {
		t.Errorf("net1 of %s has MAC %s, the PF holds %q for the VF", pod, links[0].Address, s.MAC)
	}
}

// waitFor polls done every 100 ms until it says yes, fails or timeout passes.
func waitFor(timeout time.Duration, done func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := done()
		if ok || err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not done within %s", timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// testTenantsOnVFs puts two tenants on one VF network the platform shares with them: pods of
// one tenant reach each other over their VFs, the other tenant's pod is dropped, and a network
// of a pool that is not the tenant's is refused when it is created.
func testTenantsOnVFs(t *testing.T, c *sim.Cluster, platformNS string, before vfWorld) {
	dyn, err := dynamic.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	shared := platformNS + "/vf-a"
	ctx := context.Background()
	envs := map[string]*env{}
	for _, tenant := range []string{"va", "vb"} {
		ns := "e2e-sriov-" + tenant
		envs[tenant] = newEnv(t, c, ns)
		patch := fmt.Sprintf(`{"metadata":{"labels":{"loom-e2e/tenant":%q}}}`, tenant)
		if _, err = c.Client().CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "loom.dev/v1alpha1", "kind": "Tenant", "metadata": map[string]any{"name": tenant},
			"spec": map[string]any{
				"namespaceSelector": map[string]any{"matchLabels": map[string]any{"loom-e2e/tenant": tenant}},
				"sharedNetworks":    []any{shared},
				"vlans":             []any{"100-199"},
				"sriov":             map[string]any{"pools": []any{sim.SRIOVPoolA}, "vfQuota": 2},
			},
		}}
		if _, err = dyn.Resource(tenants.GVR).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { dyn.Resource(tenants.GVR).Delete(context.Background(), tenant, metav1.DeleteOptions{}) })
	}
	// Admission and ADD decide from caches: wait until the controller's shows both tenants
	// owning their namespaces.
	for _, tenant := range []string{"va", "vb"} {
		owns := func() (bool, error) {
			obj, gerr := dyn.Resource(tenants.GVR).Get(ctx, tenant, metav1.GetOptions{})
			if gerr != nil {
				return false, gerr
			}
			nss, _, _ := unstructured.NestedStringSlice(obj.Object, "status", "namespaces")
			return len(nss) == 1, nil
		}
		if err = waitFor(10*time.Second, owns); err != nil {
			t.Fatalf("tenant %s never showed its namespace: %v", tenant, err)
		}
	}
	one := map[string]int64{sim.SRIOVPoolA: 1}
	envs["va"].pod(podSpec{name: "a1", node: "node1", networks: shared, limits: one})
	envs["va"].pod(podSpec{name: "a2", node: "node2", networks: shared, limits: one})
	envs["vb"].pod(podSpec{name: "b1", node: "node1", networks: shared, limits: one})
	addr := map[string]string{}
	for _, p := range []struct{ tenant, name string }{{"va", "a1"}, {"va", "a2"}, {"vb", "b1"}} {
		e := envs[p.tenant]
		e.running(p.name)
		ips := e.podAddrs(p.name)["net1"]
		if len(ips) != 1 {
			t.Fatalf("net1 of %s: %v", p.name, ips)
		}
		addr[p.name] = ips[0]
	}
	envs["va"].ping("a1", addr["a2"])
	for _, p := range []struct{ tenant, from, to string }{{"va", "a1", "b1"}, {"vb", "b1", "a2"}} {
		if out, perr := c.PodExec(ctx, "e2e-sriov-"+p.tenant, p.from, "ping", "-n", "-c", "1", "-W", "1", addr[p.to]); perr == nil {
			t.Errorf("%s reached %s of another tenant over a VF: %s", p.from, p.to, out)
		}
	}
	// Pool B is not the tenants': a network of it is refused in their namespaces.
	nad := &nadv1.NetworkAttachmentDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: "vf-b", Namespace: "e2e-sriov-va", Annotations: map[string]string{npwg.ResourceNameAnnot: sim.SRIOVPoolB}},
		Spec:       nadv1.NetworkAttachmentDefinitionSpec{Config: vfNAD(150, "")},
	}
	_, err = envs["va"].nads.K8sCniCncfIoV1().NetworkAttachmentDefinitions("e2e-sriov-va").Create(ctx, nad, metav1.CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), sim.SRIOVPoolB) {
		t.Errorf("a network of a pool that is not the tenant's was not refused by naming the pool: %v", err)
	}
	for tenant, e := range envs {
		e.deleteAll()
		delete(envs, tenant)
	}
	requireVFsBack(t, c, before)
}
