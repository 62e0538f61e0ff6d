package daemon

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	corev1 "k8s.io/api/core/v1"

	"github.com/loom-cni/loom/delegate"
	"github.com/loom-cni/loom/delegate/npwg"
)

// DeviceLister tells which devices the kubelet allocated to a pod: resource name → device
// IDs, over all its containers. The kubelet's PodResources API is the real one.
type DeviceLister interface {
	Devices(ctx context.Context, namespace, name string) (map[string][]string, error)
}

// SetDevices makes ADD give every attachment whose NetworkAttachmentDefinition names a
// resource one of the devices the kubelet allocated to the pod.
func (s *Service) SetDevices(d DeviceLister) { s.devices = d }

// assignDevices puts a device into the configuration of every spec that names a resource.
// The mapping is stable and documented: the attachments naming resource R, in the order the
// pod's annotation lists them, take R's devices in ascending device ID order. A pod given
// fewer devices than it has such attachments is refused; a device left over stays unused.
func assignDevices(pod *corev1.Pod, specs []delegate.Spec, allocated map[string][]string) ([]delegate.Spec, error) {
	next := map[string]int{}
	out := slices.Clone(specs)
	for i, s := range out {
		if s.Resource == "" {
			continue
		}
		ids := slices.Sorted(slices.Values(allocated[s.Resource]))
		n := next[s.Resource]
		if n >= len(ids) {
			want := 0
			var nets []string
			for _, o := range specs {
				if o.Resource == s.Resource {
					want++
					nets = append(nets, o.Network)
				}
			}
			return nil, fmt.Errorf("pod %s/%s attaches %d network(s) of resource %s (%s) but the kubelet allocated it %d %s device(s): "+
				"request %s: %d in a container's resources.limits", pod.Namespace, pod.Name, want, s.Resource, strings.Join(nets, ", "),
				len(ids), s.Resource, s.Resource, want)
		}
		next[s.Resource] = n + 1
		conf, err := npwg.WithDeviceID(s.Config, ids[n])
		if err != nil {
			return nil, fmt.Errorf("network %s: %w", s.Network, err)
		}
		out[i].Config = conf
	}
	return out, nil
}

// withDevices returns specs with their devices, asking the kubelet only when one needs one.
// An error it cannot blame on the pod (the kubelet did not answer) asks the runtime to retry.
func (s *Service) withDevices(ctx context.Context, pod *corev1.Pod, specs []delegate.Spec) ([]delegate.Spec, error) {
	if !slices.ContainsFunc(specs, func(s delegate.Spec) bool { return s.Resource != "" }) {
		return specs, nil
	}
	if s.devices == nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("pod %s/%s: a network names a device resource, "+
			"but loomd has no kubelet PodResources socket configured (sriov.podResourcesSocket)", pod.Namespace, pod.Name), "")
	}
	allocated, err := s.devices.Devices(ctx, pod.Namespace, pod.Name)
	if err != nil {
		return nil, types.NewError(types.ErrTryAgainLater, fmt.Sprintf("pod %s/%s: read the devices the kubelet allocated to it: %v", pod.Namespace, pod.Name, err), "")
	}
	specs, err = assignDevices(pod, specs, allocated)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	return specs, nil
}
