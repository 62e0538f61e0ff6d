package podruntime

import (
	"context"
	"fmt"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// DeviceManager plays the kubelet's device manager: it hands devices of the extended
// resources device plugins advertise to pods, and tells the PodResources API which pod holds
// which.
type DeviceManager interface {
	// Serves says a device plugin advertises resource.
	Serves(resource string) bool
	// Allocate gives container n devices of resource and returns their IDs.
	Allocate(ctx context.Context, pod *corev1.Pod, container, resource string, n int) ([]string, error)
	// Restore records devices a pod held before the runtime restarted.
	Restore(pod types.UID, namespace, name string, devices []ContainerDevices)
	// Release frees every device of the pod.
	Release(pod types.UID)
	// Capacity counts the devices of each resource plugins advertise, and the healthy ones:
	// the Node's capacity and allocatable.
	Capacity() (capacity, allocatable map[string]int)
}

// ContainerDevices are the devices of one resource allocated to one container.
type ContainerDevices struct {
	Container string   `json:"container"`
	Resource  string   `json:"resource"`
	IDs       []string `json:"ids"`
}

// allocateDevices asks the device manager for the devices every container of the pod
// limits itself to, as the kubelet does when it admits the pod. Resources no plugin serves
// are left to the scheduler's accounting, as the kubelet leaves extended resources it does
// not manage. On failure nothing stays allocated.
func (r *Runtime) allocateDevices(ctx context.Context, pod *corev1.Pod) ([]ContainerDevices, error) {
	if r.cfg.Devices == nil {
		return nil, nil
	}
	var out []ContainerDevices
	ok := false
	defer func() {
		if !ok && len(out) > 0 {
			r.cfg.Devices.Release(pod.UID)
		}
	}()
	for _, c := range pod.Spec.Containers {
		for _, name := range slices.Sorted(maps.Keys(c.Resources.Limits)) {
			q := c.Resources.Limits[name]
			if !r.cfg.Devices.Serves(string(name)) || q.Value() <= 0 {
				continue
			}
			ids, err := r.cfg.Devices.Allocate(ctx, pod, c.Name, string(name), int(q.Value()))
			if err != nil {
				return nil, fmt.Errorf("allocate %d %s to container %s: %w", q.Value(), name, c.Name, err)
			}
			out = append(out, ContainerDevices{Container: c.Name, Resource: string(name), IDs: ids})
		}
	}
	ok = true
	return out, nil
}

// releaseDevices frees the sandbox's devices once its networks are gone.
func (r *Runtime) releaseDevices(sb Sandbox) {
	if r.cfg.Devices != nil && len(sb.Devices) > 0 {
		r.cfg.Devices.Release(sb.UID)
	}
}

// restoreDevices tells the device manager what the recorded sandboxes hold.
func (r *Runtime) restoreDevices() error {
	if r.cfg.Devices == nil {
		return nil
	}
	sbs, err := r.store.List()
	if err != nil {
		return err
	}
	for _, sb := range sbs {
		if len(sb.Devices) > 0 {
			r.cfg.Devices.Restore(sb.UID, sb.Namespace, sb.Pod, sb.Devices)
		}
	}
	return nil
}
