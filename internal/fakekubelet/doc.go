// Package fakekubelet plays the parts of the kubelet that device plugins and their consumers
// talk to: the device manager's registration service on kubelet.sock, the device manager
// itself (it dials each registered plugin back, keeps its ListAndWatch stream open and hands
// devices to pods through the plugin's Allocate), and the PodResources API v1 that reports
// which pod holds which device. It speaks the real gRPC APIs (k8s.io/kubelet device plugin
// v1beta1 and pod resources v1), so a plugin or a client tested against it talks to a kubelet
// the same way. It serves the device plugin tests and the simulated cluster's pod runtime,
// which plays the kubelet of its node.
//
// # Design notes
//
// Registration follows the kubelet's device manager: Register checks the API version and
// that the resource is an extended resource name, dials the plugin's endpoint (a file name in
// the plugin directory), asks GetDevicePluginOptions, and only then answers; the
// ListAndWatch stream runs in the background. A second registration of a resource replaces
// the first plugin. When a plugin's stream ends, its devices stay listed but unhealthy, as the
// kubelet keeps them until its grace period ends, so pods asking for them are refused rather
// than ignored.
//
// Allocate picks n healthy devices no pod holds, asks the plugin's GetPreferredAllocation
// first when the plugin offers it (and uses the answer if it is n of the offered devices),
// then calls Allocate and records the allocation. Allocations are serialized, as pod admission
// is in the kubelet, so two pods never get the same device.
//
// The kubelet checkpoints its allocations, so they survive Restart, which otherwise behaves
// like a kubelet restart: kubelet.sock is served anew, the sockets in the plugin directory are
// removed, every plugin connection is dropped and the devices are forgotten until the plugins
// register again. Stop forgets everything; a caller that keeps its own record of allocations
// (the simulated pod runtime does) gives them back to a new fake kubelet with Restore.
//
// PodResources List, Get and GetAllocatableResources answer from the recorded allocations and
// the devices listed, in the kubelet's shapes: one ContainerDevices per device and NUMA node.
// Get can be made to fail as older kubelets do (Config.PodResourcesGet), to test clients'
// fallback to List.
package fakekubelet
