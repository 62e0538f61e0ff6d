package npwg

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
)

// PodLister lists the pods whose addresses a pod's asked-for addresses ("ips") are checked
// against, typically the node's pods from an informer cache.
type PodLister interface {
	Pods() ([]*corev1.Pod, error)
}

// checkTaken refuses an asked-for address of pod's attachment a that another pod holds on the
// same network, as that pod's network-status says. This is the check for networks whose IPAM
// is not Loom's: loom-ipam refuses a taken address itself, when it allocates. Pods that have
// finished hold no address.
func (r *Resolver) checkTaken(pod *corev1.Pod, podRef string, a attachment) error {
	if r.pods == nil || len(a.sel.IPs) == 0 || !a.fromPod {
		return nil
	}
	network := a.sel.Namespace + "/" + a.sel.Name
	want := map[netip.Addr]bool{}
	for _, s := range a.sel.IPs {
		if _, addr, err := parseRequestedIP(s); err == nil {
			want[addr] = true
		}
	}
	pods, err := r.pods.Pods()
	if err != nil {
		return fmt.Errorf("check addresses pod %s asks for on network %s: list pods: %w", podRef, network, err)
	}
	for _, other := range pods {
		if other.UID == pod.UID || other.Status.Phase == corev1.PodSucceeded || other.Status.Phase == corev1.PodFailed {
			continue
		}
		for _, st := range statusOf(other) {
			if st.Name != network {
				continue
			}
			for _, s := range st.IPs {
				addr, err := netip.ParseAddr(strings.TrimSpace(s))
				if err != nil || !want[addr.Unmap()] {
					continue
				}
				return &Error{Pod: podRef, Network: a.label,
					Problem: fmt.Sprintf(`"ips" asks for %s, which pod %s/%s holds on network %s (interface %s)`,
						addr, other.Namespace, other.Name, network, st.Interface),
					Fix: `ask for an address no other pod of the network holds, or remove "ips" to let the network's IPAM choose`}
			}
		}
	}
	return nil
}

// statusOf returns the entries of pod's network-status annotation; an unreadable one has none.
func statusOf(pod *corev1.Pod) []Status {
	var out []Status
	if err := json.Unmarshal([]byte(pod.Annotations[nadv1.NetworkStatusAnnot]), &out); err != nil {
		return nil
	}
	return out
}
