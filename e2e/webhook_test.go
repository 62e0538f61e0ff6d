package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/loom-cni/loom/e2e/sim"
	"github.com/loom-cni/loom/e2e/sim/simtest"
	"github.com/loom-cni/loom/tenants"
)

// TestWebhook has the real kube-apiserver call loom-controller's admission webhook: a pod,
// NAD or Tenant that breaks a tenant's rules is refused when it is created, a pod when its
// networks annotation is changed or an ephemeral container is added to it, with a message
// that names what was refused and why, and what is allowed is stored and runs. Tenant a owns
// wh-a (VLANs 100-199; master eth0, bridge br-wha, host ports 30000-30100; 3 VFs of
// loom.dev/sriov_net_a), tenant b owns wh-b (master eth0, bridge br-whb).
func TestWebhook(t *testing.T) {
	c := simtest.Start(t, func(o *sim.Options) { o.Nodes = 1 })
	w := &webhookEnv{c: c, ctx: context.Background(), t: t}
	w.dyn = w.must(dynamic.NewForConfig(c.RESTConfig()))
	w.waitRegistered()

	a, b := newEnv(t, c, "wh-a"), newEnv(t, c, "wh-b")
	w.tenantSpec("a", map[string]any{"vlans": []any{"100-199"},
		"nodeResources": map[string]any{"masters": []any{"eth0"}, "bridges": []any{"br-wha"}, "hostPorts": []any{"30000-30100"}},
		"sriov":         map[string]any{"pools": []any{"loom.dev/sriov_net_a"}, "vfQuota": int64(3)}})
	w.tenantSpec("b", map[string]any{"nodeResources": map[string]any{"masters": []any{"eth0"}, "bridges": []any{"br-whb"}}})
	w.label("wh-a", "a")
	w.label("wh-b", "b")
	// The controller's status shows what its caches, the webhook's too, know of the tenants.
	w.waitStatus("a", func(st tenants.Status) bool { return slices.Equal(st.Namespaces, []string{"wh-a"}) })
	w.waitStatus("b", func(st tenants.Status) bool { return slices.Equal(st.Namespaces, []string{"wh-b"}) })
	a.nad("net-a", macvlanHostLocal("eth0", "172.31.40.0/24"))
	b.nad("net-b", macvlanHostLocal("eth0", "172.31.41.0/24"))

	t.Run("PodOnAnotherTenantsNAD", func(t *testing.T) {
		_, err := c.Client().CoreV1().Pods("wh-a").Create(w.ctx, webhookPod("wh-a", "steal", "wh-b/net-b", false), metav1.CreateOptions{})
		refused(t, err, apierrors.IsForbidden, "pods.admission.loom.dev", "pod wh-a/steal", "wh-b/net-b", "belongs to namespace wh-b of tenant b")
	})
	t.Run("PodOnAnotherTenantsNADWithKubectl", func(t *testing.T) {
		if c.Options().Kubectl == "" {
			t.Skip("no kubectl: set LOOM_KUBECTL")
		}
		manifest := filepath.Join(t.TempDir(), "pod.yaml")
		yaml := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"steal2","namespace":"wh-a",
		  "annotations":{"k8s.v1.cni.cncf.io/networks":"wh-b/net-b"}},
		  "spec":{"containers":[{"name":"app","image":"registry.k8s.io/pause:3.10"}]}}`
		if err := os.WriteFile(manifest, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := c.Kubectl(w.ctx, "apply", "-f", manifest)
		if err == nil || !strings.Contains(string(out), "pod wh-a/steal2 may not use network wh-b/net-b") {
			t.Errorf("kubectl apply: %v: %s", err, out)
		}
	})
	t.Run("NADOutsideTheTenantsVLANs", func(t *testing.T) {
		_, err := a.nads.K8sCniCncfIoV1().NetworkAttachmentDefinitions("wh-a").Create(w.ctx, vlanNAD("wh-a", "vlan300", 300), metav1.CreateOptions{})
		refused(t, err, apierrors.IsForbidden, "networkattachmentdefinitions.admission.loom.dev", "network wh-a/vlan300", "VLAN 300", "100-199")
		if _, err := a.nads.K8sCniCncfIoV1().NetworkAttachmentDefinitions("wh-a").Create(w.ctx, vlanNAD("wh-a", "vlan150", 150), metav1.CreateOptions{}); err != nil {
			t.Errorf("a NAD on VLAN 150, within the tenant's range: %v", err)
		}
	})
	t.Run("TenantWithAVLANOutOfRange", func(t *testing.T) {
		err := w.createTenant("c", []string{"5000"})
		refused(t, err, apierrors.IsInvalid, "tenants.admission.loom.dev", "Tenant c is invalid", "spec.vlans[0]", "5000")
	})
	t.Run("PodWithNetAdmin", func(t *testing.T) {
		_, err := c.Client().CoreV1().Pods("wh-a").Create(w.ctx, webhookPod("wh-a", "admin", "", true), metav1.CreateOptions{})
		refused(t, err, apierrors.IsForbidden, "pod wh-a/admin", "NET_ADMIN", "tenant a")
	})
	t.Run("PodOnItsTenantsNAD", func(t *testing.T) {
		if _, err := c.Client().CoreV1().Pods("wh-a").Create(w.ctx, webhookPod("wh-a", "ok", "net-a", false), metav1.CreateOptions{}); err != nil {
			t.Fatalf("a pod on its own tenant's NAD was refused: %v", err)
		}
		a.running("ok")
		st := w.waitStatus("a", func(st tenants.Status) bool { return st.Pods == 1 && st.Addresses >= 2 })
		if c := meta.FindStatusCondition(st.Conditions, tenants.ConditionValid); c == nil || c.Status != metav1.ConditionTrue {
			t.Errorf("tenant a's Valid condition: %+v", c)
		}
		if c := meta.FindStatusCondition(st.Conditions, tenants.ConditionNamespacesConflict); c == nil || c.Status != metav1.ConditionFalse {
			t.Errorf("tenant a's NamespacesConflict condition: %+v", c)
		}
	})
	t.Run("PlatformPodsStayAllowed", func(t *testing.T) {
		plat := newEnv(t, c, "wh-plat")
		plat.pod(podSpec{name: "p", networks: "nosuch", unmanaged: true})
	})
	t.Run("ConflictReportedWithAnEvent", func(t *testing.T) {
		if err := w.createTenantSelecting("c", map[string]any{"team": "x"}); err != nil {
			t.Fatal(err)
		}
		newEnv(t, c, "wh-both")
		patch := `{"metadata":{"labels":{"tenant":"a","team":"x"}}}`
		if _, err := c.Client().CoreV1().Namespaces().Patch(w.ctx, "wh-both", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		st := w.waitStatus("c", func(st tenants.Status) bool {
			return meta.IsStatusConditionTrue(st.Conditions, tenants.ConditionNamespacesConflict)
		})
		if cond := meta.FindStatusCondition(st.Conditions, tenants.ConditionNamespacesConflict); !strings.Contains(cond.Message, "wh-both") {
			t.Errorf("condition %+v does not name the namespace", cond)
		}
		w.waitStatus("a", func(st tenants.Status) bool { return slices.Equal(st.Namespaces, []string{"wh-a"}) })
		w.waitEvent("c", tenants.ReasonSharedSelected)
	})
	t.Run("NADsThatActOnTheNode", func(t *testing.T) { w.testNodeResources(t, a) })
	t.Run("EphemeralContainerWithNetAdmin", func(t *testing.T) { w.testEphemeral(t, a) })
	t.Run("NetworksChangedToAnotherTenantsNAD", func(t *testing.T) { w.testNetworksChanged(t, a) })
	t.Run("VFQuotaAcrossPods", func(t *testing.T) { w.testVFQuota(t, a) })
	t.Run("ADDRefusesWhatTheTenantNoLongerGrants", func(t *testing.T) { w.testADDAfterGrantRevoked(t) })
	// Every resync (each 2 s here) compared the registration and left it alone.
	if cfg, err := c.Client().AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(w.ctx, "loom", metav1.GetOptions{}); err != nil || cfg.Generation != 1 {
		t.Errorf("the webhook registration was rewritten: generation %d, %v", cfg.Generation, err)
	}
}

type webhookEnv struct {
	t   *testing.T
	c   *sim.Cluster
	ctx context.Context
	dyn dynamic.Interface
}

func (w *webhookEnv) must(d *dynamic.DynamicClient, err error) *dynamic.DynamicClient {
	w.t.Helper()
	if err != nil {
		w.t.Fatal(err)
	}
	return d
}

// waitRegistered waits until loom-controller has registered its webhook.
func (w *webhookEnv) waitRegistered() {
	w.t.Helper()
	api := w.c.Client().AdmissionregistrationV1().ValidatingWebhookConfigurations()
	deadline := time.Now().Add(20 * time.Second)
	for {
		cfg, err := api.Get(w.ctx, "loom", metav1.GetOptions{})
		if err == nil && len(cfg.Webhooks) == 3 {
			return
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("loom-controller did not register its webhook within 20 s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (w *webhookEnv) createTenant(name string, vlans []string) error {
	spec := map[string]any{"namespaceSelector": map[string]any{"matchLabels": map[string]any{"tenant": name}}}
	if vlans != nil {
		spec["vlans"] = vlans
	}
	return w.createTenantSpec(name, spec)
}

func (w *webhookEnv) createTenantSelecting(name string, labels map[string]any) error {
	return w.createTenantSpec(name, map[string]any{"namespaceSelector": map[string]any{"matchLabels": labels}})
}

func (w *webhookEnv) createTenantSpec(name string, spec map[string]any) error {
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "loom.dev/v1alpha1", "kind": "Tenant", "metadata": map[string]any{"name": name}, "spec": spec,
	}}
	_, err := w.dyn.Resource(tenants.GVR).Create(w.ctx, obj, metav1.CreateOptions{})
	if err == nil {
		w.t.Cleanup(func() { w.dyn.Resource(tenants.GVR).Delete(context.Background(), name, metav1.DeleteOptions{}) })
	}
	return err
}

// waitEvent waits for a Warning Event with the given reason about Tenant name (a cluster
// scoped object: its events are in the default namespace).
func (w *webhookEnv) waitEvent(name, reason string) {
	w.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		evs, err := w.c.Client().CoreV1().Events(metav1.NamespaceDefault).List(w.ctx, metav1.ListOptions{})
		if err == nil {
			for _, e := range evs.Items {
				if e.InvolvedObject.Kind == "Tenant" && e.InvolvedObject.Name == name && e.Reason == reason && e.Type == corev1.EventTypeWarning {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("no Warning event %s about Tenant %s after 20 s (%v)", reason, name, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// tenantSpec creates Tenant name with spec, selecting the namespaces labelled tenant=<name>.
func (w *webhookEnv) tenantSpec(name string, spec map[string]any) {
	w.t.Helper()
	spec["namespaceSelector"] = map[string]any{"matchLabels": map[string]any{"tenant": name}}
	if err := w.createTenantSpec(name, spec); err != nil {
		w.t.Fatalf("create Tenant %s: %v", name, err)
	}
}

func (w *webhookEnv) tenant(name string, vlans []string) {
	w.t.Helper()
	if err := w.createTenant(name, vlans); err != nil {
		w.t.Fatalf("create Tenant %s: %v", name, err)
	}
}

// label puts a namespace into a tenant.
func (w *webhookEnv) label(ns, tenant string) {
	w.t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"labels":{"tenant":%q}}}`, tenant)
	if _, err := w.c.Client().CoreV1().Namespaces().Patch(w.ctx, ns, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		w.t.Fatal(err)
	}
}

// waitStatus waits until the status of Tenant name satisfies ok, and returns it.
func (w *webhookEnv) waitStatus(name string, ok func(tenants.Status) bool) tenants.Status {
	w.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var st tenants.Status
	for {
		u, err := w.dyn.Resource(tenants.GVR).Get(w.ctx, name, metav1.GetOptions{})
		if err == nil {
			obj, convErr := tenants.FromUnstructured(u)
			if convErr != nil {
				w.t.Fatal(convErr)
			}
			if st = obj.Status; ok(st) {
				return st
			}
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("status of Tenant %s: %+v (%v): not what the test waits for after 20 s", name, st, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func webhookPod(ns, name, networks string, netAdmin bool) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}},
	}
	if networks != "" {
		p.Annotations[nadv1.NetworkAttachmentAnnot] = networks
	}
	if netAdmin {
		p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{
			Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}}}
	}
	return p
}

// vlanNAD is a NAD whose configuration asks for a VLAN: enough for admission, which reads
// the configuration; never attached.
func vlanNAD(ns, name string, vlan int) *nadv1.NetworkAttachmentDefinition {
	return &nadv1.NetworkAttachmentDefinition{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: fmt.Sprintf(
			`{"cniVersion":"1.0.0","type":"macvlan","master":"eth0","vlan":%d,"ipam":{"type":"host-local","ranges":[[{"subnet":"172.31.42.0/24"}]]}}`, vlan)},
	}
}

// refused checks that the API server refused a create with the webhook's verdict: an error
// of the kind is says, whose message holds every one of says.
func refused(t *testing.T, err error, is func(error) bool, says ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("the API server accepted it, want it refused by the webhook")
	}
	if !is(err) {
		t.Errorf("error %v (reason %s), not of the kind expected", err, apierrors.ReasonForError(err))
	}
	for _, s := range says {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not say %q", err, s)
		}
	}
}

// testNodeResources: a tenant's NAD that would move, bridge or take over what the node has,
// map one of its ports, or run a program by path is refused at creation, naming the NAD, the
// field and the Tenant field that would allow it; what the Tenant grants is stored.
func (w *webhookEnv) testNodeResources(t *testing.T, a *env) {
	nads := a.nads.K8sCniCncfIoV1().NetworkAttachmentDefinitions("wh-a")
	for _, tc := range []struct {
		name, config string
		says         []string
	}{
		{"hostdev", `{"cniVersion":"1.0.0","type":"host-device","device":"eth0"}`,
			[]string{"network wh-a/hostdev", `"device"`, `"eth0"`, "spec.nodeResources.hostDevices"}},
		{"mv-eth1", `{"cniVersion":"1.0.0","type":"macvlan","master":"eth1","ipam":{"type":"static"}}`,
			[]string{"network wh-a/mv-eth1", `"master"`, `"eth1"`, "spec.nodeResources.masters"}},
		{"vxlan-port", `{"cniVersion":"1.0.0","name":"p","plugins":[{"type":"macvlan","master":"eth0"},
		  {"type":"portmap","runtimeConfig":{"portMappings":[{"hostPort":4789,"containerPort":4789,"protocol":"udp"}]}}]}`,
			[]string{"network wh-a/vxlan-port", "plugins[1].runtimeConfig.portMappings[0].hostPort", "4789/udp", "VXLAN"}},
		{"br-of-b", `{"cniVersion":"1.0.0","type":"bridge","bridge":"br-whb"}`,
			[]string{"network wh-a/br-of-b", `"bridge"`, `"br-whb"`, "spec.nodeResources.bridges"}},
		{"by-path", `{"cniVersion":"1.0.0","type":"../x"}`,
			[]string{"network wh-a/by-path", `"type"`, "../x", "not a plain plugin name"}},
	} {
		nad := &nadv1.NetworkAttachmentDefinition{ObjectMeta: metav1.ObjectMeta{Namespace: "wh-a", Name: tc.name},
			Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: tc.config}}
		_, err := nads.Create(w.ctx, nad, metav1.CreateOptions{})
		refused(t, err, apierrors.IsForbidden, append([]string{"networkattachmentdefinitions.admission.loom.dev"}, tc.says...)...)
	}
	for name, config := range map[string]string{
		"br-own":    bridgeHostLocal("br-wha", "172.31.43.0/24"),
		"port-ok":   `{"cniVersion":"1.0.0","name":"p","plugins":[{"type":"macvlan","master":"eth0"},{"type":"portmap","runtimeConfig":{"portMappings":[{"hostPort":30005,"containerPort":80}]}}]}`,
		"in-pod-mv": `{"cniVersion":"1.0.0","type":"macvlan","master":"net1","linkInContainer":true}`,
	} {
		nad := &nadv1.NetworkAttachmentDefinition{ObjectMeta: metav1.ObjectMeta{Namespace: "wh-a", Name: name},
			Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: config}}
		if _, err := nads.Create(w.ctx, nad, metav1.CreateOptions{}); err != nil {
			t.Errorf("NAD %s, which the tenant is granted, was refused: %v", name, err)
		}
	}
}

// pendingPod creates a pod that no node takes (its node selector matches none), so that the
// test decides when, if ever, it runs.
func (w *webhookEnv) pendingPod(e *env, name string, edit func(*corev1.Pod)) (*corev1.Pod, error) {
	p := webhookPod(e.ns, name, "", false)
	p.Spec.NodeSelector = map[string]string{"loom.dev/e2e": "nowhere"}
	if edit != nil {
		edit(p)
	}
	return w.c.Client().CoreV1().Pods(e.ns).Create(w.ctx, p, metav1.CreateOptions{})
}

// testEphemeral: kubectl debug adds an ephemeral container through the pods/ephemeralcontainers
// subresource; one with NET_ADMIN (or privileged) in a pod of a tenant that does not allow it
// is refused, a plain one is added.
func (w *webhookEnv) testEphemeral(t *testing.T, a *env) {
	p, err := w.pendingPod(a, "debugged", nil)
	if err != nil {
		t.Fatal(err)
	}
	debug := func(name string, sc *corev1.SecurityContext) error {
		cur, getErr := w.c.Client().CoreV1().Pods("wh-a").Get(w.ctx, p.Name, metav1.GetOptions{})
		if getErr != nil {
			t.Fatal(getErr)
		}
		cur.Spec.EphemeralContainers = append(cur.Spec.EphemeralContainers, corev1.EphemeralContainer{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
			Name: name, Image: "registry.k8s.io/pause:3.10", SecurityContext: sc, TerminationMessagePolicy: corev1.TerminationMessageReadFile,
			ImagePullPolicy: corev1.PullIfNotPresent}})
		_, updErr := w.c.Client().CoreV1().Pods("wh-a").UpdateEphemeralContainers(w.ctx, p.Name, cur, metav1.UpdateOptions{})
		return updErr
	}
	err = debug("netadmin", &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN", "NET_RAW"}}})
	refused(t, err, apierrors.IsForbidden, "pods.admission.loom.dev", "pod wh-a/debugged", "ephemeral container netadmin adds NET_ADMIN", "spec.allowNetAdmin of tenant a")
	priv := true
	err = debug("privileged", &corev1.SecurityContext{Privileged: &priv})
	refused(t, err, apierrors.IsForbidden, "ephemeral container privileged is privileged")
	if err := debug("plain", nil); err != nil {
		t.Errorf("a plain ephemeral container was refused: %v", err)
	}
}

// testNetworksChanged: a pod's networks annotation changed to another tenant's NAD is
// refused; an update that leaves the networks alone is not even sent to the webhook.
func (w *webhookEnv) testNetworksChanged(t *testing.T, a *env) {
	p, err := w.pendingPod(a, "mover", func(p *corev1.Pod) { p.Annotations[nadv1.NetworkAttachmentAnnot] = "net-a" })
	if err != nil {
		t.Fatal(err)
	}
	pods := w.c.Client().CoreV1().Pods("wh-a")
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"net-a, wh-b/net-b"}}}`, nadv1.NetworkAttachmentAnnot)
	_, err = pods.Patch(w.ctx, p.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	refused(t, err, apierrors.IsForbidden, "pods.admission.loom.dev", "pod wh-a/mover may not use network wh-b/net-b", "tenant b")
	patch = fmt.Sprintf(`{"metadata":{"annotations":{%q:"wh-a/net-a"}}}`, nadv1.NetworkAttachmentAnnot)
	if _, err = pods.Patch(w.ctx, p.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Errorf("networks changed to the tenant's own NAD: %v", err)
	}
	if _, err = pods.Patch(w.ctx, p.Name, types.MergePatchType, []byte(`{"metadata":{"labels":{"moved":"no"}}}`), metav1.PatchOptions{}); err != nil {
		t.Errorf("a label change was refused: %v", err)
	}
	got, err := pods.Get(w.ctx, p.Name, metav1.GetOptions{})
	if err != nil || got.Annotations[nadv1.NetworkAttachmentAnnot] != "wh-a/net-a" {
		t.Errorf("pod's networks %q (%v), want the allowed change stored", got.Annotations[nadv1.NetworkAttachmentAnnot], err)
	}
}

// testVFQuota: tenant a's quota of 3 VFs holds across its pods, counting VFs a container asks
// for without any NAD: 2, then 2 more, is refused.
func (w *webhookEnv) testVFQuota(t *testing.T, a *env) {
	vfs := func(n int64) func(*corev1.Pod) {
		return func(p *corev1.Pod) {
			q := *resource.NewQuantity(n, resource.DecimalSI)
			p.Spec.Containers[0].Resources = corev1.ResourceRequirements{
				Limits: corev1.ResourceList{"loom.dev/sriov_net_a": q}, Requests: corev1.ResourceList{"loom.dev/sriov_net_a": q}}
		}
	}
	if _, err := w.pendingPod(a, "vf-one", vfs(2)); err != nil {
		t.Fatalf("the tenant's first 2 VFs were refused: %v", err)
	}
	// The webhook counts from its pod cache: give it the moment a watch takes.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := w.pendingPod(a, "vf-two", vfs(2))
		if err != nil {
			refused(t, err, apierrors.IsForbidden, "pod wh-a/vf-two", "2 SR-IOV VFs and the tenant's other pods hold 2: 4", "quota of 3", "spec.sriov.vfQuota")
			break
		}
		if err := w.c.Client().CoreV1().Pods("wh-a").Delete(w.ctx, "vf-two", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("a second pod taking the tenant over its VF quota was admitted")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := w.pendingPod(a, "vf-three", vfs(1)); err != nil {
		t.Errorf("a pod within what the quota leaves was refused: %v", err)
	}
}

// testADDAfterGrantRevoked: loomd refuses at ADD a NAD the webhook never saw as it is now. Tenant
// late is granted master eth0, its macvlan NAD and a pod on it are admitted; then the grant
// is taken back, and the pod, bound to a node only now, fails its ADD with the Denial and
// leaves nothing behind.
func (w *webhookEnv) testADDAfterGrantRevoked(t *testing.T) {
	late := newEnv(t, w.c, "wh-late")
	w.tenantSpec("late", map[string]any{"nodeResources": map[string]any{"masters": []any{"eth0"}}})
	w.label("wh-late", "late")
	w.waitStatus("late", func(st tenants.Status) bool { return slices.Equal(st.Namespaces, []string{"wh-late"}) })
	late.nad("mv", macvlanHostLocal("eth0", "172.31.44.0/24"))
	if _, err := w.pendingPod(late, "late", func(p *corev1.Pod) { p.Annotations[nadv1.NetworkAttachmentAnnot] = "mv" }); err != nil {
		t.Fatalf("a pod on the NAD its tenant was granted: %v", err)
	}
	u, err := w.dyn.Resource(tenants.GVR).Get(w.ctx, "late", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err = unstructured.SetNestedStringSlice(u.Object, nil, "spec", "nodeResources", "masters"); err != nil {
		t.Fatal(err)
	}
	if _, err = w.dyn.Resource(tenants.GVR).Update(w.ctx, u, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("take the grant back: %v", err)
	}
	time.Sleep(2 * time.Second)   // loomd's Tenant cache follows a watch
	before, err := leftovers(w.c) // what the other subtests' pods hold
	if err != nil {
		t.Fatal(err)
	}
	binding := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Namespace: "wh-late", Name: "late"},
		Target: corev1.ObjectReference{Kind: "Node", Name: w.c.Nodes()[0].Name}}
	if err := w.c.Client().CoreV1().Pods("wh-late").Bind(w.ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	msg := podMessage(late.failed("late"))
	for _, want := range []string{"wh-late/late", "wh-late/mv", `"master"`, `"eth0"`, "spec.nodeResources.masters of tenant late"} {
		if !strings.Contains(msg, want) {
			t.Errorf("failure message %q does not mention %q", msg, want)
		}
	}
	late.deletePod("late")
	// Nothing is left of the refused ADD: the nodes hold what they held before it.
	deadline := time.Now().Add(15 * time.Second)
	for {
		after, err := leftovers(w.c)
		if err != nil {
			t.Fatal(err)
		}
		extra := slices.DeleteFunc(after, func(s string) bool { return slices.Contains(before, s) })
		if len(extra) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the refused ADD left behind:\n  %s", strings.Join(extra, "\n  "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}
