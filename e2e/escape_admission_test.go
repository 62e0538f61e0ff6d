package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"github.com/loom-cni/loom/e2e/sim"
	"github.com/loom-cni/loom/tenants"
)

// The escape suite's attempts through the API: NADs that act on the node, addresses another
// pod holds, privileges and networks added to a running pod, VFs over the quota. An attempt
// got through when the API server stored it and, for a pod, when it runs.

// admit reports whether a NAD was stored, and removes it.
func (x *escapeEnv) admitNAD(ns, name, config string) bool {
	nads := x.envs[escNsA].nads.K8sCniCncfIoV1().NetworkAttachmentDefinitions(ns)
	nad := &nadv1.NetworkAttachmentDefinition{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: config}}
	if _, err := nads.Create(x.ctx, nad, metav1.CreateOptions{}); err != nil {
		x.t.Logf("NAD %s/%s refused: %v", ns, name, err)
		return false
	}
	nads.Delete(x.ctx, name, metav1.DeleteOptions{})
	return true
}

// podRuns creates a pod and reports whether it came to run; a pod the API server refused
// or whose ADD failed did not. The pod is deleted either way.
func (x *escapeEnv) podRuns(p *corev1.Pod) bool {
	pods := x.c.Client().CoreV1().Pods(p.Namespace)
	if _, err := pods.Create(x.ctx, p, metav1.CreateOptions{}); err != nil {
		x.t.Logf("pod %s/%s refused: %v", p.Namespace, p.Name, err)
		return false
	}
	defer func() {
		pods.Delete(context.Background(), p.Name, metav1.DeleteOptions{})
		x.c.WaitPodGone(context.Background(), p.Namespace, p.Name)
	}()
	got, err := x.c.WaitPod(x.ctx, p.Namespace, p.Name, 60*time.Second, func(p *corev1.Pod) (bool, error) {
		return p.Status.Phase == corev1.PodRunning || p.Status.Phase == corev1.PodFailed, nil
	})
	if err != nil {
		x.t.Errorf("pod %s/%s neither ran nor failed: %v", p.Namespace, p.Name, err)
		return false
	}
	x.t.Logf("pod %s/%s: %s", p.Namespace, p.Name, podMessage(got))
	return got.Status.Phase == corev1.PodRunning
}

func escPodObject(ns, name, node, networks string) *corev1.Pod {
	p := webhookPod(ns, name, networks, false)
	p.Spec.NodeName = node
	return p
}

// check counts an attempt, or fails the test when a control did not pass.
func (x *escapeEnv) check(t *testing.T, control bool, what string, through bool) {
	t.Helper()
	if control {
		if !through {
			t.Errorf("control %s: refused, so the attempts it stands for prove nothing", what)
		}
		return
	}
	if through {
		t.Errorf("ESCAPE: %s got through", what)
	}
	x.record(t.Name()+": "+what, through)
}

// testNodeResourceNADs: a tenant's NAD asking for what the platform did not grant it is
// refused; one asking for what it was granted is stored, and the platform attaches a host
// device (p1's "hd").
func (x *escapeEnv) testNodeResourceNADs(t *testing.T) {
	x.check(t, true, "tenant a's bridge NAD on its granted bridge escbra", x.admitNAD(escNsA, "own-br", bridgeHostLocal("escbra", "172.31.60.0/24")))
	x.check(t, true, "platform's host-device p1 hd", x.podNamed("p1").ifs["hd"] != nil)
	for _, tc := range []struct{ ns, name, what, config string }{
		{escNsA, "hd-eth0", "host-device moving the node's eth0", `{"cniVersion":"1.0.0","type":"host-device","device":"eth0"}`},
		{escNsB, "hd-of-a", "host-device moving tenant a's device eschda1", `{"cniVersion":"1.0.0","type":"host-device","device":"eschda1"}`},
		{escNsA, "mv-pf", "macvlan on the ungranted master ens1f0", macvlanHostLocal(sim.SimPF, "172.31.61.0/24")},
		{escNsA, "vxlan-port", "portmap of host port 4789/udp (VXLAN)", `{"cniVersion":"1.0.0","name":"p","plugins":[{"type":"macvlan","master":"eth0"},
		  {"type":"portmap","runtimeConfig":{"portMappings":[{"hostPort":4789,"containerPort":4789,"protocol":"udp"}]}}]}`},
		{escNsB, "br-of-a", "bridge NAD joining tenant a's bridge escbra", bridgeHostLocal("escbra", "172.31.62.0/24")},
		{escNsB, "br-plat", "bridge NAD joining the platform's bridge escbr", bridgeHostLocal("escbr", "172.31.63.0/24")},
		{escNsA, "br-vxlan", "bridge NAD enslaving loom.vxlan", bridgeHostLocal("loom.vxlan", "172.31.64.0/24")},
		{escNsA, "by-path", "a plugin type that is a path", `{"cniVersion":"1.0.0","type":"../../../usr/bin/true"}`},
	} {
		x.check(t, false, fmt.Sprintf("NAD %s/%s: %s", tc.ns, tc.name, tc.what), x.admitNAD(tc.ns, tc.name, tc.config))
	}

	// A NAD the platform made in a namespace that joins tenant a later: its pod must not get
	// the node's device (one made for this, not eth0, so a leak cannot take node2 down).
	x.nodeMust("node2", "ip", "link", "add", "eschdx", "type", "veth", "peer", "name", "eschdxs")
	t.Cleanup(func() { x.c.NodeExec(context.Background(), "node2", "ip", "link", "del", "eschdxs") })
	late := newEnv(t, x.c, "esc-late")
	late.nad("hd", `{"cniVersion":"1.0.0","type":"host-device","device":"eschdx"}`)
	patch := `{"metadata":{"labels":{"loom-e2e/esc-tenant":"a"}}}`
	if _, err := x.c.Client().CoreV1().Namespaces().Patch(x.ctx, "esc-late", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	x.waitTenantHas("a", "esc-late")
	x.check(t, false, "pod of tenant a on a host-device NAD made before its namespace joined the tenant",
		x.podRuns(escPodObject("esc-late", "late", "node2", "hd")))
	if out, err := x.c.NodeExec(x.ctx, "node2", "ip", "link", "show", "eschdx"); err != nil {
		t.Errorf("node2's eschdx is gone from the node: %v: %s", err, out)
	}
}

// waitTenantHas waits until Tenant name's status lists namespace ns.
func (x *escapeEnv) waitTenantHas(name, ns string) {
	x.t.Helper()
	err := waitFor(20*time.Second, func() (bool, error) {
		u, err := x.dyn.Resource(tenants.GVR).Get(x.ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		nss, _, _ := unstructured.NestedStringSlice(u.Object, "status", "namespaces")
		for _, n := range nss {
			if n == ns {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		x.t.Fatalf("Tenant %s does not list namespace %s: %v", name, ns, err)
	}
}

// testClaimedAddresses: a pod asking for an address or MAC a pod of the other tenant has on
// the same link layer is refused; one asking for a free one runs.
func (x *escapeEnv) testClaimedAddresses(t *testing.T) {
	b1 := x.podNamed("b1")
	lan, smv := b1.ifs["lan"], b1.ifs["smv"]
	ask := func(name, network, ips, extra string) *corev1.Pod {
		ns, n := escNsA, network
		if network == "smv" {
			ns, n = escNsPlat, "shared-mv"
		}
		return escPodObject(escNsA, name, "node1", fmt.Sprintf(`[{"name":%q,"namespace":%q,"ips":[%s]%s}]`, n, ns, ips, extra))
	}
	x.check(t, true, "a pod of tenant a asking for free addresses on its lan", x.podRuns(ask("claim-free", "lan", `"192.168.72.50/24","fd00:72::50/64"`, "")))
	for _, tc := range []struct {
		name, what string
		pod        *corev1.Pod
	}{
		{"claim-v4", "b1's IPv4 address on tenant b's lan (same master)", ask("claim-v4", "lan", fmt.Sprintf("%q", lan.v4+"/24"), "")},
		{"claim-v6", "b1's IPv6 address on tenant b's lan (same master)", ask("claim-v6", "lan", fmt.Sprintf("%q", lan.v6+"/64"), "")},
		{"claim-mac", "b1's MAC on tenant b's lan (same master)", ask("claim-mac", "lan", `"192.168.72.51/24"`, fmt.Sprintf(`,"mac":%q`, lan.mac))},
		{"claim-shared", "b1's IPv4 address on the shared macvlan network", ask("claim-shared", "smv", fmt.Sprintf("%q", smv.v4+"/24"), "")},
	} {
		x.check(t, false, "pod esc-a/"+tc.name+" asking for "+tc.what, x.podRuns(tc.pod))
	}
}

// testRunningPodChanges: NET_ADMIN or privileges added to a running tenant pod, its networks
// changed to another tenant's NAD, a new pod with NET_ADMIN, and the platform or kube-system
// asking for a tenant's NAD are all refused; a plain ephemeral container and a label change
// are not.
func (x *escapeEnv) testRunningPodChanges(t *testing.T) {
	pods := x.c.Client().CoreV1().Pods(escNsA)
	debug := func(name string, sc *corev1.SecurityContext) bool {
		cur, err := pods.Get(x.ctx, "a1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Spec.EphemeralContainers = append(cur.Spec.EphemeralContainers, corev1.EphemeralContainer{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
			Name: name, Image: "registry.k8s.io/pause:3.10", SecurityContext: sc, TerminationMessagePolicy: corev1.TerminationMessageReadFile,
			ImagePullPolicy: corev1.PullIfNotPresent}})
		_, err = pods.UpdateEphemeralContainers(x.ctx, "a1", cur, metav1.UpdateOptions{})
		if err != nil {
			t.Logf("ephemeral container %s refused: %v", name, err)
		}
		return err == nil
	}
	priv := true
	x.check(t, false, "ephemeral container with NET_ADMIN and NET_RAW added to running pod a1",
		debug("netadmin", &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN", "NET_RAW"}}}))
	x.check(t, false, "privileged ephemeral container added to running pod a1", debug("privileged", &corev1.SecurityContext{Privileged: &priv}))
	x.check(t, true, "plain ephemeral container added to running pod a1", debug("plain", nil))

	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"lan, esc-b/lan"}}}`, nadv1.NetworkAttachmentAnnot)
	_, err := pods.Patch(x.ctx, "a1", types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	x.check(t, false, "running pod a1's networks annotation changed to add tenant b's lan", err == nil)
	_, err = pods.Patch(x.ctx, "a1", types.MergePatchType, []byte(`{"metadata":{"labels":{"touched":"yes"}}}`), metav1.PatchOptions{})
	x.check(t, true, "a label added to running pod a1", err == nil)

	admin := webhookPod(escNsA, "netadmin", "", true)
	admin.Spec.NodeName = "node1"
	x.check(t, false, "new pod of tenant a with NET_ADMIN", x.podRuns(admin))
	x.check(t, false, "platform pod asking for tenant a's lan", x.podRuns(escPodObject(escNsPlat, "plat-on-a", "node1", escNsA+"/lan")))
	x.check(t, false, "kube-system pod (no webhook) asking for tenant a's lan", x.podRuns(escPodObject("kube-system", "esc-sys-on-a", "node1", escNsA+"/lan")))
	x.check(t, false, "pod of tenant b asking for tenant a's lan", x.podRuns(escPodObject(escNsB, "b-on-a", "node1", escNsA+"/lan")))
}

// testVFQuota: tenant a holds its quota of 3 VFs (a1, a2, a3): a fourth, with a NAD or
// without, and a VF of tenant b's pool are refused.
func (x *escapeEnv) testVFQuota(t *testing.T) {
	vfPod := func(name, pool, networks string) *corev1.Pod {
		p := escPodObject(escNsA, name, "node2", networks)
		q := *resource.NewQuantity(1, resource.DecimalSI)
		p.Spec.Containers[0].Resources = corev1.ResourceRequirements{
			Limits: corev1.ResourceList{corev1.ResourceName(pool): q}, Requests: corev1.ResourceList{corev1.ResourceName(pool): q}}
		return p
	}
	x.check(t, false, "a fourth VF for tenant a (quota 3) with its VF NAD",
		x.podRuns(vfPod("vf-four", sim.SRIOVPoolA, `[{"name":"vf","ips":["192.168.74.19/24"]}]`)))
	x.check(t, false, "a fourth VF for tenant a (quota 3) without a NAD", x.podRuns(vfPod("vf-bare", sim.SRIOVPoolA, "")))
	x.check(t, false, "a VF of tenant b's pool for a pod of tenant a", x.podRuns(vfPod("vf-of-b", sim.SRIOVPoolB, "")))
}
