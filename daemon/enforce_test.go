package daemon

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/loom-cni/loom/delegate"
	"github.com/loom-cni/loom/delegate/npwg"
	"github.com/loom-cni/loom/fabric"
	"github.com/loom-cni/loom/policy"
	"github.com/loom-cni/loom/tenants"
)

type nadMap map[string]*nadv1.NetworkAttachmentDefinition

func (m nadMap) NAD(ns, name string) (*nadv1.NetworkAttachmentDefinition, error) {
	if n, ok := m[ns+"/"+name]; ok {
		return n, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "network-attachment-definitions"}, name)
}

func TestTenancyCheck(t *testing.T) {
	dir := tenants.NewDirectory([]tenants.Tenant{
		{Name: "a", Selector: labels.SelectorFromSet(labels.Set{"t": "a"}), VFQuota: -1},
		{Name: "b", Selector: labels.SelectorFromSet(labels.Set{"t": "b"}), VFQuota: -1},
	}, map[string]map[string]string{"ns-a": {"t": "a"}, "ns-b": {"t": "b"}, "kube-system": nil})
	nads := nadMap{
		"ns-a/net":            {ObjectMeta: metav1.ObjectMeta{Namespace: "ns-a", Name: "net"}, Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: `{"type":"macvlan"}`}},
		"ns-b/net":            {ObjectMeta: metav1.ObjectMeta{Namespace: "ns-b", Name: "net"}, Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: `{"type":"macvlan"}`}},
		"ns-a/vlan":           {ObjectMeta: metav1.ObjectMeta{Namespace: "ns-a", Name: "vlan"}, Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: `{"type":"sriov","vlan":300}`}},
		"kube-system/pod-net": {ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "pod-net"}, Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: `{"type":"bridge"}`}},
	}
	check := NewTenancy(func() *tenants.Directory { return dir }, nads)
	check.namespaceWait = 50 * time.Millisecond
	spec := func(network string, dflt bool) delegate.Spec {
		return delegate.Spec{Network: network, NetworkUID: "uid-" + network, Default: dflt}
	}
	pod := func(ns string, ann map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "p", Annotations: ann}}
	}
	for _, tc := range []struct {
		name   string
		pod    *corev1.Pod
		specs  []delegate.Spec
		denied bool
	}{
		{"own NAD", pod("ns-a", nil), []delegate.Spec{spec("kube-system/pod-net", true), spec("ns-a/net", false)}, false},
		{"another tenant's NAD", pod("ns-a", nil), []delegate.Spec{spec("kube-system/pod-net", true), spec("ns-b/net", false)}, true},
		{"a VLAN outside the tenant's ranges", pod("ns-a", nil), []delegate.Spec{spec("ns-a/vlan", false)}, true},
		{"a NAD that does not exist yet is judged by its namespace", pod("ns-a", nil), []delegate.Spec{spec("ns-b/later", false)}, true},
		{"the platform may not use a tenant's NAD", pod("kube-system", nil), []delegate.Spec{spec("ns-a/net", false)}, true},
		{"a namespace the cache has not seen is not judged", pod("brand-new", nil), nil, false},
		{"a default network the pod picked is checked", pod("ns-a", map[string]string{npwg.DefaultNetworkAnnot: "ns-b/net"}),
			[]delegate.Spec{spec("ns-b/net", true)}, true},
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
			if tc.denied {
				var cniErr *types.Error
				if !errors.As(tenancyError(err), &cniErr) || cniErr.Code != types.ErrInvalidNetworkConfig {
					t.Errorf("CNI error %v, want code %d", tenancyError(err), types.ErrInvalidNetworkConfig)
				}
			}
		})
	}
}

// The primary network's rules go on the host side of Loom's own veth; another default
// network's host side (a bridge) carries none.
func TestEndpointOf(t *testing.T) {
	idx := 1
	res := &current.Result{
		CNIVersion: "1.0.0",
		Interfaces: []*current.Interface{{Name: "loom0123456789a"}, {Name: "eth0", Sandbox: "/run/netns/x"}},
		IPs:        []*current.IPConfig{{Interface: &idx, Address: net.IPNet{IP: net.ParseIP("10.244.1.5").To4(), Mask: net.CIDRMask(32, 32)}}},
	}
	loom := endpointOf(delegate.Outcome{Spec: delegate.Spec{Network: "loom", Ifname: "eth0", Default: true, Kind: fabric.Kind}, Result: res})
	if loom.Network != policy.Primary || loom.HostInterface != "loom0123456789a" || len(loom.IPs) != 1 || loom.IPs[0].String() != "10.244.1.5" {
		t.Errorf("Loom's primary endpoint = %+v", loom)
	}
	bridge := endpointOf(delegate.Outcome{Spec: delegate.Spec{Network: "kube-system/pod-net", Ifname: "eth0", Default: true, Kind: delegate.KindCNI}, Result: res})
	if bridge.HostInterface != "" {
		t.Errorf("a delegate default network's endpoint has host interface %q, want none", bridge.HostInterface)
	}
	sec := endpointOf(delegate.Outcome{Spec: delegate.Spec{Network: "ns-a/net", Ifname: "net1", Kind: delegate.KindCNI}, Result: res})
	if sec.Network != "ns-a/net" || sec.Interface != "net1" {
		t.Errorf("secondary endpoint = %+v", sec)
	}
}
