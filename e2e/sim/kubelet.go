package sim

import (
	"context"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/loom-cni/loom/e2e/sim/podruntime"
	"github.com/loom-cni/loom/internal/fakekubelet"
)

// The node's kubelet paths, as the node sees them: where device plugins register, and the
// PodResources API socket loomd reads allocations from (loomd's defaults).
const (
	devicePluginDir    = "/var/lib/kubelet/device-plugins"
	podResourcesSocket = "/var/lib/kubelet/pod-resources/kubelet.sock"
)

// deviceManager is the pod runtime's device manager: the fake kubelet's registration,
// allocation and PodResources servers.
type deviceManager struct{ k *fakekubelet.Kubelet }

var _ podruntime.DeviceManager = deviceManager{}

func startDeviceManager(log *slog.Logger) (deviceManager, error) {
	k, err := fakekubelet.Start(fakekubelet.Config{PluginDir: devicePluginDir, PodResourcesSocket: podResourcesSocket,
		Logger: log.With("component", "device-manager")})
	if err != nil {
		return deviceManager{}, err
	}
	return deviceManager{k}, nil
}

func (d deviceManager) Serves(resource string) bool { return d.k.Serves(resource) }

func (d deviceManager) Allocate(ctx context.Context, pod *corev1.Pod, container, resource string, n int) ([]string, error) {
	ids, _, err := d.k.Allocate(ctx, fakekubelet.Pod{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID}, container, resource, n)
	return ids, err
}

func (d deviceManager) Restore(uid types.UID, namespace, name string, devices []podruntime.ContainerDevices) {
	for _, cd := range devices {
		d.k.Restore(fakekubelet.Pod{Namespace: namespace, Name: name, UID: uid}, cd.Container, cd.Resource, cd.IDs)
	}
}

func (d deviceManager) Release(uid types.UID) { d.k.Release(uid) }

func (d deviceManager) Capacity() (capacity, allocatable map[string]int) {
	capacity, allocatable = map[string]int{}, map[string]int{}
	for _, r := range d.k.Resources() {
		for _, dev := range d.k.Devices(r) {
			capacity[r]++
			if dev.Health == pluginapi.Healthy {
				allocatable[r]++
			}
		}
	}
	return capacity, allocatable
}
