package daemon

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	ktypes "k8s.io/apimachinery/pkg/types"

	"github.com/loom-cni/loom/delegate"
	"github.com/loom-cni/loom/delegate/npwg"
	"github.com/loom-cni/loom/tenants"
)

// fakeCache is a TenancyCache over a fixed set of NADs and pods.
type fakeCache struct {
	nads map[string]*nadv1.NetworkAttachmentDefinition
	pods []*corev1.Pod
}

func (c *fakeCache) NAD(ns, name string) (*nadv1.NetworkAttachmentDefinition, error) {
	if n, ok := c.nads[ns+"/"+name]; ok {
		return n, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "network-attachment-definitions"}, name)
}

func (c *fakeCache) NADs() ([]*nadv1.NetworkAttachmentDefinition, error) {
	var out []*nadv1.NetworkAttachmentDefinition
	for _, n := range c.nads {
		out = append(out, n)
	}
	return out, nil
}

func (c *fakeCache) PodsIn(ns string) []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range c.pods {
		if p.Namespace == ns {
			if slim, _ := slimPod(p); slim != nil {
				out = append(out, slim.(*corev1.Pod))
			}
		}
	}
	return out
}

var _ TenancyCache = (*fakeCache)(nil)
var _ TenancyCache = (*Cluster)(nil)

func testNAD(ref, config string, annotations map[string]string) *nadv1.NetworkAttachmentDefinition {
	ns, name, _ := strings.Cut(ref, "/")
	return &nadv1.NetworkAttachmentDefinition{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: annotations},
		Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: config}}
}

// tenancyDirectory: tenant a owns ns-a (master eth1, host ports 30000-30100, pool
// loom.dev/sriov_a with a quota of 3 VFs); tenant b owns ns-b; kube-system is the platform.
func tenancyDirectory(t *testing.T) *tenants.Directory {
	t.Helper()
	var ts []tenants.Tenant
	for _, o := range []*tenants.Object{
		{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Spec: tenants.Spec{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"t": "a"}},
			VLANs:             []string{"100-199"},
			SRIOV:             &tenants.SRIOVSpec{Pools: []string{"loom.dev/sriov_a"}, VFQuota: ptrTo(3)},
			NodeResources:     &tenants.NodeResourcesSpec{Masters: []string{"eth1"}, HostPorts: []string{"30000-30100"}},
		}},
		{ObjectMeta: metav1.ObjectMeta{Name: "b"}, Spec: tenants.Spec{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"t": "b"}},
		}},
	} {
		tn, problems := tenants.Parse(o)
		if len(problems) > 0 {
			t.Fatal(problems)
		}
		ts = append(ts, tn)
	}
	return tenants.NewDirectory(ts, map[string]map[string]string{"ns-a": {"t": "a"}, "ns-b": {"t": "b"}, "kube-system": nil})
}

func vfPod(ns, name string, created time.Time, vfs int64) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: ktypes.UID("uid-" + name),
		CreationTimestamp: metav1.NewTime(created)}}
	c := corev1.Container{Name: "app"}
	if vfs > 0 {
		c.Resources.Limits = corev1.ResourceList{"loom.dev/sriov_a": *resource.NewQuantity(vfs, resource.DecimalSI),
			corev1.ResourceCPU: resource.MustParse("1")}
	}
	p.Spec.Containers = []corev1.Container{c}
	return p
}

func TestTenancyCheck(t *testing.T) {
	dir := tenancyDirectory(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cache := &fakeCache{
		nads: map[string]*nadv1.NetworkAttachmentDefinition{
			"ns-a/net":            testNAD("ns-a/net", `{"type":"macvlan","master":"eth1"}`, nil),
			"ns-b/net":            testNAD("ns-b/net", `{"type":"macvlan","master":"eth1"}`, nil),
			"ns-a/vlan":           testNAD("ns-a/vlan", `{"type":"sriov","vlan":300}`, nil),
			"ns-a/host":           testNAD("ns-a/host", `{"cniVersion":"1.0.0","plugins":[{"type":"host-device","device":"eth0"}]}`, nil),
			"ns-a/path":           testNAD("ns-a/path", `{"type":"../../bin/sh"}`, nil),
			"ns-a/ports":          testNAD("ns-a/ports", `{"plugins":[{"type":"macvlan","master":"eth1"},{"type":"portmap","capabilities":{"portMappings":true}}]}`, nil),
			"kube-system/pod-net": testNAD("kube-system/pod-net", `{"type":"bridge"}`, nil),
		},
		pods: []*corev1.Pod{
			vfPod("ns-a", "first", t0, 2),
			vfPod("ns-a", "finished", t0, 5),
			vfPod("ns-b", "other-tenant", t0, 9),
			vfPod("ns-a", "later", t0.Add(time.Hour), 2),
		},
	}
	cache.pods[1].Status.Phase = corev1.PodSucceeded
	check := NewTenancy(func() *tenants.Directory { return dir }, cache)
	check.namespaceWait = 50 * time.Millisecond
	spec := func(network string, dflt bool) delegate.Spec {
		return delegate.Spec{Network: network, NetworkUID: "uid-" + network, Default: dflt}
	}
	pod := func(ns string, ann map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "p", UID: "uid-p", Annotations: ann, CreationTimestamp: metav1.NewTime(t0.Add(time.Minute))}}
	}
	withVFs := func(p *corev1.Pod, n int64) *corev1.Pod {
		p.Spec = vfPod(p.Namespace, p.Name, t0, n).Spec
		return p
	}
	hostPort := func(p *corev1.Pod, port int32) *corev1.Pod {
		p.Spec.Containers = []corev1.Container{{Name: "app", Ports: []corev1.ContainerPort{{ContainerPort: 80, HostPort: port, Protocol: corev1.ProtocolUDP}}}}
		return p
	}
	portMappings := delegate.Spec{Network: "ns-a/ports", NetworkUID: "uid-ports",
		CapabilityArgs: map[string]any{"portMappings": []npwg.PortMapping{{HostPort: 4789, ContainerPort: 4789, Protocol: "udp"}}}}
	for _, tc := range []struct {
		name  string
		pod   *corev1.Pod
		specs []delegate.Spec
		// field and grant are the denial's; denied false: allowed.
		denied       bool
		field, grant string
	}{
		{name: "own NAD", pod: pod("ns-a", nil), specs: []delegate.Spec{spec("kube-system/pod-net", true), spec("ns-a/net", false)}},
		{name: "another tenant's NAD", pod: pod("ns-a", nil), specs: []delegate.Spec{spec("kube-system/pod-net", true), spec("ns-b/net", false)},
			denied: true, grant: "spec.sharedNetworks"},
		{name: "a VLAN outside the tenant's ranges", pod: pod("ns-a", nil), specs: []delegate.Spec{spec("ns-a/vlan", false)}, denied: true, grant: "spec.vlans"},
		{name: "a NAD the webhook never saw takes a node device", pod: pod("ns-a", nil), specs: []delegate.Spec{spec("ns-a/host", false)},
			denied: true, field: "plugins[0].device", grant: "spec.nodeResources.hostDevices"},
		{name: "a NAD the webhook never saw runs a program by path", pod: pod("ns-a", nil), specs: []delegate.Spec{spec("ns-a/path", false)},
			denied: true, field: "type"},
		{name: "a macvlan NAD on a master the tenant lacks", pod: pod("ns-b", nil), specs: []delegate.Spec{spec("ns-b/net", false)},
			denied: true, field: "master", grant: "spec.nodeResources.masters"},
		{name: "portMappings of the annotation on VXLAN's port", pod: pod("ns-a", nil), specs: []delegate.Spec{portMappings},
			denied: true, field: "k8s.v1.cni.cncf.io/networks (network ns-a/ports) portMappings[0].hostPort"},
		{name: "a container hostPort outside the grant", pod: hostPort(pod("ns-a", nil), 8080), denied: true,
			field: "spec.containers[app].ports[0].hostPort", grant: "spec.nodeResources.hostPorts"},
		{name: "a container hostPort within the grant", pod: hostPort(pod("ns-a", nil), 30007)},
		{name: "a NAD that does not exist yet is judged by its namespace", pod: pod("ns-a", nil), specs: []delegate.Spec{spec("ns-b/later", false)},
			denied: true, grant: "spec.sharedNetworks"},
		{name: "the platform may not use a tenant's NAD", pod: pod("kube-system", nil), specs: []delegate.Spec{spec("ns-a/net", false)}, denied: true},
		{name: "a namespace the cache has not seen is not judged", pod: pod("brand-new", nil)},
		{name: "a default network the pod picked is checked", pod: pod("ns-a", map[string]string{npwg.DefaultNetworkAnnot: "ns-b/net"}),
			specs: []delegate.Spec{spec("ns-b/net", true)}, denied: true, grant: "spec.sharedNetworks"},
		// The tenant's pods created before p hold 2 VFs (first; finished holds none; later
		// comes after p): 1 more fits the quota of 3, 2 more do not, NAD or not.
		{name: "VFs within the quota with the tenant's earlier pods", pod: withVFs(pod("ns-a", nil), 1)},
		{name: "VFs over the quota with the tenant's earlier pods, without a NAD", pod: withVFs(pod("ns-a", nil), 2),
			denied: true, grant: "spec.sriov.vfQuota"},
		{name: "VFs of a pool that is not the tenant's", pod: withVFs(pod("ns-b", nil), 1), denied: true, grant: "spec.sriov.pools"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := check.Check(tc.pod, tc.specs)
			var d *tenants.Denial
			if got := errors.As(err, &d); got != tc.denied {
				t.Fatalf("Check = %v, want denied %v", err, tc.denied)
			}
			if tc.pod.Namespace == "brand-new" {
				var cniErr *types.Error
				if err == nil || !errors.As(tenancyError(err), &cniErr) || cniErr.Code != types.ErrTryAgainLater {
					t.Errorf("unknown namespace: %v, want a try-again-later error", err)
				}
				return
			}
			if !tc.denied {
				return
			}
			if d.Field != tc.field || d.Grant != tc.grant {
				t.Errorf("denial %q names field %q and grant %q, want %q and %q", err, d.Field, d.Grant, tc.field, tc.grant)
			}
			var cniErr *types.Error
			if !errors.As(tenancyError(err), &cniErr) || cniErr.Code != types.ErrInvalidNetworkConfig {
				t.Errorf("CNI error %v, want code %d", tenancyError(err), types.ErrInvalidNetworkConfig)
			}
		})
	}
}

// slimPod keeps what the VF count needs and nothing else of a pod.
func TestSlimPod(t *testing.T) {
	p := vfPod("ns", "p", time.Now(), 2)
	p.Annotations = map[string]string{"secret": "x"}
	p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "TOKEN", Value: "x"}}
	o, err := slimPod(p)
	if err != nil {
		t.Fatal(err)
	}
	slim := o.(*corev1.Pod)
	if slim.Annotations != nil || slim.Spec.Containers[0].Env != nil || !slim.CreationTimestamp.Equal(&p.CreationTimestamp) {
		t.Errorf("slimPod kept too much or too little: %+v", slim)
	}
	lim := slim.Spec.Containers[0].Resources.Limits
	if _, cpu := lim[corev1.ResourceCPU]; cpu || lim.Name("loom.dev/sriov_a", resource.DecimalSI).Value() != 2 {
		t.Errorf("slimPod limits = %v, want only loom.dev/sriov_a: 2", lim)
	}
}

func ptrTo[T any](v T) *T { return &v }
