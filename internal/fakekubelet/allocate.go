package fakekubelet

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/types"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// callTimeout bounds each call to a plugin during Allocate.
const callTimeout = 10 * time.Second

var (
	// ErrNoPlugin is Allocate's error when no plugin serves the resource, or its plugin is gone.
	ErrNoPlugin = errors.New("no device plugin connected")
	// ErrNotEnoughDevices is Allocate's error when fewer healthy devices are free than asked.
	ErrNotEnoughDevices = errors.New("not enough healthy free devices")
)

// podDevices are the devices of one pod.
type podDevices struct {
	pod    Pod
	seq    uint64 // when the pod first got devices, to prefer the newest of two same-named pods
	allocs []allocation
}

// allocation is the devices of one resource one container holds.
type allocation struct {
	container, resource string
	ids                 []string
	numa                map[string][]int64 // the devices' NUMA nodes when allocated
	response            *pluginapi.ContainerAllocateResponse
}

// Allocate gives container of pod n healthy devices of resource that no pod holds, through
// the resource's plugin, and records them. It returns the device IDs, in the order the
// plugin preferred them (or by ID), and the plugin's answer for the container. A container
// that already holds devices of resource gets the same answer again when n is the same.
func (k *Kubelet) Allocate(ctx context.Context, pod Pod, container, resource string, n int) ([]string, *pluginapi.ContainerAllocateResponse, error) {
	what := fmt.Sprintf("allocate %d %s to pod %s/%s container %s", n, resource, pod.Namespace, pod.Name, container)
	if n <= 0 || pod.UID == "" || container == "" {
		return nil, nil, fmt.Errorf("%s: want n > 0, a pod UID and a container name", what)
	}
	k.allocating.Lock()
	defer k.allocating.Unlock()

	k.mu.Lock()
	if a, ok := k.allocationLocked(pod.UID, container, resource); ok {
		k.mu.Unlock()
		if len(a.ids) != n {
			return nil, nil, fmt.Errorf("%s: it already holds %d", what, len(a.ids))
		}
		return slices.Clone(a.ids), proto.Clone(a.response).(*pluginapi.ContainerAllocateResponse), nil
	}
	r, ok := k.resources[resource]
	if !ok || r.plugin == nil {
		k.mu.Unlock()
		return nil, nil, fmt.Errorf("%s: %w for %s", what, ErrNoPlugin, resource)
	}
	p, free, total := r.plugin, k.freeLocked(resource, r), len(r.devices)
	numa := cloneNUMA(r.numa)
	k.mu.Unlock()

	if len(free) < n {
		return nil, nil, fmt.Errorf("%s: %w: %d of %d devices are healthy and free", what, ErrNotEnoughDevices, len(free), total)
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	ids := free[:n]
	if p.options.GetGetPreferredAllocationAvailable() {
		preferred, err := p.preferred(ctx, free, n)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", what, err)
		}
		if preferred != nil {
			ids = preferred
		} else {
			k.log.Warn("ignoring a preferred allocation that is not n of the free devices", "resource", resource, "pod", pod.Name, "namespace", pod.Namespace)
		}
	}
	resp, err := p.client.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: ids}}})
	if err != nil {
		return nil, nil, fmt.Errorf("%s: device plugin: %w", what, err)
	}
	if len(resp.ContainerResponses) != 1 {
		return nil, nil, fmt.Errorf("%s: device plugin answered for %d containers, want 1", what, len(resp.ContainerResponses))
	}
	a := allocation{container: container, resource: resource, ids: slices.Clone(ids), numa: map[string][]int64{}, response: resp.ContainerResponses[0]}
	for _, id := range ids {
		a.numa[id] = numa[id]
	}
	k.mu.Lock()
	k.recordLocked(pod, a)
	k.mu.Unlock()
	return slices.Clone(ids), proto.Clone(a.response).(*pluginapi.ContainerAllocateResponse), nil
}

// preferred asks the plugin which n of free it prefers; nil when its answer is not n
// distinct devices of free.
func (p *plugin) preferred(ctx context.Context, free []string, n int) ([]string, error) {
	resp, err := p.client.GetPreferredAllocation(ctx, &pluginapi.PreferredAllocationRequest{
		ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{{AvailableDeviceIDs: free, AllocationSize: int32(n)}},
	})
	if err != nil {
		return nil, fmt.Errorf("get preferred allocation: %w", err)
	}
	if len(resp.ContainerResponses) != 1 {
		return nil, nil
	}
	ids := resp.ContainerResponses[0].DeviceIDs
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] || !slices.Contains(free, id) {
			return nil, nil
		}
		seen[id] = true
	}
	if len(ids) != n {
		return nil, nil
	}
	return ids, nil
}

// Restore records that container of pod holds the devices ids of resource, without asking
// any plugin, as the kubelet restores its checkpoint: for a caller that keeps its own record
// of allocations across a Stop and Start.
func (k *Kubelet) Restore(pod Pod, container, resource string, ids []string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.allocationLocked(pod.UID, container, resource); ok {
		return
	}
	a := allocation{container: container, resource: resource, ids: slices.Clone(ids), numa: map[string][]int64{},
		response: &pluginapi.ContainerAllocateResponse{}}
	if r, ok := k.resources[resource]; ok {
		for _, id := range ids {
			a.numa[id] = r.numa[id]
		}
	}
	k.recordLocked(pod, a)
}

// Release frees every device of the pod. Releasing a pod that holds none does nothing.
func (k *Kubelet) Release(pod types.UID) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.pods, pod)
}

func (k *Kubelet) allocationLocked(pod types.UID, container, resource string) (allocation, bool) {
	pd, ok := k.pods[pod]
	if !ok {
		return allocation{}, false
	}
	for _, a := range pd.allocs {
		if a.container == container && a.resource == resource {
			return a, true
		}
	}
	return allocation{}, false
}

func (k *Kubelet) recordLocked(pod Pod, a allocation) {
	pd, ok := k.pods[pod.UID]
	if !ok {
		k.seq++
		pd = &podDevices{pod: pod, seq: k.seq}
		k.pods[pod.UID] = pd
	}
	pd.allocs = append(pd.allocs, a)
}

// freeLocked lists the healthy devices of r no pod holds, by ID.
func (k *Kubelet) freeLocked(name string, r *resource) []string {
	held := map[string]bool{}
	for _, pd := range k.pods {
		for _, a := range pd.allocs {
			if a.resource == name {
				for _, id := range a.ids {
					held[id] = true
				}
			}
		}
	}
	var free []string
	for _, d := range r.devices {
		if d.Health == pluginapi.Healthy && !held[d.ID] {
			free = append(free, d.ID)
		}
	}
	return free
}

// cloneNUMA copies m one level deep.
func cloneNUMA(m map[string][]int64) map[string][]int64 {
	c := make(map[string][]int64, len(m))
	for k, v := range m {
		c[k] = slices.Clone(v)
	}
	return c
}
