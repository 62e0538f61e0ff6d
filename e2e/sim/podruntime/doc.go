// Package podruntime plays kubelet and containerd on one simulated node. It registers the
// Node, and for each pod bound to the node creates a sandbox: a network namespace pinned
// under the node's /run/netns, attached by calling CNI ADD through libcni with the
// arguments, capability arguments and cache directory that containerd's CRI plugin uses,
// with the lexicographically first configuration in the node's CNI configuration directory.
// It then reports the pod Running (or Failed with reason FailedCreatePodSandBox). When a pod
// is deleted it calls DEL until that succeeds, removes the namespace and deletes the pod
// object. No container runs: a pod is its network namespace.
//
// Each sandbox has a record on disk (Store), written before ADD, so a restarted runtime
// reconciles: sandboxes whose pod is gone are torn down, live ones kept. A periodic CNI GC
// names every recorded sandbox as a valid attachment. One runtime in a cluster may also play
// the scheduler, binding unscheduled pods to Ready nodes in turn.
package podruntime
