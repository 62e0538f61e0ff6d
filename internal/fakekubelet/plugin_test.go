package fakekubelet_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// testPlugin is a device plugin whose devices, options and preferences a test sets, and which
// records the allocations asked of it.
type testPlugin struct {
	pluginapi.UnimplementedDevicePluginServer

	resource string
	dir      string
	endpoint string
	options  *pluginapi.DevicePluginOptions
	// prefer answers GetPreferredAllocation for one container; nil: the last devices offered.
	prefer func(available []string, size int) []string

	mu        sync.Mutex
	devices   []*pluginapi.Device
	changed   chan struct{}
	allocated [][]string
	server    *grpc.Server
	done      chan struct{}
}

// startPlugin serves a plugin of resource in dir with devices, and stops it when the test ends.
func startPlugin(t *testing.T, dir, resource string, preferred bool, devices ...*pluginapi.Device) *testPlugin {
	t.Helper()
	p := &testPlugin{
		resource: resource,
		dir:      dir,
		endpoint: strings.ReplaceAll(resource, "/", "_") + ".sock",
		options:  &pluginapi.DevicePluginOptions{GetPreferredAllocationAvailable: preferred},
		devices:  devices,
		changed:  make(chan struct{}),
	}
	p.serve(t)
	t.Cleanup(p.stop)
	return p
}

func (p *testPlugin) serve(t *testing.T) {
	t.Helper()
	path := filepath.Join(p.dir, p.endpoint)
	_ = os.Remove(path)
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatalf("listen on %s: %v", path, err)
	}
	server := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(server, p)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = server.Serve(lis)
	}()
	p.mu.Lock()
	p.server, p.done = server, done
	p.mu.Unlock()
}

// stop ends the plugin's server and every stream.
func (p *testPlugin) stop() {
	p.mu.Lock()
	server, done := p.server, p.done
	p.server = nil
	p.mu.Unlock()
	if server != nil {
		server.Stop()
		<-done
	}
}

// register registers the plugin with the kubelet in its directory.
func (p *testPlugin) register(ctx context.Context) error {
	conn, err := grpc.NewClient("unix://"+filepath.Join(p.dir, "kubelet.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version: pluginapi.Version, Endpoint: p.endpoint, ResourceName: p.resource, Options: p.options,
	})
	return err
}

// set replaces the plugin's devices; open streams send them.
func (p *testPlugin) set(devices ...*pluginapi.Device) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.devices = devices
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *testPlugin) requests() [][]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.allocated)
}

func (p *testPlugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return p.options, nil
}

func (p *testPlugin) ListAndWatch(_ *pluginapi.Empty, stream grpc.ServerStreamingServer[pluginapi.ListAndWatchResponse]) error {
	for {
		p.mu.Lock()
		devices, changed := p.devices, p.changed
		p.mu.Unlock()
		if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: devices}); err != nil {
			return err
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-changed:
		}
	}
}

func (p *testPlugin) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	resp := &pluginapi.AllocateResponse{}
	for _, c := range req.ContainerRequests {
		for _, id := range c.DevicesIds {
			if !slices.ContainsFunc(p.devices, func(d *pluginapi.Device) bool { return d.ID == id }) {
				return nil, errors.New("no device " + id)
			}
		}
		p.allocated = append(p.allocated, slices.Clone(c.DevicesIds))
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerAllocateResponse{
			Envs: map[string]string{"DEVICES": strings.Join(c.DevicesIds, ",")},
		})
	}
	return resp, nil
}

func (p *testPlugin) GetPreferredAllocation(_ context.Context, req *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	resp := &pluginapi.PreferredAllocationResponse{}
	for _, c := range req.ContainerRequests {
		var ids []string
		if p.prefer != nil {
			ids = p.prefer(c.AvailableDeviceIDs, int(c.AllocationSize))
		} else {
			ids = c.AvailableDeviceIDs[len(c.AvailableDeviceIDs)-int(c.AllocationSize):]
		}
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerPreferredAllocationResponse{DeviceIDs: ids})
	}
	return resp, nil
}

// device is a plugin device on numa (-1: none).
func device(id, health string, numa int64) *pluginapi.Device {
	d := &pluginapi.Device{ID: id, Health: health}
	if numa >= 0 {
		d.Topology = &pluginapi.TopologyInfo{Nodes: []*pluginapi.NUMANode{{ID: numa}}}
	}
	return d
}
