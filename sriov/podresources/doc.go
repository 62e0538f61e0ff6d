// Package podresources is loomd's client of the kubelet's PodResources API v1: it tells which
// devices of which extended resources the kubelet allocated to a pod, so that an attachment
// whose network names a resource (NPWG device-info spec: the NAD annotation
// k8s.v1.cni.cncf.io/resourceName) is given one of the pod's own devices.
//
// # Design notes
//
// The connection is made on first use and kept; gRPC reconnects it when the kubelet restarts.
// The first call on a connection the kubelet closed fails with Unavailable, so Devices tries
// once more on that code. Reconnection backs off to one second at most, not gRPC's default two minutes: the socket is
// local, and a pod waiting for its networks should not wait for a backoff timer after the
// kubelet is back. Every call is bounded by a timeout even when the caller's context is not.
//
// Get asks for one pod, but kubelets before 1.34 serve it only behind the
// KubeletPodResourcesGet feature gate: without the gate they fail it with code Unknown (not
// Unimplemented), and before 1.27 they do not have it at all. Devices therefore falls back to
// List when Get fails with Unimplemented or Unknown, and stops asking Get once the kubelet has
// shown it cannot answer it (Unimplemented, or Unknown for a pod that List then finds). No
// error text is matched.
package podresources
