package podresources

import (
	"reflect"
	"testing"

	podresourcesapi "k8s.io/kubelet/pkg/apis/podresources/v1"
)

// TestDevicesOnSeveralNodes checks that a device the kubelet lists once per NUMA node counts
// once.
func TestDevicesOnSeveralNodes(t *testing.T) {
	numa := func(id int64) *podresourcesapi.TopologyInfo {
		return &podresourcesapi.TopologyInfo{Nodes: []*podresourcesapi.NUMANode{{ID: id}}}
	}
	pod := &podresourcesapi.PodResources{Containers: []*podresourcesapi.ContainerResources{
		{Name: "a", Devices: []*podresourcesapi.ContainerDevices{
			{ResourceName: "r", DeviceIds: []string{"d2"}, Topology: numa(0)},
			{ResourceName: "r", DeviceIds: []string{"d2"}, Topology: numa(1)},
			{ResourceName: "r", DeviceIds: []string{"d1"}},
		}},
		{Name: "b", Devices: []*podresourcesapi.ContainerDevices{{ResourceName: "s", DeviceIds: []string{"e1", "e0"}}}},
		{Name: "c"},
	}}
	want := map[string][]string{"r": {"d1", "d2"}, "s": {"e0", "e1"}}
	if got := devices(pod); !reflect.DeepEqual(got, want) {
		t.Errorf("devices = %v, want %v", got, want)
	}
	if got := devices(&podresourcesapi.PodResources{}); got == nil || len(got) != 0 {
		t.Errorf("devices of a pod without any = %#v, want an empty map", got)
	}
}
