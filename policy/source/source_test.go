package source

import (
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/loom-cni/loom/policy"
)

func TestIPAMSubnets(t *testing.T) {
	for _, tc := range []struct {
		config string
		want   []string
	}{
		{`{"type":"macvlan","ipam":{"type":"host-local","subnet":"192.168.1.0/24"}}`, []string{"192.168.1.0/24"}},
		{`{"plugins":[{"type":"bridge","ipam":{"type":"host-local","ranges":[[{"subnet":"10.1.0.0/16"}],[{"subnet":"fd00::/64"}]]}}]}`, []string{"10.1.0.0/16", "fd00::/64"}},
		{`{"ipam":{"type":"loom-ipam","range":"192.168.60.0/24"}}`, []string{"192.168.60.0/24"}},
		{`{"ipam":{"type":"static","addresses":[{"address":"10.9.9.5/24"}]}}`, []string{"10.9.9.0/24"}},
		{`{"ipam":{"type":"whereabouts","range":" 10.5.0.0/16 "}}`, []string{"10.5.0.0/16"}},
		{`{"type":"macvlan"}`, nil},
		{`not json`, nil},
	} {
		var got []string
		for _, p := range IPAMSubnets([]byte(tc.config)) {
			got = append(got, p.String())
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("IPAMSubnets(%s) = %v, want %v", tc.config, got, tc.want)
		}
	}
}

func TestPodOf(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", Labels: map[string]string{"app": "x"}, Annotations: map[string]string{
			nadv1.NetworkStatusAnnot: `[{"name":"loom","interface":"eth0","ips":["10.244.1.2"],"default":true},
			  {"name":"ns/mv","interface":"net1","ips":["192.168.1.5","fd00::5","fe80::1%net1"],"mac":"0A:58:C0:A8:01:05"}]`,
		}},
		Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Ports: []corev1.ContainerPort{
			{Name: "http", ContainerPort: 8080}, {ContainerPort: 9000}, {Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
		}}}},
	}
	p := podOf(pod)
	got := fmt.Sprintf("%s %s %v %v", p.PodKey, p.Node, p.Ports, p.Endpoints)
	want := fmt.Sprintf("ns/p n1 %v %v",
		[]policy.NamedPort{{Name: "http", Protocol: "TCP", Port: 8080}, {Name: "dns", Protocol: "UDP", Port: 53}},
		[]policy.Endpoint{{Network: policy.Primary, Interface: "eth0", IPs: []netip.Addr{netip.MustParseAddr("10.244.1.2")}},
			{Network: "ns/mv", Interface: "net1", MAC: policy.MAC{0x0a, 0x58, 0xc0, 0xa8, 0x01, 0x05},
				IPs: []netip.Addr{netip.MustParseAddr("192.168.1.5"), netip.MustParseAddr("fd00::5")}}})
	if got != want {
		t.Errorf("podOf =\n %s\nwant\n %s", got, want)
	}
	// Before network-status is written, the status addresses stand for the primary network.
	pod.Annotations = nil
	pod.Status.PodIPs = []corev1.PodIP{{IP: "10.244.1.2"}}
	if p = podOf(pod); len(p.Endpoints) != 1 || p.Endpoints[0].Network != policy.Primary || p.Endpoints[0].IPs[0].String() != "10.244.1.2" {
		t.Errorf("podOf without network-status: %+v", p.Endpoints)
	}
}

// The caches keep only what the source reads, and what it reads survives the trim.
func TestTrimPod(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", Labels: map[string]string{"app": "x"}, Annotations: map[string]string{
			nadv1.NetworkStatusAnnot:                           `[{"name":"loom","interface":"eth0","ips":["10.244.1.2"],"default":true}]`,
			"kubectl.kubernetes.io/last-applied-configuration": strings.Repeat("x", 4096),
		}},
		Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Image: "big", Command: []string{"sh"},
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {ContainerPort: 9000}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIPs: []corev1.PodIP{{IP: "10.244.1.2"}}},
	}
	small := trimPod(pod).(*corev1.Pod)
	if len(small.Annotations) != 1 || small.Spec.Containers[0].Image != "" || len(small.Spec.Containers[0].Ports) != 1 {
		t.Errorf("trimmed pod keeps too much: %+v", small)
	}
	if !reflect.DeepEqual(podOf(small), podOf(pod)) {
		t.Errorf("trimming changed what the source reads:\n%+v\n%+v", podOf(small), podOf(pod))
	}
}

func TestTrimBlock(t *testing.T) {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "loom.dev/v1alpha1", "kind": "IPBlock",
		"metadata": map[string]any{"name": "t.10-244-240-0-28", "labels": map[string]any{"loom.dev/tenant": "a", "loom.dev/node": "n1"}},
		"spec":     map[string]any{"cidr": "10.244.240.0/28", "node": "n1", "allocations": []any{map[string]any{"ip": "10.244.240.1"}}},
	}}
	small := trimBlock(u).(*unstructured.Unstructured)
	s := &ClusterSource{blocks: map[string]ipBlock{}}
	s.setBlock(small)
	if got := s.blocks["t.10-244-240-0-28"]; got.tenant != "a" || got.cidr.String() != "10.244.240.0/28" {
		t.Errorf("block read from the trimmed object: %+v", got)
	}
	if _, ok := small.Object["spec"].(map[string]any)["allocations"]; ok {
		t.Error("the trimmed block keeps its allocations")
	}
}
