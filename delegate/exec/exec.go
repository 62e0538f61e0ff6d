// Package exec is the attachment kind that runs any CNI plugin binary as a delegate, through
// libcni exactly as a container runtime would: the reference plugins (macvlan, bridge,
// host-local, ...) and third-party plugins alike. It holds no state of its own; libcni keeps
// each delegate's result in the cache directory, keyed by network, container and interface.
package exec

import (
	"context"
	"errors"
	"fmt"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/loom-cni/loom/delegate"
)

// CNI runs conflists through libcni.
type CNI struct {
	cni *libcni.CNIConfig
}

var (
	_ delegate.Attachment     = (*CNI)(nil)
	_ delegate.Collector      = (*CNI)(nil)
	_ delegate.StatusReporter = (*CNI)(nil)
)

// New returns a CNI attachment kind that finds plugins in binDirs and caches results in
// cacheDir. exec may be nil for the real process executor.
func New(binDirs []string, cacheDir string, exec invoke.Exec) *CNI {
	return &CNI{cni: libcni.NewCNIConfigWithCacheDir(binDirs, cacheDir, exec)}
}

// Add runs ADD for every plugin of the conflist.
func (c *CNI) Add(ctx context.Context, call delegate.Call) (types.Result, error) {
	list, err := conflist(call.Spec)
	if err != nil {
		return nil, err
	}
	return c.cni.AddNetworkList(ctx, list, runtimeConf(call))
}

// Check runs CHECK for every plugin of the conflist against the cached result. prev is what
// Add returned; libcni reads the same result from its cache.
func (c *CNI) Check(ctx context.Context, call delegate.Call, _ types.Result) error {
	list, err := conflist(call.Spec)
	if err != nil {
		return err
	}
	return c.cni.CheckNetworkList(ctx, list, runtimeConf(call))
}

// Del runs DEL for every plugin of the conflist in reverse order. The reference plugins treat
// a missing netns or an unknown container as already released.
func (c *CNI) Del(ctx context.Context, call delegate.Call, _ types.Result) error {
	list, err := conflist(call.Spec)
	if err != nil {
		return err
	}
	return c.cni.DelNetworkList(ctx, list, runtimeConf(call))
}

// GC forwards GC to every distinct network in known, naming as valid the live attachments of
// that network. Plugins older than CNI 1.1 are skipped by libcni.
func (c *CNI) GC(ctx context.Context, known []delegate.Spec, live []delegate.Call) error {
	lists := map[string]*libcni.NetworkConfigList{}
	var order []string
	for _, s := range known {
		list, err := conflist(s)
		if err != nil {
			return err
		}
		if _, seen := lists[list.Name]; !seen {
			lists[list.Name] = list
			order = append(order, list.Name)
		}
	}
	valid := map[string][]types.GCAttachment{}
	for _, call := range live {
		list, err := conflist(call.Spec)
		if err != nil {
			return err
		}
		valid[list.Name] = append(valid[list.Name], types.GCAttachment{ContainerID: string(call.ContainerID), IfName: call.Ifname})
	}
	var errs []error
	for _, name := range order {
		if err := c.cni.GCNetworkList(ctx, lists[name], &libcni.GCArgs{ValidAttachments: valid[name]}); err != nil {
			errs = append(errs, fmt.Errorf("gc network %q: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// Status asks every plugin of the conflist whether it is ready.
func (c *CNI) Status(ctx context.Context, s delegate.Spec) error {
	list, err := conflist(s)
	if err != nil {
		return err
	}
	return c.cni.GetStatusNetworkList(ctx, list)
}

func conflist(s delegate.Spec) (*libcni.NetworkConfigList, error) {
	list, err := libcni.NetworkConfFromBytes(s.Config)
	if err != nil {
		return nil, fmt.Errorf("parse configuration of network %q: %w", s.Network, err)
	}
	return list, nil
}

// runtimeConf builds the runtime configuration a container runtime would pass, with the
// Kubernetes pod arguments Multus-compatible delegates expect in CNI_ARGS.
func runtimeConf(call delegate.Call) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: string(call.ContainerID),
		NetNS:       call.Netns,
		IfName:      call.Ifname,
		Args: [][2]string{
			{"IgnoreUnknown", "true"},
			{"K8S_POD_NAMESPACE", call.Pod.Namespace},
			{"K8S_POD_NAME", call.Pod.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", string(call.ContainerID)},
			{"K8S_POD_UID", string(call.Pod.UID)},
		},
		CapabilityArgs: call.CapabilityArgs,
	}
}
