package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/loom-cni/loom/e2e/sim"
	"github.com/loom-cni/loom/e2e/sim/simtest"
	"github.com/loom-cni/loom/tenants"
)

// The escape suite: two tenants (a, b) and the platform on one cluster with
// simulated SR-IOV NICs, every pod on the primary network and on each secondary attachment
// type this kernel has. Every way across a tenant boundary or onto the node that issue 11
// lists is tried end to end, plus probes of IPv4 and IPv6 (TCP, UDP, ICMP, link-local
// included), ARP, a frame of another ethertype and frames with forged sources from a packet
// socket. What must pass and what must not comes from the README's tenant rules: pods of one
// tenant reach each other, pods of two tenants never, the platform only on the primary
// network, and a frame from an address the pod was not given never. Every attempt that must
// be blocked has a control that must pass (the honest frame, or the same probe within one
// tenant), so a broken probe never looks like isolation. The suite prints one line,
// "escape attempts: N made, M got through", and fails on any that got through.

const (
	escNsA, escNsB, escNsPlat = "esc-a", "esc-b", "esc-plat"
	// escHDBridge joins, in node1, the node ends of the host-device links handed to pods.
	escHDBridge = "eschdbr"
)

// escPod is a pod of the suite; k is its address suffix on every secondary network.
type escPod struct {
	ns, name, tenant, node string
	k                      int
	primary                string            // its primary IPv4 address
	ifs                    map[string]*podIf // secondary network key → interface
	eth0                   *podIf
	hostVeth, hostVethMAC  string // the node end of its primary veth
}

// podIf is one interface of a pod as the kernel shows it.
type podIf struct {
	name, mac, v4, v6, ll string
}

// l2net is a secondary network the suite attaches pods to: interface key in each member,
// addresses 192.168.<n>.<k>/24 and fd00:<n>::<k>/64.
type l2net struct {
	key, about string
	n          int
	refs       map[string]string // member pod → the network it names in its annotation
	node1Only  bool              // its link layer does not span nodes
}

type escapeEnv struct {
	t     *testing.T
	c     *sim.Cluster
	ctx   context.Context
	dyn   dynamic.Interface
	probe string // the escapeprobe binary
	envs  map[string]*env
	pods  []*escPod
	nets  []*l2net

	mu      sync.Mutex
	made    int
	through []string
	port    int
	marker  int
}

func TestEscape(t *testing.T) {
	c := simtest.Start(t, func(o *sim.Options) {
		o.Nodes = 3 // node1 and node2 share underlay subnet A, which macvlan on eth0 spans
		o.SRIOV = true
		o.Mode = sim.ModeVXLAN // the VXLAN injection is one of the attempts
	})
	dyn, err := dynamic.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	x := &escapeEnv{t: t, c: c, ctx: context.Background(), dyn: dyn, envs: map[string]*env{},
		probe: filepath.Join(c.Options().BinDir, "escapeprobe"), port: 20000}
	if _, err = exec.LookPath(x.probe); err != nil {
		t.Fatalf("no %s: run make build", x.probe)
	}
	ipvlan := x.kernelHasIPVLAN()
	x.setUp(ipvlan)
	// The summary is the suite's verdict; it is printed however the steps end.
	defer x.summary()

	steps := []struct {
		name string
		f    func(*testing.T)
	}{
		{"PrimaryVeth", x.testPrimary},
		{"VXLANFromPods", x.testVXLAN},
	}
	for _, n := range x.nets {
		steps = append(steps, struct {
			name string
			f    func(*testing.T)
		}{n.key, func(t *testing.T) { x.testL2(t, n) }})
	}
	steps = append(steps, []struct {
		name string
		f    func(*testing.T)
	}{
		{"ipvlan", func(t *testing.T) {
			if !ipvlan {
				t.Skip("this kernel has no ipvlan link type (ip link add … type ipvlan fails): the ipvlan attachment is tried where it exists")
			}
		}},
		{"NADsActingOnTheNode", x.testNodeResourceNADs},
		{"ClaimedAddresses", x.testClaimedAddresses},
		{"RunningPodChanges", x.testRunningPodChanges},
		{"VFQuota", x.testVFQuota},
	}...)
	for _, s := range steps {
		t.Run(s.name, s.f)
	}
}

// kernelHasIPVLAN tries an ipvlan link in node1.
func (x *escapeEnv) kernelHasIPVLAN() bool {
	if _, err := x.c.NodeExec(x.ctx, "node1", "ip", "link", "add", "escipvl0", "link", "eth0", "type", "ipvlan", "mode", "l2"); err != nil {
		return false
	}
	x.c.NodeExec(x.ctx, "node1", "ip", "link", "del", "escipvl0")
	return true
}

// setUp makes the tenants, the networks and the pods, and waits until every pod runs with
// its addresses usable.
func (x *escapeEnv) setUp(ipvlan bool) {
	t := x.t
	x.hostDeviceLinks()
	for _, ns := range []string{escNsA, escNsB, escNsPlat} {
		x.envs[ns] = newEnv(t, x.c, ns)
	}
	x.tenant("a", map[string]any{
		"nodeResources": map[string]any{"masters": []any{"eth0"}, "bridges": []any{"escbra"}, "hostDevices": []any{"eschda1", "eschda2"}},
		"sriov":         map[string]any{"pools": []any{sim.SRIOVPoolA}, "vfQuota": int64(3)},
	})
	x.tenant("b", map[string]any{
		"nodeResources": map[string]any{"masters": []any{"eth0"}, "hostDevices": []any{"eschdb1"}},
		"sriov":         map[string]any{"pools": []any{sim.SRIOVPoolB}, "vfQuota": int64(2)},
	})
	for ns, tenant := range map[string]string{escNsA: "a", escNsB: "b"} {
		patch := fmt.Sprintf(`{"metadata":{"labels":{"loom-e2e/esc-tenant":%q}}}`, tenant)
		if _, err := x.c.Client().CoreV1().Namespaces().Patch(x.ctx, ns, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	x.waitTenantNamespaces()

	x.createNADs(ipvlan)

	x.pods = []*escPod{
		{ns: escNsA, name: "a1", tenant: "a", node: "node1", k: 11},
		{ns: escNsA, name: "a2", tenant: "a", node: "node1", k: 12},
		{ns: escNsA, name: "a3", tenant: "a", node: "node2", k: 13},
		{ns: escNsB, name: "b1", tenant: "b", node: "node1", k: 21},
		{ns: escNsB, name: "b2", tenant: "b", node: "node2", k: 22},
		{ns: escNsPlat, name: "p1", node: "node1", k: 31},
	}
	own := func(name string, members ...string) map[string]string {
		m := map[string]string{}
		for _, p := range members {
			m[p] = x.podNamed(p).ns + "/" + name
		}
		return m
	}
	shared := func(ref string, members ...string) map[string]string {
		m := map[string]string{}
		for _, p := range members {
			m[p] = ref
		}
		return m
	}
	x.nets = []*l2net{
		{key: "smv", about: "macvlan on eth0: the platform's NAD, shared with both tenants", n: 71,
			refs: shared(escNsPlat+"/shared-mv", "a1", "a2", "a3", "b1", "b2", "p1")},
		{key: "lan", about: "macvlan on eth0: each tenant's own NAD, one link layer", n: 72,
			refs: own("lan", "a1", "a2", "a3", "b1", "b2")},
		{key: "sbr", about: "bridge escbr: the platform's NAD, shared with both tenants", n: 73, node1Only: true,
			refs: shared(escNsPlat+"/shared-br", "a1", "a2", "b1", "p1")},
		{key: "vf", about: "SR-IOV VF netdevs of one PF: tenant a's pool and tenant b's", n: 74,
			refs: own("vf", "a1", "a2", "a3", "b1", "b2")},
		{key: "hd", about: "host-device: links the platform granted each tenant, and its own, wired to one bridge in node1", n: 75, node1Only: true,
			refs: map[string]string{"a1": escNsA + "/hd1", "a2": escNsA + "/hd2", "b1": escNsB + "/hd1", "p1": escNsPlat + "/hd"}},
	}
	if ipvlan {
		x.nets = append(x.nets, &l2net{key: "ipv", about: "ipvlan on eth0: each tenant's own NAD", n: 76,
			refs: own("ipvl", "a1", "a2", "b1", "b2")})
	}
	for _, p := range x.pods {
		x.envs[p.ns].pod(podSpec{name: p.name, node: p.node, networks: x.annotation(p), limits: x.vfLimits(p)})
	}
	var wg sync.WaitGroup
	for _, p := range x.pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x.envs[p.ns].running(p.name)
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for _, p := range x.pods {
		x.learn(p)
	}
}

// createNADs makes the platform's shared macvlan and bridge networks and host device, and
// each tenant's macvlan (and ipvlan) on eth0, VF network and granted host devices, every one
// with static addresses the pods ask for.
func (x *escapeEnv) createNADs(ipvlan bool) {
	static := `"ipam":{"type":"static"},"capabilities":{"ips":true}`
	plat, a, b := x.envs[escNsPlat], x.envs[escNsA], x.envs[escNsB]
	plat.nad("shared-mv", `{"cniVersion":"1.0.0","type":"macvlan","master":"eth0","mode":"bridge",`+static+`}`)
	plat.nad("shared-br", `{"cniVersion":"1.0.0","type":"bridge","bridge":"escbr",`+static+`}`)
	plat.nad("hd", `{"cniVersion":"1.0.0","type":"host-device","device":"eschdp",`+static+`}`)
	for _, e := range []*env{a, b} {
		e.nad("lan", `{"cniVersion":"1.0.0","type":"macvlan","master":"eth0","mode":"bridge",`+static+`}`)
		if ipvlan {
			e.nad("ipvl", `{"cniVersion":"1.0.0","type":"ipvlan","master":"eth0","mode":"l2",`+static+`}`)
		}
	}
	vf := `{"cniVersion":"1.0.0","type":"loom-sriov","ipam":{"type":"static"},"capabilities":{"ips":true,"mac":true}}`
	a.nadFor("vf", sim.SRIOVPoolA, vf)
	b.nadFor("vf", sim.SRIOVPoolB, vf)
	a.nad("hd1", `{"cniVersion":"1.0.0","type":"host-device","device":"eschda1",`+static+`}`)
	a.nad("hd2", `{"cniVersion":"1.0.0","type":"host-device","device":"eschda2",`+static+`}`)
	b.nad("hd1", `{"cniVersion":"1.0.0","type":"host-device","device":"eschdb1",`+static+`}`)
}

// hostDeviceLinks makes, in node1, one veth per host device the suite hands out, whose
// other end joins the bridge escHDBridge: the admin's wiring of those devices to one switch.
func (x *escapeEnv) hostDeviceLinks() {
	x.t.Helper()
	x.nodeMust("node1", "ip", "link", "add", escHDBridge, "type", "bridge")
	x.t.Cleanup(func() { x.c.NodeExec(context.Background(), "node1", "ip", "link", "del", escHDBridge) })
	x.nodeMust("node1", "ip", "link", "set", escHDBridge, "up")
	for _, dev := range []string{"eschda1", "eschda2", "eschdb1", "eschdp"} {
		x.nodeMust("node1", "ip", "link", "add", dev, "type", "veth", "peer", "name", dev+"s")
		x.t.Cleanup(func() { x.c.NodeExec(context.Background(), "node1", "ip", "link", "del", dev+"s") })
		x.nodeMust("node1", "ip", "link", "set", dev+"s", "master", escHDBridge, "up")
	}
}

func (x *escapeEnv) nodeMust(node string, argv ...string) string {
	x.t.Helper()
	out, err := x.c.NodeExec(x.ctx, node, argv...)
	if err != nil {
		x.t.Fatal(err)
	}
	return out
}

// tenant creates Tenant name selecting the namespaces labelled with it, sharing the
// platform's macvlan and bridge networks.
func (x *escapeEnv) tenant(name string, spec map[string]any) {
	x.t.Helper()
	spec["namespaceSelector"] = map[string]any{"matchLabels": map[string]any{"loom-e2e/esc-tenant": name}}
	spec["sharedNetworks"] = []any{escNsPlat + "/shared-mv", escNsPlat + "/shared-br"}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "loom.dev/v1alpha1", "kind": "Tenant", "metadata": map[string]any{"name": name}, "spec": spec,
	}}
	if _, err := x.dyn.Resource(tenants.GVR).Create(x.ctx, obj, metav1.CreateOptions{}); err != nil {
		x.t.Fatalf("create Tenant %s: %v", name, err)
	}
	x.t.Cleanup(func() { x.dyn.Resource(tenants.GVR).Delete(context.Background(), name, metav1.DeleteOptions{}) })
}

// waitTenantNamespaces waits until loom-controller's status of each Tenant names its
// namespace: its caches, the webhook's too, know them.
func (x *escapeEnv) waitTenantNamespaces() {
	x.t.Helper()
	want := map[string]string{"a": escNsA, "b": escNsB}
	err := waitFor(20*time.Second, func() (bool, error) {
		for name, ns := range want {
			u, err := x.dyn.Resource(tenants.GVR).Get(x.ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			obj, err := tenants.FromUnstructured(u)
			if err != nil {
				return false, err
			}
			if !slices.Equal(obj.Status.Namespaces, []string{ns}) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		x.t.Fatalf("the Tenants' status does not show their namespaces: %v", err)
	}
}

func (x *escapeEnv) podNamed(name string) *escPod {
	for _, p := range x.pods {
		if p.name == name {
			return p
		}
	}
	x.t.Fatalf("no pod %s", name)
	return nil
}

// annotation is a pod's networks annotation: every network it is a member of, with the
// interface named by the network's key and the pod's addresses on it.
func (x *escapeEnv) annotation(p *escPod) string {
	var sel []map[string]any
	for _, n := range x.nets {
		ref, ok := n.refs[p.name]
		if !ok {
			continue
		}
		ns, name, _ := strings.Cut(ref, "/")
		sel = append(sel, map[string]any{"name": name, "namespace": ns, "interface": n.key,
			"ips": []string{fmt.Sprintf("192.168.%d.%d/24", n.n, p.k), fmt.Sprintf("fd00:%d::%d/64", n.n, p.k)}})
	}
	b, err := json.Marshal(sel)
	if err != nil {
		x.t.Fatal(err)
	}
	return string(b)
}

// vfLimits asks for one VF of the tenant's pool when the pod is on the VF network.
func (x *escapeEnv) vfLimits(p *escPod) map[string]int64 {
	for _, n := range x.nets {
		if _, ok := n.refs[p.name]; ok && n.key == "vf" {
			return map[string]int64{map[string]string{"a": sim.SRIOVPoolA, "b": sim.SRIOVPoolB}[p.tenant]: 1}
		}
	}
	return nil
}

// learn reads a pod's interfaces (waiting until duplicate address detection lets its IPv6
// addresses be used) and the node end of its primary veth.
func (x *escapeEnv) learn(p *escPod) {
	t := x.t
	e := x.envs[p.ns]
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if !strings.Contains(e.exec(p.name, "ip", "-6", "addr", "show", "tentative"), "inet6") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s: IPv6 addresses stay tentative", p.name)
		}
	}
	var links []struct {
		Ifname    string `json:"ifname"`
		Address   string `json:"address"`
		LinkIndex int    `json:"link_index"`
		AddrInfo  []struct {
			Family string `json:"family"`
			Local  string `json:"local"`
			Scope  string `json:"scope"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(e.exec(p.name, "ip", "-j", "addr")), &links); err != nil {
		t.Fatal(err)
	}
	p.ifs = map[string]*podIf{}
	peer := 0
	for _, l := range links {
		pi := &podIf{name: l.Ifname, mac: l.Address}
		for _, a := range l.AddrInfo {
			switch {
			case a.Family == "inet":
				pi.v4 = a.Local
			case a.Scope == "link":
				pi.ll = a.Local
			default:
				pi.v6 = a.Local
			}
		}
		if l.Ifname == "eth0" {
			p.eth0, p.primary, peer = pi, pi.v4, l.LinkIndex
			continue
		}
		for _, n := range x.nets {
			if n.key == l.Ifname {
				p.ifs[n.key] = pi
				if want := fmt.Sprintf("192.168.%d.%d", n.n, p.k); pi.v4 != want || pi.ll == "" || pi.v6 == "" {
					t.Fatalf("pod %s: %s has %+v, want %s, an IPv6 address and a link-local one", p.name, n.key, pi, want)
				}
			}
		}
	}
	for _, n := range x.nets {
		if _, on := n.refs[p.name]; on && p.ifs[n.key] == nil {
			t.Fatalf("pod %s has no interface %s", p.name, n.key)
		}
	}
	if p.eth0 == nil || p.primary == "" || peer == 0 {
		t.Fatalf("pod %s: no primary interface with an address", p.name)
	}
	var hostLinks []struct {
		Ifindex int    `json:"ifindex"`
		Ifname  string `json:"ifname"`
		Address string `json:"address"`
	}
	if err := json.Unmarshal([]byte(x.nodeMust(p.node, "ip", "-j", "link")), &hostLinks); err != nil {
		t.Fatal(err)
	}
	for _, l := range hostLinks {
		if l.Ifindex == peer {
			p.hostVeth, p.hostVethMAC = l.Ifname, l.Address
		}
	}
	if p.hostVeth == "" {
		t.Fatalf("pod %s: no link %d in %s, the node end of its veth", p.name, peer, p.node)
	}
}

// record counts one escape attempt and whether it got through.
func (x *escapeEnv) record(what string, through bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.made++
	if through {
		x.through = append(x.through, what)
	}
}

// summary prints the suite's verdict and fails the test on any attempt that got through.
func (x *escapeEnv) summary() {
	x.mu.Lock()
	defer x.mu.Unlock()
	line := fmt.Sprintf("escape attempts: %d made, %d got through", x.made, len(x.through))
	fmt.Println(line)
	x.t.Log(line)
	if len(x.through) > 0 {
		slices.Sort(x.through)
		x.t.Errorf("%s:\n  %s", line, strings.Join(x.through, "\n  "))
	}
}

// allowedOn is the README's rule: one tenant's pods reach each other; the platform reaches
// everyone on the primary network and no one else on a secondary one.
func allowedOn(primary bool, from, to *escPod) bool {
	if from.tenant == to.tenant {
		return true
	}
	return primary && (from.tenant == "" || to.tenant == "")
}
