package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/loom-cni/loom/daemon"
	"github.com/loom-cni/loom/sriov/attach"
	"github.com/loom-cni/loom/sriov/deviceplugin"
	"github.com/loom-cni/loom/sriov/podresources"
	"github.com/loom-cni/loom/sriov/vf"
)

// sriovState tells readiness whether the node's device plugins serve: a node must not start
// pods that ask for VFs before the kubelet can hand them out.
type sriovState struct {
	mgr *deviceplugin.Manager // nil: no pools, no device plugins

	mu      sync.Mutex
	stopped error // why Run returned early
}

func (s *sriovState) err() error {
	if s == nil || s.mgr == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped != nil {
		return s.stopped
	}
	if s.mgr.Pools() == nil {
		return errors.New("waiting for the SR-IOV device plugins to start")
	}
	return nil
}

// startDevicePlugins starts the device plugin of every configured pool. A failure to start
// them (sysfs unreadable, a plugin that cannot serve) ends loomd with its error on errc.
func startDevicePlugins(ctx context.Context, cfg daemon.SRIOVConfig, log *slog.Logger, errc chan<- error) *sriovState {
	pools, _ := cfg.ParsedPools() // validated with the configuration
	st := &sriovState{}
	if len(pools) == 0 {
		return st
	}
	st.mgr = deviceplugin.NewManager(deviceplugin.ManagerConfig{
		Root: cfg.SysfsRoot, Pools: pools, Dir: cfg.DevicePluginDir, DevInfoDir: cfg.DevInfoDir,
		Interval: cfg.RescanInterval.Duration, Logger: log.With("component", "sriov"),
	})
	go func() {
		if err := st.mgr.Run(ctx); err != nil {
			st.mu.Lock()
			st.stopped = err
			st.mu.Unlock()
			errc <- err
		}
	}()
	return st
}

// vfAttachment is the loom-sriov network type, writing VF settings to the PFs through
// netlink, or recording them in a file on a node without SR-IOV hardware.
func vfAttachment(cfg daemon.Config, log *slog.Logger) *attach.Attachment {
	pf := vf.Netlink()
	if f := cfg.SRIOV.RecordFile(); f != "" {
		pf = vf.NewRecorder(f)
	}
	return attach.New(attach.Config{
		SysfsRoot: cfg.SRIOV.SysfsRoot, PF: pf, StateDir: cfg.SRIOV.StateDir,
		CNIPath: []string{cfg.CNIBinDir}, Logger: log.With("component", "sriov"),
	})
}

// kubeletDevices reads pods' devices from the kubelet's PodResources API. A pod the kubelet
// lists no devices for holds none, which ADD then reports as the pod's mistake.
type kubeletDevices struct{ c *podresources.Client }

var _ daemon.DeviceLister = kubeletDevices{}

func (k kubeletDevices) Devices(ctx context.Context, namespace, name string) (map[string][]string, error) {
	devs, err := k.c.Devices(ctx, namespace, name)
	if errors.Is(err, podresources.ErrPodNotFound) {
		return map[string][]string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kubelet PodResources API: %w", err)
	}
	return devs, nil
}
