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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/loom-cni/loom/e2e/sim"
	"github.com/loom-cni/loom/e2e/sim/simtest"
	"github.com/loom-cni/loom/tenants"
)

// TestWebhook has the real kube-apiserver call loom-controller's admission webhook: a pod,
// NAD or Tenant that breaks a tenant's rules is refused when it is created, with a message
// that names what was refused and why, and what is allowed is stored and runs. Tenant a owns
// wh-a (VLANs 100-199), tenant b owns wh-b.
func TestWebhook(t *testing.T) {
	c := simtest.Start(t, func(o *sim.Options) { o.Nodes = 1 })
	w := &webhookEnv{c: c, ctx: context.Background(), t: t}
	w.dyn = w.must(dynamic.NewForConfig(c.RESTConfig()))
	w.waitRegistered()

	a, b := newEnv(t, c, "wh-a"), newEnv(t, c, "wh-b")
	w.tenant("a", []string{"100-199"})
	w.tenant("b", nil)
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
