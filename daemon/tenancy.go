package daemon

// The ADD-time tenancy check: loomd decides a pod's networks with the same tenants functions
// the admission webhook uses, from its own caches, before anything is attached. It is the
// second line, for pods admitted while the webhook was down, before a Tenant changed, or
// never seen by it (a static pod, a NAD created while the webhook was unregistered).
//
// The VF quota is a tenant-wide total, so ADD needs the tenant's pods on every node: a
// cluster-wide pod cache that keeps of each pod only what the count needs. Two pods admitted
// at the same moment can both pass the webhook; at ADD a pod counts only the VFs of the
// tenant's pods created before it, so every node agrees which of them is over the quota.

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/loom-cni/loom/delegate"
	"github.com/loom-cni/loom/delegate/npwg"
	"github.com/loom-cni/loom/tenants"
)

// TenancyCache is what the ADD-time check reads: the NADs, and the pods of every node as
// slimPod keeps them. Cluster is one.
type TenancyCache interface {
	npwg.NADLister
	// NADs lists every NetworkAttachmentDefinition.
	NADs() ([]*nadv1.NetworkAttachmentDefinition, error)
	// PodsIn lists the pods of namespace on every node.
	PodsIn(namespace string) []*corev1.Pod
}

// Tenancy decides whether a pod may use the networks it asks for, the same way the
// admission webhook does.
type Tenancy struct {
	directory     func() *tenants.Directory
	cache         TenancyCache
	namespaceWait time.Duration
}

// NewTenancy returns the ADD-time tenancy check over the given directory and caches.
func NewTenancy(directory func() *tenants.Directory, c TenancyCache) *Tenancy {
	return &Tenancy{directory: directory, cache: c, namespaceWait: 2 * time.Second}
}

// Check returns a *tenants.Denial when the pod may not have the attachments in specs: a
// NAD that is not the tenant's or asks of the node what the Tenant does not grant, a host
// port, VFs beyond the tenant's pools or quota, NET_ADMIN.
func (t *Tenancy) Check(pod *corev1.Pod, specs []delegate.Spec) error {
	req := tenants.PodRequest{Namespace: pod.Namespace, Name: pod.Name, NetAdmin: tenants.NetAdminReason(&pod.Spec),
		HostPorts: tenants.ContainerHostPorts(&pod.Spec)}
	_, overridden := pod.Annotations[npwg.DefaultNetworkAnnot]
	for _, s := range specs {
		// The cluster's default network is everyone's; a default network the pod picked
		// itself is checked like any other NAD.
		if (s.Default && !overridden) || s.NetworkUID == "" {
			continue
		}
		ns, name, ok := strings.Cut(s.Network, "/")
		if !ok {
			continue
		}
		n := tenants.Network{Ref: tenants.NetworkRef{Namespace: ns, Name: name}}
		nad, err := t.cache.NAD(ns, name)
		switch {
		case err == nil:
			if n, err = tenants.NetworkOf(nad); err != nil {
				return fmt.Errorf("pod %s/%s: network %s: %w", pod.Namespace, pod.Name, s.Network, err)
			}
		case !apierrors.IsNotFound(err):
			return fmt.Errorf("pod %s/%s: network %s: %w", pod.Namespace, pod.Name, s.Network, err)
		}
		req.Networks = append(req.Networks, n)
		if pms, ok := s.CapabilityArgs["portMappings"].([]npwg.PortMapping); ok && !s.Default {
			for i, pm := range pms {
				req.HostPorts = append(req.HostPorts, tenants.HostPort{
					Field: fmt.Sprintf("%s (network %s) portMappings[%d].hostPort", nadv1.NetworkAttachmentAnnot, s.Network, i),
					Port:  pm.HostPort, Protocol: strings.ToLower(pm.Protocol)})
			}
		}
	}
	// Judging a namespace the cache has not seen would treat it as the platform's: wait a
	// moment for the cache, which saw the namespace created before the pod.
	dir := t.directory()
	for deadline := time.Now().Add(t.namespaceWait); !dir.Known(pod.Namespace); dir = t.directory() {
		if time.Now().After(deadline) {
			return fmt.Errorf("pod %s/%s: namespace %s is not in loomd's cache yet", pod.Namespace, pod.Name, pod.Namespace)
		}
		time.Sleep(20 * time.Millisecond)
	}
	isVF, err := t.vfResources(dir)
	if err != nil {
		return fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	req.VFs = tenants.DeviceRequests(&pod.Spec, isVF)
	if ten, ok := dir.TenantOf(pod.Namespace); ok && len(req.VFs) > 0 && ten.VFQuota >= 0 {
		req.HeldVFs = tenants.HeldVFs(t.earlierPods(dir, ten.Name, pod), isVF)
	}
	return dir.CheckPod(req)
}

// vfResources says which resource names are SR-IOV pools: those a Tenant lists and those a
// NAD names in its resourceName annotation.
func (t *Tenancy) vfResources(dir *tenants.Directory) (func(string) bool, error) {
	pools := map[string]bool{}
	for _, p := range dir.SRIOVPools() {
		pools[p] = true
	}
	nads, err := t.cache.NADs()
	if err != nil {
		return nil, fmt.Errorf("list NetworkAttachmentDefinitions: %w", err)
	}
	for _, n := range nads {
		if r := n.Annotations[tenants.ResourceNameAnnotation]; r != "" {
			pools[r] = true
		}
	}
	return func(name string) bool { return pools[name] }, nil
}

// earlierPods returns the pods of tenant tn created before pod (by creation time, then
// namespace and name): those whose VFs count against the quota before pod's own.
func (t *Tenancy) earlierPods(dir *tenants.Directory, tn tenants.Name, pod *corev1.Pod) []*corev1.Pod {
	var out []*corev1.Pod
	for _, ns := range dir.Members(tn) {
		for _, p := range t.cache.PodsIn(ns) {
			if p.UID != pod.UID && createdBefore(p, pod) {
				out = append(out, p)
			}
		}
	}
	return out
}

func createdBefore(a, b *corev1.Pod) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	return a.Name < b.Name
}

// slimPod keeps of a pod what the VF count needs: its identity, creation time, phase and
// its containers' extended resources (names with a domain, such as loom.dev/sriov_net_a).
func slimPod(o any) (any, error) {
	p, ok := o.(*corev1.Pod)
	if !ok {
		return o, nil
	}
	slim := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
			CreationTimestamp: p.CreationTimestamp, DeletionTimestamp: p.DeletionTimestamp},
		Status: corev1.PodStatus{Phase: p.Status.Phase},
	}
	slim.Spec.Containers = tenants.DeviceContainers(p.Spec.Containers)
	slim.Spec.InitContainers = tenants.DeviceContainers(p.Spec.InitContainers)
	return slim, nil
}

// podsIn lists the pods of namespace from an indexer with the namespace index.
func podsIn(idx cache.Indexer, namespace string) []*corev1.Pod {
	objs, _ := idx.ByIndex(cache.NamespaceIndex, namespace)
	out := make([]*corev1.Pod, 0, len(objs))
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok {
			out = append(out, p)
		}
	}
	return out
}

// tenancyError is the CNI error of a denied pod: the runtime shows it in the pod's events.
func tenancyError(err error) error {
	var d *tenants.Denial
	if errors.As(err, &d) {
		return types.NewError(types.ErrInvalidNetworkConfig, d.Error(), "")
	}
	return types.NewError(types.ErrTryAgainLater, err.Error(), "")
}
