package npwg

import (
	"errors"
	"testing"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// fakePods is a PodLister of fixed pods.
type fakePods []*corev1.Pod

func (f fakePods) Pods() ([]*corev1.Pod, error) { return f, nil }

// holder is a running pod whose network-status says it holds addrs on web/net-caps's net1.
func holder(name, uid string, phase corev1.PodPhase, addrs string) *corev1.Pod {
	status := `[{"name":"kube-system/loom","interface":"eth0","ips":["10.244.0.9"],"default":true},` +
		`{"name":"web/net-caps","interface":"net1","ips":` + addrs + `}]`
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: name, UID: types.UID(uid),
			Annotations: map[string]string{nadv1.NetworkStatusAnnot: status}},
		Status: corev1.PodStatus{Phase: phase},
	}
}

// TestResolveTakenAddress checks that "ips" asking for an address another pod holds on the same
// network is refused with an error naming the pod, the network and the address, in both
// families, and that free addresses, addresses of other networks, the pod's own and those of
// finished pods are not.
func TestResolveTakenAddress(t *testing.T) {
	pods := fakePods{
		holder("db", "uid-db", corev1.PodRunning, `["192.168.60.7","2001:db8:60::7"]`),
		holder("done", "uid-done", corev1.PodSucceeded, `["192.168.60.8"]`),
	}
	r := testResolver(t, func(c *Config) { c.Pods = pods })
	for _, c := range []struct {
		ips   string
		taken bool
	}{
		{`["192.168.60.7/24"]`, true},
		{`["2001:db8:60::7/64"]`, true},
		{`["192.168.60.20/24","2001:db8:60:0::7"]`, true},
		{`["192.168.60.20/24","2001:db8:60::20/64"]`, false},
		{`["192.168.60.8/24"]`, false},
		{`["10.244.0.9/32"]`, false}, // held, but on another network
	} {
		pod := testPod(map[string]string{nadv1.NetworkAttachmentAnnot: `[{"name":"net-caps","ips":` + c.ips + `}]`})
		pod.UID = "uid-app"
		_, err := r.Resolve(pod, "eth0", nil)
		var e *Error
		switch {
		case c.taken && (!errors.As(err, &e) || e.Pod != "web/app" || e.Network != "web/net-caps"):
			t.Errorf("ips %s: got %v, want an *Error for pod web/app on web/net-caps", c.ips, err)
		case c.taken:
			t.Logf("ips %s: %v", c.ips, err)
		case err != nil:
			t.Errorf("ips %s: got %v, want no error", c.ips, err)
		}
	}

	// A pod's own addresses (its ADD again, after a restart) are not another pod's.
	self := holder("app", "uid-app", corev1.PodRunning, `["192.168.60.30"]`)
	pod := testPod(map[string]string{nadv1.NetworkAttachmentAnnot: `[{"name":"net-caps","ips":["192.168.60.30/24"]}]`})
	pod.UID = self.UID
	if _, err := testResolver(t, func(c *Config) { c.Pods = fakePods{self} }).Resolve(pod, "eth0", nil); err != nil {
		t.Errorf("asking for its own address: %v", err)
	}
}
