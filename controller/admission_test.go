package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	nadlisters "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/listers/k8s.cni.cncf.io/v1"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/loom-cni/loom/delegate/npwg"
	"github.com/loom-cni/loom/metrics"
	"github.com/loom-cni/loom/tenants"
)

// fixedDirectory serves one directory, and refuses namespaces it does not know as the
// caches do once their wait is over.
type fixedDirectory struct{ d *tenants.Directory }

func (f fixedDirectory) directoryFor(_ context.Context, ns string) (*tenants.Directory, error) {
	if !f.d.Known(ns) {
		return nil, fmt.Errorf("namespace %s is not in the webhook's cache yet", ns)
	}
	return f.d, nil
}

func intPtr(v int) *int { return &v }

// tenantObject is a Tenant selecting the namespaces labelled tenant=<name>.
func tenantObject(name string, spec tenants.Spec) *tenants.Object {
	if spec.NamespaceSelector == nil {
		spec.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"tenant": name}}
	}
	return &tenants.Object{ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 1}, Spec: spec}
}

// fixtureTenants: a owns ta (VLANs 100-199, pool loom.dev/sriov_a with a quota of 3 VFs,
// master eth0, bridge br-a, host device ens2f1, host ports 30000-30100), b owns tb (bridge
// br-b); kube-system and plain are the platform's.
func fixtureTenants() []*tenants.Object {
	return []*tenants.Object{
		tenantObject("a", tenants.Spec{VLANs: []string{"100-199"},
			SRIOV: &tenants.SRIOVSpec{Pools: []string{"loom.dev/sriov_a"}, VFQuota: intPtr(3)},
			NodeResources: &tenants.NodeResourcesSpec{Masters: []string{"eth0"}, Bridges: []string{"br-a"},
				HostDevices: []string{"ens2f1"}, HostPorts: []string{"30000-30100"}}}),
		tenantObject("b", tenants.Spec{NodeResources: &tenants.NodeResourcesSpec{Bridges: []string{"br-b"}}}),
	}
}

var fixtureNamespaces = map[string]map[string]string{
	"ta": {"tenant": "a"}, "tb": {"tenant": "b"}, "kube-system": nil, "plain": nil,
}

func directoryOf(t *testing.T, objs []*tenants.Object, namespaces map[string]map[string]string) *tenants.Directory {
	t.Helper()
	var ts []tenants.Tenant
	for _, o := range objs {
		tn, problems := tenants.Parse(o)
		if len(problems) > 0 {
			t.Fatalf("fixture tenant %s: %v", o.Name, problems)
		}
		ts = append(ts, tn)
	}
	return tenants.NewDirectory(ts, namespaces)
}

func nad(ns, name, config string, annotations map[string]string) *nadv1.NetworkAttachmentDefinition {
	return &nadv1.NetworkAttachmentDefinition{
		TypeMeta:   metav1.TypeMeta{APIVersion: "k8s.cni.cncf.io/v1", Kind: "NetworkAttachmentDefinition"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: annotations},
		Spec:       nadv1.NetworkAttachmentDefinitionSpec{Config: config},
	}
}

func macvlanVLAN(vlan int) string {
	return fmt.Sprintf(`{"cniVersion":"1.0.0","type":"macvlan","master":"eth0","vlan":%d,"ipam":{}}`, vlan)
}

func nadLister(t *testing.T, nads ...*nadv1.NetworkAttachmentDefinition) nadlisters.NetworkAttachmentDefinitionLister {
	t.Helper()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, n := range nads {
		if err := idx.Add(n); err != nil {
			t.Fatal(err)
		}
	}
	return nadlisters.NewNetworkAttachmentDefinitionLister(idx)
}

// fixturePods are the pods the caches hold: ta/holder holds one VF of loom.dev/sriov_a,
// ta/done held two and has finished; tb/big holds five of its own.
func fixturePods() []*corev1.Pod {
	done := pod("ta", "done", vfs(2))
	done.Status.Phase = corev1.PodSucceeded
	big := pod("tb", "big", vfs(5))
	return []*corev1.Pod{pod("ta", "holder", vfs(1)), done, big}
}

// fixtureAdmission decides with fixtureTenants, fixturePods and these NADs: ta/net-a (VLAN
// 150), ta/sriov-a (pool loom.dev/sriov_a), tb/net-b, tb/sriov-b (pool loom.dev/sriov_b),
// plain/shared and kube-system/alt.
func fixtureAdmission(t *testing.T) *admission {
	pods := fixturePods()
	return &admission{
		pods: func(ns string) []*corev1.Pod {
			var out []*corev1.Pod
			for _, p := range pods {
				if p.Namespace == ns {
					slim, _ := slimPod(p)
					out = append(out, slim.(*corev1.Pod))
				}
			}
			return out
		},
		nadPools: func() []string { return []string{"loom.dev/sriov_a", "loom.dev/sriov_b"} },
		dirs:     fixedDirectory{directoryOf(t, fixtureTenants(), fixtureNamespaces)},
		nads: nadLister(t,
			nad("ta", "net-a", macvlanVLAN(150), nil),
			nad("ta", "sriov-a", `{"cniVersion":"1.0.0","type":"sriov"}`, map[string]string{tenants.ResourceNameAnnotation: "loom.dev/sriov_a"}),
			nad("tb", "net-b", `{"cniVersion":"1.0.0","type":"bridge","bridge":"br-b"}`, nil),
			nad("plain", "shared", `{"cniVersion":"1.0.0","type":"bridge"}`, nil),
			nad("kube-system", "alt", `{"cniVersion":"1.0.0","type":"bridge"}`, nil),
		),
		log: slog.New(slog.DiscardHandler),
	}
}

type podOpt func(*corev1.Pod)

func networks(v string) podOpt {
	return func(p *corev1.Pod) { p.Annotations[nadv1.NetworkAttachmentAnnot] = v }
}

func annotation(k, v string) podOpt { return func(p *corev1.Pod) { p.Annotations[k] = v } }

func netAdmin(p *corev1.Pod) {
	p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{
		Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}}}
}

func hostPort(port int32, proto corev1.Protocol) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 80, HostPort: port, Protocol: proto}}
	}
}

// debugged adds an ephemeral container to a pod, as kubectl debug does, with capabilities.
func debugged(caps ...corev1.Capability) podOpt {
	return func(p *corev1.Pod) {
		c := corev1.EphemeralContainer{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger", Image: "busybox"}}
		if len(caps) > 0 {
			c.SecurityContext = &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: caps}}
		}
		p.Spec.EphemeralContainers = append(p.Spec.EphemeralContainers, c)
	}
}

func vfs(n int64) podOpt {
	return func(p *corev1.Pod) {
		q := *resource.NewQuantity(n, resource.DecimalSI)
		p.Spec.Containers[0].Resources.Limits = corev1.ResourceList{"loom.dev/sriov_a": q}
	}
}

func pod(ns, name string, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

var (
	podKind    = metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}
	nadKind    = metav1.GroupVersionKind{Group: "k8s.cni.cncf.io", Version: "v1", Kind: "NetworkAttachmentDefinition"}
	tenantKind = metav1.GroupVersionKind{Group: "loom.dev", Version: "v1alpha1", Kind: "Tenant"}
)

// reviewOf is the AdmissionReview the API server sends about obj.
func reviewOf(t *testing.T, kind metav1.GroupVersionKind, op admissionv1.Operation, ns string, obj any) []byte {
	t.Helper()
	return updateReviewOf(t, kind, op, "", ns, nil, obj)
}

// updateReviewOf is the AdmissionReview the API server sends about obj, of subresource sub,
// replacing old (nil: none).
func updateReviewOf(t *testing.T, kind metav1.GroupVersionKind, op admissionv1.Operation, sub, ns string, old, obj any) []byte {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	var oldRaw []byte
	if old != nil {
		if oldRaw, err = json.Marshal(old); err != nil {
			t.Fatal(err)
		}
	}
	b, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: types.UID("req-" + t.Name()), Kind: kind, Operation: op, Namespace: ns, SubResource: sub,
			Object: runtime.RawExtension{Raw: raw}, OldObject: runtime.RawExtension{Raw: oldRaw},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// post sends a review to the webhook's handler as the API server does and returns the
// response it got back.
func post(t *testing.T, h http.Handler, path string, body []byte) *admissionv1.AdmissionResponse {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("POST %s: HTTP %d: %s", path, rec.Code, rec.Body)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("response is not an AdmissionReview: %v: %s", err, rec.Body)
	}
	if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" || out.Response == nil {
		t.Fatalf("response %s is not an admission.k8s.io/v1 AdmissionReview with a response", rec.Body)
	}
	if want := types.UID("req-" + t.Name()); out.Response.UID != want {
		t.Errorf("response UID %q, want the request's %q", out.Response.UID, want)
	}
	return out.Response
}

// verdict is what a test expects of a response: allowed, or the code and the words its
// message must hold.
type verdict struct {
	code int32 // 0: allowed
	says []string
}

// decision is how the webhook's metrics count the verdict.
func (v verdict) decision() string {
	switch v.code {
	case 0:
		return metrics.DecisionAllowed
	case http.StatusServiceUnavailable:
		return metrics.DecisionError
	}
	return metrics.DecisionDenied
}

// decisionCounter gives a webhook handler its metrics and reads back what they counted.
type decisionCounter struct {
	reg *prometheus.Registry
	m   *metrics.Controller
}

func newDecisionCounter() decisionCounter {
	reg := prometheus.NewRegistry()
	return decisionCounter{reg: reg, m: metrics.NewController(reg)}
}

// check fails the test unless the decisions counted are want, by "kind/decision", and a
// duration was observed for each.
func (d decisionCounter) check(t *testing.T, want map[string]int) {
	t.Helper()
	mfs, err := d.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got, observed := map[string]int{}, 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "loom_webhook_decisions_total":
				if v := int(m.GetCounter().GetValue()); v > 0 {
					got[label(m, "kind")+"/"+label(m, "decision")] = v
				}
			case "loom_webhook_request_duration_seconds":
				observed += int(m.GetHistogram().GetSampleCount())
			}
		}
	}
	total := 0
	for k, n := range want {
		total += n
		if got[k] != n {
			t.Errorf("decisions %s: got %d, want %d (all: %v)", k, got[k], n, got)
		}
	}
	if len(got) != len(want) || observed != total {
		t.Errorf("decisions: got %v and %d durations, want %v", got, observed, want)
	}
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func (v verdict) check(t *testing.T, resp *admissionv1.AdmissionResponse) {
	t.Helper()
	if v.code == 0 {
		if !resp.Allowed {
			t.Fatalf("denied (%+v), want allowed", resp.Result)
		}
		return
	}
	if resp.Allowed || resp.Result == nil {
		t.Fatalf("allowed, want denied with %d", v.code)
	}
	if resp.Result.Code != v.code {
		t.Errorf("code %d, want %d (%s)", resp.Result.Code, v.code, resp.Result.Message)
	}
	for _, w := range v.says {
		if !strings.Contains(resp.Result.Message, w) {
			t.Errorf("message %q does not say %q", resp.Result.Message, w)
		}
	}
}

func TestAdmitPod(t *testing.T) {
	counter := newDecisionCounter()
	want := map[string]int{}
	h := webhookHandler(fixtureAdmission(t), counter.m, slog.New(slog.DiscardHandler))
	for _, tc := range []struct {
		name string
		op   admissionv1.Operation
		pod  *corev1.Pod
		want verdict
	}{
		{name: "platform pod without networks", pod: pod("plain", "p"), want: verdict{}},
		{name: "platform pod on a platform network", pod: pod("plain", "p", networks("shared")), want: verdict{}},
		{name: "platform pod whose annotation does not parse: CNI ADD reports it",
			pod: pod("plain", "p", networks(`[{"name":`)), want: verdict{}},
		{name: "platform pod on a tenant's network", pod: pod("plain", "p", networks("ta/net-a")),
			want: verdict{403, []string{"plain/p", "ta/net-a", "tenant a"}}},
		{name: "tenant pod on its own network", pod: pod("ta", "p", networks("net-a")), want: verdict{}},
		{name: "tenant pod on its own network, JSON form", pod: pod("ta", "p", networks(`[{"name":"net-a","interface":"data0"}]`)), want: verdict{}},
		{name: "tenant pod on a network not created yet: decided by namespace", pod: pod("ta", "p", networks("later")), want: verdict{}},
		{name: "tenant pod on another tenant's network", pod: pod("ta", "p", networks("net-a, tb/net-b")),
			want: verdict{403, []string{"ta/p", "tb/net-b", "belongs to namespace tb of tenant b"}}},
		{name: "tenant pod on another tenant's network not created yet", pod: pod("ta", "p", networks("tb/later")),
			want: verdict{403, []string{"ta/p", "tb/later", "tenant b"}}},
		{name: "tenant pod on an unshared platform network", pod: pod("ta", "p", networks("plain/shared")),
			want: verdict{403, []string{"ta/p", "plain/shared", "not shared"}}},
		{name: "tenant pod whose annotation does not parse", pod: pod("ta", "p", networks(`[{"name":`)),
			want: verdict{400, []string{"ta/p", nadv1.NetworkAttachmentAnnot}}},
		{name: "tenant pod with NET_ADMIN", pod: pod("ta", "p", netAdmin),
			want: verdict{403, []string{"ta/p", "NET_ADMIN", "tenant a"}}},
		{name: "tenant pod on a platform default network", pod: pod("ta", "p", annotation(npwg.DefaultNetworkAnnot, "alt")),
			want: verdict{403, []string{"ta/p", "kube-system/alt"}}},
		{name: "tenant pod within its VF quota with its other pods", pod: pod("ta", "p", networks("sriov-a"), vfs(2)), want: verdict{}},
		{name: "tenant pod over its VF quota with its other pods", pod: pod("ta", "p", networks("sriov-a"), vfs(3)),
			want: verdict{403, []string{"ta/p", "3 SR-IOV VFs and the tenant's other pods hold 1: 4", "quota of 3", "spec.sriov.vfQuota"}}},
		{name: "tenant pod over its VF quota without a NAD", pod: pod("ta", "p", vfs(3)),
			want: verdict{403, []string{"ta/p", "hold 1: 4", "quota of 3"}}},
		{name: "tenant pod asking for VFs of a pool not its tenant's", pod: pod("ta", "p", func(p *corev1.Pod) {
			p.Spec.Containers[0].Resources.Limits = corev1.ResourceList{"loom.dev/sriov_b": *resource.NewQuantity(1, resource.DecimalSI)}
		}), want: verdict{403, []string{"ta/p", "1 VFs of SR-IOV pool loom.dev/sriov_b", "spec.sriov.pools"}}},
		{name: "tenant pod with a hostPort in its grant", pod: pod("ta", "p", hostPort(30010, corev1.ProtocolTCP)), want: verdict{}},
		{name: "tenant pod with a hostPort on VXLAN's port", pod: pod("ta", "p", hostPort(4789, corev1.ProtocolUDP)),
			want: verdict{403, []string{"ta/p", "spec.containers[app].ports[0].hostPort", "4789/udp", "never a tenant's"}}},
		{name: "tenant pod mapping a port outside its grant through the annotation",
			pod:  pod("ta", "p", networks(`[{"name":"net-a","portMappings":[{"hostPort":8080,"containerPort":80}]}]`)),
			want: verdict{403, []string{"ta/p", "k8s.v1.cni.cncf.io/networks[0].portMappings[0].hostPort", "8080/tcp", "spec.nodeResources.hostPorts"}}},
		{name: "platform pod with a hostPort on VXLAN's port", pod: pod("plain", "p", hostPort(4789, corev1.ProtocolUDP)), want: verdict{}},
		{name: "a name still to be generated", pod: func() *corev1.Pod {
			p := pod("ta", "", networks("tb/net-b"))
			p.GenerateName = "web-"
			return p
		}(), want: verdict{403, []string{"ta/web-", "tb/net-b"}}},
		{name: "a namespace the caches have not seen", pod: pod("new", "p"),
			want: verdict{503, []string{"new/p", "not in the webhook's cache"}}},
		{name: "a deletion", op: admissionv1.Delete, pod: pod("ta", "p", netAdmin), want: verdict{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			op := tc.op
			if op == "" {
				op = admissionv1.Create
			}
			tc.want.check(t, post(t, h, pathPods, reviewOf(t, podKind, op, tc.pod.Namespace, tc.pod)))
		})
		want[metrics.KindPod+"/"+tc.want.decision()]++
	}
	counter.check(t, want)
}

func TestAdmitNAD(t *testing.T) {
	counter := newDecisionCounter()
	want := map[string]int{}
	h := webhookHandler(fixtureAdmission(t), counter.m, slog.New(slog.DiscardHandler))
	for _, tc := range []struct {
		name string
		op   admissionv1.Operation
		nad  *nadv1.NetworkAttachmentDefinition
		want verdict
	}{
		{name: "tenant network on its VLANs", nad: nad("ta", "n", macvlanVLAN(199), nil), want: verdict{}},
		{name: "tenant network off its VLANs", nad: nad("ta", "n", macvlanVLAN(300), nil),
			want: verdict{403, []string{"ta/n", "VLAN 300", "100-199", "tenant a"}}},
		{name: "tenant network updated off its VLANs", op: admissionv1.Update, nad: nad("ta", "n", macvlanVLAN(300), nil),
			want: verdict{403, []string{"ta/n", "VLAN 300"}}},
		{name: "tenant network on a pool not its own", nad: nad("ta", "n", `{"type":"sriov"}`, map[string]string{tenants.ResourceNameAnnotation: "loom.dev/sriov_b"}),
			want: verdict{403, []string{"ta/n", "loom.dev/sriov_b"}}},
		{name: "tenant network from a node's configuration file", nad: nad("ta", "n", "", nil),
			want: verdict{403, []string{"ta/n", "spec.config"}}},
		{name: "tenant without VLANs", nad: nad("tb", "n", macvlanVLAN(150), nil),
			want: verdict{403, []string{"tb/n", "VLAN 150", "none"}}},
		{name: "configuration that does not parse", nad: nad("ta", "n", `{"type":`, nil),
			want: verdict{400, []string{"ta/n"}}},
		{name: "VLAN that is no VLAN", nad: nad("plain", "n", `{"type":"macvlan","vlan":"ten"}`, nil),
			want: verdict{400, []string{"plain/n", "vlan"}}},
		{name: "platform network on any VLAN", nad: nad("plain", "n", macvlanVLAN(300), nil), want: verdict{}},
		{name: "tenant host-device taking the node's eth0", nad: nad("ta", "n", `{"cniVersion":"1.0.0","type":"host-device","device":"eth0"}`, nil),
			want: verdict{403, []string{"network ta/n", `"device"`, `"eth0"`, "spec.nodeResources.hostDevices"}}},
		{name: "tenant host-device on its granted device", nad: nad("ta", "n", `{"cniVersion":"1.0.0","type":"host-device","device":"ens2f1"}`, nil), want: verdict{}},
		{name: "tenant macvlan on a master not granted", nad: nad("ta", "n", `{"cniVersion":"1.0.0","type":"macvlan","master":"eth1"}`, nil),
			want: verdict{403, []string{"network ta/n", `"master"`, `"eth1"`, "spec.nodeResources.masters"}}},
		{name: "tenant portmap on VXLAN's port", nad: nad("ta", "n", `{"cniVersion":"1.0.0","plugins":[{"type":"macvlan","master":"eth0"},
			{"type":"portmap","runtimeConfig":{"portMappings":[{"hostPort":4789,"containerPort":4789,"protocol":"udp"}]}}]}`, nil),
			want: verdict{403, []string{"network ta/n", "plugins[1].runtimeConfig.portMappings[0].hostPort", "4789/udp"}}},
		{name: "tenant bridge of another tenant", nad: nad("ta", "n", `{"cniVersion":"1.0.0","type":"bridge","bridge":"br-b"}`, nil),
			want: verdict{403, []string{"network ta/n", `"bridge"`, `"br-b"`, "spec.nodeResources.bridges"}}},
		{name: "tenant bridge of its own", nad: nad("ta", "n", `{"cniVersion":"1.0.0","type":"bridge","bridge":"br-a"}`, nil), want: verdict{}},
		{name: "tenant plugin type with a path", nad: nad("ta", "n", `{"cniVersion":"1.0.0","type":"../x"}`, nil),
			want: verdict{403, []string{"network ta/n", `"type"`, "../x", "not a plain plugin name"}}},
		{name: "tenant nested delegate moving a device", nad: nad("tb", "n", `{"cniVersion":"1.0.0","plugins":[{"type":"dummy","delegates":[{"type":"host-device","device":"eth0"}]}]}`, nil),
			want: verdict{403, []string{"network tb/n", "plugins[0].delegates[0].device"}}},
		{name: "platform network moving a device", nad: nad("plain", "n", `{"cniVersion":"1.0.0","type":"host-device","device":"eth0"}`, nil), want: verdict{}},
		{name: "deletion", op: admissionv1.Delete, nad: nad("ta", "n", macvlanVLAN(300), nil), want: verdict{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			op := tc.op
			if op == "" {
				op = admissionv1.Create
			}
			tc.want.check(t, post(t, h, pathNADs, reviewOf(t, nadKind, op, tc.nad.Namespace, tc.nad)))
		})
		want[metrics.KindNAD+"/"+tc.want.decision()]++
	}
	counter.check(t, want)
}

// TestAdmitPodChanges: what changes a running pod's networks (an update of its networks
// annotation) or privileges (an ephemeral container) goes through the tenant's rules; any
// other update is left alone.
func TestAdmitPodChanges(t *testing.T) {
	counter := newDecisionCounter()
	want := map[string]int{}
	h := webhookHandler(fixtureAdmission(t), counter.m, slog.New(slog.DiscardHandler))
	for _, tc := range []struct {
		name     string
		sub      string
		old, pod *corev1.Pod
		want     verdict
	}{
		{name: "networks changed to another tenant's NAD", old: pod("ta", "p", networks("net-a")), pod: pod("ta", "p", networks("net-a,tb/net-b")),
			want: verdict{403, []string{"pod ta/p may not use network tb/net-b", "tenant b"}}},
		{name: "default network changed to the platform's", old: pod("ta", "p"), pod: pod("ta", "p", annotation(npwg.DefaultNetworkAnnot, "alt")),
			want: verdict{403, []string{"ta/p", "kube-system/alt"}}},
		{name: "networks changed to a port mapping on the kubelet's port", old: pod("ta", "p", networks("net-a")),
			pod:  pod("ta", "p", networks(`[{"name":"net-a","portMappings":[{"hostPort":10250,"containerPort":80}]}]`)),
			want: verdict{403, []string{"ta/p", "10250/tcp", "the kubelet"}}},
		{name: "networks changed to its own NAD", old: pod("ta", "p"), pod: pod("ta", "p", networks("net-a")), want: verdict{}},
		{name: "networks unchanged: a label, of a pod admitted before its tenant's rules", old: pod("ta", "p", networks("tb/net-b"), netAdmin),
			pod: func() *corev1.Pod {
				p := pod("ta", "p", networks("tb/net-b"), netAdmin)
				p.Labels = map[string]string{"x": "y"}
				return p
			}(), want: verdict{}},
		{name: "ephemeral container with NET_ADMIN", sub: "ephemeralcontainers", old: pod("ta", "p"), pod: pod("ta", "p", debugged("NET_ADMIN")),
			want: verdict{403, []string{"pod ta/p", "ephemeral container debugger adds NET_ADMIN", "spec.allowNetAdmin of tenant a"}}},
		{name: "ephemeral container with NET_RAW", sub: "ephemeralcontainers", old: pod("ta", "p"), pod: pod("ta", "p", debugged("NET_RAW")),
			want: verdict{403, []string{"ephemeral container debugger adds NET_RAW"}}},
		{name: "privileged ephemeral container", sub: "ephemeralcontainers", old: pod("ta", "p"), pod: pod("ta", "p", debugged(), func(p *corev1.Pod) {
			priv := true
			p.Spec.EphemeralContainers[0].SecurityContext = &corev1.SecurityContext{Privileged: &priv}
		}), want: verdict{403, []string{"ephemeral container debugger is privileged"}}},
		{name: "plain ephemeral container", sub: "ephemeralcontainers", old: pod("ta", "p"), pod: pod("ta", "p", debugged()), want: verdict{}},
		{name: "ephemeral container in a platform pod", sub: "ephemeralcontainers", old: pod("plain", "p"), pod: pod("plain", "p", debugged("NET_ADMIN")), want: verdict{}},
		{name: "status is not checked", sub: "status", old: pod("ta", "p"), pod: pod("ta", "p", networks("tb/net-b")), want: verdict{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.want.check(t, post(t, h, pathPods, updateReviewOf(t, podKind, admissionv1.Update, tc.sub, tc.pod.Namespace, tc.old, tc.pod)))
		})
		want[metrics.KindPod+"/"+tc.want.decision()]++
	}
	counter.check(t, want)
}

func TestAdmitTenant(t *testing.T) {
	counter := newDecisionCounter()
	want := map[string]int{}
	h := webhookHandler(fixtureAdmission(t), counter.m, slog.New(slog.DiscardHandler))
	for _, tc := range []struct {
		name   string
		tenant *tenants.Object
		want   verdict
	}{
		{name: "valid", tenant: tenantObject("c", tenants.Spec{VLANs: []string{"200-299"}, Peers: []string{"a"}}), want: verdict{}},
		{name: "VLAN out of range", tenant: tenantObject("c", tenants.Spec{VLANs: []string{"5000"}}),
			want: verdict{422, []string{"Tenant c", "spec.vlans[0]", "5000"}}},
		{name: "a node resource that is Loom's", tenant: tenantObject("c", tenants.Spec{NodeResources: &tenants.NodeResourcesSpec{
			Masters: []string{"loom.vxlan"}, HostPorts: []string{"1-70000"}, Plugins: []string{"../x"}}}),
			want: verdict{422, []string{"spec.nodeResources.masters[0]", "Loom's own", "spec.nodeResources.hostPorts[0]", "spec.nodeResources.plugins[0]"}}},
		{name: "node resources granted", tenant: tenantObject("c", tenants.Spec{NodeResources: &tenants.NodeResourcesSpec{
			Masters: []string{"eth1"}, Bridges: []string{"br-c"}, HostDevices: []string{"ens4"}, HostPorts: []string{"30000-30100"}, Plugins: []string{"ptp"}}}),
			want: verdict{}},
		{name: "every problem listed", tenant: tenantObject("c", tenants.Spec{
			NamespaceSelector: &metav1.LabelSelector{}, VLANs: []string{"10", "x"}, SharedNetworks: []string{"nope"}}),
			want: verdict{422, []string{"spec.namespaceSelector", "spec.vlans[1]", "spec.sharedNetworks[0]"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := tc.tenant.ToUnstructured()
			if err != nil {
				t.Fatal(err)
			}
			tc.want.check(t, post(t, h, pathTenants, reviewOf(t, tenantKind, admissionv1.Create, "", u)))
		})
		want[metrics.KindTenant+"/"+tc.want.decision()]++
	}
	counter.check(t, want)
}

func TestReviewHandlerRefusesWhatIsNoReview(t *testing.T) {
	counter := newDecisionCounter()
	h := webhookHandler(fixtureAdmission(t), counter.m, slog.New(slog.DiscardHandler))
	for _, tc := range []struct {
		name, method, path, contentType, body string
		code                                  int
	}{
		{"not JSON", http.MethodPost, pathPods, "application/json", "{", http.StatusBadRequest},
		{"no request", http.MethodPost, pathPods, "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, http.StatusBadRequest},
		{"wrong content type", http.MethodPost, pathPods, "text/plain", "{}", http.StatusUnsupportedMediaType},
		{"GET", http.MethodGet, pathPods, "application/json", "", http.StatusMethodNotAllowed},
		{"unknown path", http.MethodPost, "/validate/services", "application/json", "{}", http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
			req.Header.Set("Content-Type", tc.contentType)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.code {
				t.Errorf("HTTP %d, want %d: %s", rec.Code, tc.code, rec.Body)
			}
		})
	}
	// What reached the pods' handler and was no review is an error; the mux refused the rest.
	counter.check(t, map[string]int{metrics.KindPod + "/" + metrics.DecisionError: 3})
}
