package deviceplugin

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/loom-cni/loom/sriov"
)

// GetDevicePluginOptions tells the kubelet to ask for preferred allocations.
func (p *Plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return options(), nil
}

// ListAndWatch sends the pool's devices, then the new list after each Update, until the
// kubelet hangs up or the plugin stops.
func (p *Plugin) ListAndWatch(_ *pluginapi.Empty, stream grpc.ServerStreamingServer[pluginapi.ListAndWatchResponse]) error {
	for {
		p.mu.Lock()
		devices := p.devices()
		changed := p.changed
		p.mu.Unlock()
		if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: devices}); err != nil {
			return fmt.Errorf("send devices of %s: %w", p.resource, err)
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-changed:
		}
	}
}

// devices lists the VFs as kubelet devices, by address. p.mu must be held.
func (p *Plugin) devices() []*pluginapi.Device {
	devices := make([]*pluginapi.Device, 0, len(p.vfs))
	for _, vf := range p.vfs {
		d := &pluginapi.Device{ID: vf.Address, Health: health(vf)}
		if vf.NUMANode >= 0 {
			d.Topology = &pluginapi.TopologyInfo{Nodes: []*pluginapi.NUMANode{{ID: int64(vf.NUMANode)}}}
		}
		devices = append(devices, d)
	}
	sort.Slice(devices, func(i, j int) bool { return devices[i].ID < devices[j].ID })
	return devices
}

// Healthy says whether the plugin advertises vf as healthy: its link is up, or it is a DPDK
// VF, which has no netdev to judge by.
func Healthy(vf sriov.VF) bool { return vf.DPDK || vf.LinkUp }

// health is Healthy in the kubelet's words.
func health(vf sriov.VF) string {
	if Healthy(vf) {
		return pluginapi.Healthy
	}
	return pluginapi.Unhealthy
}

// Allocate hands each container its VFs' PCI addresses in PCIDEVICE_<RESOURCE>, and writes
// each VF's device-info file for the CNI side to read. A device the pool does not have is an
// error, and so is a file that cannot be written: a pod whose attachment could not find its
// device's information must not start.
func (p *Plugin) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, creq := range req.ContainerRequests {
		for _, id := range creq.DevicesIds {
			if _, ok := p.vfs[id]; !ok {
				return nil, status.Errorf(codes.InvalidArgument, "allocate %s: device %q is not in the pool", p.resource, id)
			}
		}
	}
	resp := &pluginapi.AllocateResponse{}
	for _, creq := range req.ContainerRequests {
		for _, id := range creq.DevicesIds {
			if err := writeDevInfo(p.devInfo, p.resource, p.vfs[id]); err != nil {
				return nil, status.Errorf(codes.Internal, "allocate %s: %v", p.resource, err)
			}
		}
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerAllocateResponse{
			Envs: map[string]string{envName(p.resource): strings.Join(creq.DevicesIds, ",")},
		})
	}
	return resp, nil
}

// GetPreferredAllocation picks, for each container, the devices it must have and then as many
// more as it asks for, keeping them on as few NUMA nodes as it can; see prefer.
func (p *Plugin) GetPreferredAllocation(_ context.Context, req *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	resp := &pluginapi.PreferredAllocationResponse{}
	for _, creq := range req.ContainerRequests {
		ids := prefer(p.numaOf, creq.AvailableDeviceIDs, creq.MustIncludeDeviceIDs, int(creq.AllocationSize))
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerPreferredAllocationResponse{DeviceIDs: ids})
	}
	return resp, nil
}

// numaOf is the NUMA node of the device id, -1 when unknown. p.mu must be held.
func (p *Plugin) numaOf(id string) int {
	if vf, ok := p.vfs[id]; ok {
		return vf.NUMANode
	}
	return -1
}

// PreStartContainer does nothing; the plugin does not ask for it.
func (p *Plugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}

// prefer returns must, then size-len(must) more of available, by address within a NUMA node.
// Nodes are taken in this order: those holding the most of must first, then those with enough
// devices for the rest on their own (fewest first, so larger nodes stay whole for larger
// requests), then the others, most devices first; ties go to the lower node number.
func prefer(numaOf func(string) int, available, must []string, size int) []string {
	chosen := make(map[string]bool, size)
	result := make([]string, 0, size)
	for _, id := range sortedCopy(must) {
		if !chosen[id] {
			chosen[id] = true
			result = append(result, id)
		}
	}
	need := size - len(result)
	if need <= 0 {
		return result
	}
	mustOn := map[int]int{}
	for _, id := range result {
		mustOn[numaOf(id)]++
	}
	byNode := map[int][]string{}
	for _, id := range sortedCopy(available) {
		if !chosen[id] {
			byNode[numaOf(id)] = append(byNode[numaOf(id)], id)
		}
	}
	nodes := make([]int, 0, len(byNode))
	for n := range byNode {
		nodes = append(nodes, n)
	}
	sort.Slice(nodes, func(i, j int) bool {
		a, b := nodes[i], nodes[j]
		if mustOn[a] != mustOn[b] {
			return mustOn[a] > mustOn[b]
		}
		fitA, fitB := len(byNode[a]) >= need, len(byNode[b]) >= need
		switch {
		case fitA != fitB:
			return fitA
		case fitA && len(byNode[a]) != len(byNode[b]):
			return len(byNode[a]) < len(byNode[b])
		case !fitA && len(byNode[a]) != len(byNode[b]):
			return len(byNode[a]) > len(byNode[b])
		}
		return a < b
	})
	for _, n := range nodes {
		for _, id := range byNode[n] {
			if need == 0 {
				return result
			}
			chosen[id] = true
			result = append(result, id)
			need--
		}
	}
	return result
}

func sortedCopy(ids []string) []string {
	s := append([]string(nil), ids...)
	sort.Strings(s)
	return s
}
