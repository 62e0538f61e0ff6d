package fakekubelet

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	podresourcesapi "k8s.io/kubelet/pkg/apis/podresources/v1"
)

// podResources is the kubelet's PodResources API v1, answered from the recorded allocations.
type podResources struct {
	podresourcesapi.UnimplementedPodResourcesListerServer
	k *Kubelet
}

var _ podresourcesapi.PodResourcesListerServer = podResources{}

// List returns every pod that holds devices.
func (s podResources) List(context.Context, *podresourcesapi.ListPodResourcesRequest) (*podresourcesapi.ListPodResourcesResponse, error) {
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	pods := make([]*podDevices, 0, len(s.k.pods))
	for _, pd := range s.k.pods {
		pods = append(pods, pd)
	}
	slices.SortFunc(pods, func(a, b *podDevices) int {
		return strings.Compare(a.pod.Namespace+"/"+a.pod.Name, b.pod.Namespace+"/"+b.pod.Name)
	})
	resp := &podresourcesapi.ListPodResourcesResponse{}
	for _, pd := range pods {
		resp.PodResources = append(resp.PodResources, s.k.podResourcesLocked(pd))
	}
	return resp, nil
}

// Get returns the devices of one pod. Like the kubelet's, it fails with code Unknown for a
// pod it does not know.
func (s podResources) Get(_ context.Context, req *podresourcesapi.GetPodResourcesRequest) (*podresourcesapi.GetPodResourcesResponse, error) {
	switch s.k.cfg.PodResourcesGet {
	case GetDisabled:
		return nil, errors.New("PodResources API Get method disabled")
	case GetUnimplemented:
		return nil, status.Error(codes.Unimplemented, "method Get not implemented")
	}
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	var found *podDevices
	for _, pd := range s.k.pods {
		if pd.pod.Namespace == req.PodNamespace && pd.pod.Name == req.PodName && (found == nil || pd.seq > found.seq) {
			found = pd
		}
	}
	if found == nil {
		return nil, fmt.Errorf("pod %s in namespace %s not found", req.PodName, req.PodNamespace)
	}
	return &podresourcesapi.GetPodResourcesResponse{PodResources: s.k.podResourcesLocked(found)}, nil
}

// GetAllocatableResources returns every healthy device, as the kubelet does.
func (s podResources) GetAllocatableResources(context.Context, *podresourcesapi.AllocatableResourcesRequest) (*podresourcesapi.AllocatableResourcesResponse, error) {
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	names := make([]string, 0, len(s.k.resources))
	for name := range s.k.resources {
		names = append(names, name)
	}
	slices.Sort(names)
	resp := &podresourcesapi.AllocatableResourcesResponse{}
	for _, name := range names {
		r := s.k.resources[name]
		for _, d := range r.devices {
			if d.Health == pluginapi.Healthy {
				resp.Devices = append(resp.Devices, containerDevices(name, d.ID, r.numa[d.ID])...)
			}
		}
	}
	return resp, nil
}

// podResourcesLocked renders pd: containers in the order they first got devices, one
// ContainerDevices per device and NUMA node as the kubelet writes them. k.mu must be held.
func (k *Kubelet) podResourcesLocked(pd *podDevices) *podresourcesapi.PodResources {
	out := &podresourcesapi.PodResources{Namespace: pd.pod.Namespace, Name: pd.pod.Name}
	containers := map[string]*podresourcesapi.ContainerResources{}
	for _, a := range pd.allocs {
		c, ok := containers[a.container]
		if !ok {
			c = &podresourcesapi.ContainerResources{Name: a.container}
			containers[a.container] = c
			out.Containers = append(out.Containers, c)
		}
		for _, id := range a.ids {
			numa := a.numa[id]
			if r, ok := k.resources[a.resource]; ok && len(numa) == 0 {
				numa = r.numa[id]
			}
			c.Devices = append(c.Devices, containerDevices(a.resource, id, numa)...)
		}
	}
	return out
}

// containerDevices is how the kubelet reports one device: an entry per NUMA node, or one
// without topology.
func containerDevices(resource, id string, numa []int64) []*podresourcesapi.ContainerDevices {
	if len(numa) == 0 {
		return []*podresourcesapi.ContainerDevices{{ResourceName: resource, DeviceIds: []string{id}}}
	}
	out := make([]*podresourcesapi.ContainerDevices, 0, len(numa))
	for _, n := range numa {
		out = append(out, &podresourcesapi.ContainerDevices{ResourceName: resource, DeviceIds: []string{id},
			Topology: &podresourcesapi.TopologyInfo{Nodes: []*podresourcesapi.NUMANode{{ID: n}}}})
	}
	return out
}
