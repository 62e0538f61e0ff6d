package source

import (
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/cache"
)

// trimmed makes an informer keep only what the source reads of its objects: a node's cache
// of every pod and Node of the cluster is otherwise most of loomd's memory.
func trimmed(inf cache.SharedIndexInformer, trim func(any) any) cache.SharedIndexInformer {
	_ = inf.SetTransform(func(o any) (any, error) { return trim(o), nil })
	return inf
}

func trimPod(o any) any {
	pod, ok := o.(*corev1.Pod)
	if !ok {
		return o
	}
	out := &corev1.Pod{ObjectMeta: trimMeta(pod.ObjectMeta, nadv1.NetworkStatusAnnot)}
	out.Labels = pod.Labels
	out.Spec.NodeName, out.Spec.HostNetwork = pod.Spec.NodeName, pod.Spec.HostNetwork
	for _, c := range pod.Spec.Containers {
		var ports []corev1.ContainerPort
		for _, p := range c.Ports {
			if p.Name != "" {
				ports = append(ports, corev1.ContainerPort{Name: p.Name, ContainerPort: p.ContainerPort, Protocol: p.Protocol})
			}
		}
		out.Spec.Containers = append(out.Spec.Containers, corev1.Container{Ports: ports})
	}
	out.Status.Phase, out.Status.PodIPs = pod.Status.Phase, pod.Status.PodIPs
	return out
}

func trimNamespace(o any) any {
	ns, ok := o.(*corev1.Namespace)
	if !ok {
		return o
	}
	out := &corev1.Namespace{ObjectMeta: trimMeta(ns.ObjectMeta)}
	out.Labels = ns.Labels
	return out
}

func (s *ClusterSource) trimNode(o any) any {
	node, ok := o.(*corev1.Node)
	if !ok {
		return o
	}
	return &corev1.Node{ObjectMeta: trimMeta(node.ObjectMeta, s.cfg.HostAddressAnnotation)}
}

// trimBlock keeps an IPBlock's name, tenant label and CIDR.
func trimBlock(o any) any {
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		return o
	}
	cidr, _, _ := unstructured.NestedString(u.Object, "spec", "cidr")
	out := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": u.GetAPIVersion(), "kind": u.GetKind(),
		"spec": map[string]any{"cidr": cidr},
	}}
	out.SetName(u.GetName())
	out.SetUID(u.GetUID())
	out.SetResourceVersion(u.GetResourceVersion())
	if t, ok := u.GetLabels()[tenantLabel]; ok {
		out.SetLabels(map[string]string{tenantLabel: t})
	}
	return out
}

// trimMeta keeps an object's identity and the annotations named.
func trimMeta(m metav1.ObjectMeta, annotations ...string) metav1.ObjectMeta {
	out := metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion, Generation: m.Generation}
	for _, k := range annotations {
		if v, ok := m.Annotations[k]; ok && k != "" {
			if out.Annotations == nil {
				out.Annotations = map[string]string{}
			}
			out.Annotations[k] = v
		}
	}
	return out
}
