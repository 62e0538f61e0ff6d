package deviceplugin_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/loom-cni/loom/sriov"
	"github.com/loom-cni/loom/sriov/deviceplugin"
	"github.com/loom-cni/loom/sriov/sriovtest"
)

const resource sriov.ResourceName = "loom.dev/sriov_net_a"

// wait bounds every wait for the plugin; tests normally take milliseconds.
const wait = 2 * time.Second

// kubelet plays the kubelet's registration service on kubelet.sock in a directory, as the
// kubelet's device manager does, and records what plugins register.
type kubelet struct {
	pluginapi.UnimplementedRegistrationServer
	server   *grpc.Server
	path     string
	requests chan *pluginapi.RegisterRequest
}

func startKubelet(t *testing.T, dir string) *kubelet {
	t.Helper()
	k := &kubelet{
		server:   grpc.NewServer(),
		path:     filepath.Join(dir, "kubelet.sock"),
		requests: make(chan *pluginapi.RegisterRequest, 16),
	}
	lis, err := net.Listen("unix", k.path)
	if err != nil {
		t.Fatalf("listen on %s: %v", k.path, err)
	}
	pluginapi.RegisterRegistrationServer(k.server, k)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = k.server.Serve(lis)
	}()
	t.Cleanup(func() {
		k.stop()
		<-done
	})
	return k
}

// stop ends the kubelet and removes its socket, as a kubelet going down does.
func (k *kubelet) stop() {
	k.server.Stop()
	_ = os.Remove(k.path)
}

func (k *kubelet) Register(_ context.Context, req *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	k.requests <- req
	return &pluginapi.Empty{}, nil
}

// registered waits for the next registration.
func (k *kubelet) registered(t *testing.T) *pluginapi.RegisterRequest {
	t.Helper()
	select {
	case req := <-k.requests:
		return req
	case <-time.After(wait):
		t.Fatal("no plugin registered")
		return nil
	}
}

// shortDir returns a fresh directory with a path short enough for unix sockets, which
// t.TempDir's may not be.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "loomdp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// env is a plugin serving vfs, the fake kubelet it registered with, and a client dialed back
// on the endpoint it registered, as the kubelet does.
type env struct {
	dir     string
	plugin  *deviceplugin.Plugin
	kubelet *kubelet
	client  pluginapi.DevicePluginClient
	request *pluginapi.RegisterRequest
}

func start(t *testing.T, vfs []sriov.VF) *env {
	t.Helper()
	e := &env{dir: shortDir(t)}
	e.kubelet = startKubelet(t, e.dir)
	e.plugin = deviceplugin.New(deviceplugin.Config{
		Resource: resource,
		Dir:      e.dir,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Poll:     10 * time.Millisecond,
	}, vfs)
	if err := e.plugin.Start(); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		e.plugin.Stop()
		if _, err := os.Stat(e.plugin.Socket()); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("plugin socket %s left after Stop (stat: %v)", e.plugin.Socket(), err)
		}
	})
	e.request = e.kubelet.registered(t)
	e.client = dial(t, filepath.Join(e.dir, e.request.Endpoint))
	return e
}

func dial(t *testing.T, path string) pluginapi.DevicePluginClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return pluginapi.NewDevicePluginClient(conn)
}

func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return c
}

// scan reads tree's inventory.
func scan(t *testing.T, tree *sriovtest.Tree) []sriov.VF {
	t.Helper()
	inv, err := sriov.NewScanner(tree.Root).Scan()
	if err != nil {
		t.Fatalf("scan: %v", err)
	}
	return inv.VFs()
}

type device struct {
	id, health string
	numa       int64
}

func devices(t *testing.T, stream grpc.ServerStreamingClient[pluginapi.ListAndWatchResponse]) []device {
	t.Helper()
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("receive devices: %v", err)
	}
	var got []device
	for _, d := range resp.Devices {
		numa := int64(-1)
		if d.Topology != nil && len(d.Topology.Nodes) == 1 {
			numa = d.Topology.Nodes[0].ID
		}
		got = append(got, device{d.ID, d.Health, numa})
	}
	return got
}

func TestRegisterAndList(t *testing.T) {
	tree := sriovtest.New(t, sriovtest.Uniform(2, 2)...) // ens1f0: netdev VFs on NUMA 0; ens1f1: DPDK on 1
	e := start(t, scan(t, tree))

	if e.request.Version != pluginapi.Version || e.request.ResourceName != string(resource) ||
		!e.request.Options.GetGetPreferredAllocationAvailable() {
		t.Errorf("register request = %v", e.request)
	}
	if strings.Contains(e.request.Endpoint, "/") {
		t.Errorf("endpoint %q is not a file name in the plugin dir", e.request.Endpoint)
	}
	opts, err := e.client.GetDevicePluginOptions(ctx(t), &pluginapi.Empty{})
	if err != nil || !opts.GetPreferredAllocationAvailable {
		t.Errorf("GetDevicePluginOptions = %v, %v; want preferred allocation available", opts, err)
	}

	stream, err := e.client.ListAndWatch(ctx(t), &pluginapi.Empty{})
	if err != nil {
		t.Fatalf("ListAndWatch: %v", err)
	}
	want := []device{
		{tree.VFAddress("ens1f0", 0), pluginapi.Healthy, 0},
		{tree.VFAddress("ens1f0", 1), pluginapi.Healthy, 0},
		{tree.VFAddress("ens1f1", 0), pluginapi.Healthy, 1},
		{tree.VFAddress("ens1f1", 1), pluginapi.Healthy, 1},
	}
	if got := devices(t, stream); !reflect.DeepEqual(got, want) {
		t.Errorf("devices = %v, want %v", got, want)
	}
}

func TestUpdate(t *testing.T) {
	tree := sriovtest.New(t, sriovtest.Uniform(2, 2)...)
	e := start(t, scan(t, tree))
	stream, err := e.client.ListAndWatch(ctx(t), &pluginapi.Empty{})
	if err != nil {
		t.Fatalf("ListAndWatch: %v", err)
	}
	devices(t, stream)

	// A netdev VF whose link goes down is unhealthy; a DPDK VF has no link and stays healthy.
	if err := tree.SetOperstate("ens1f0v0", "down"); err != nil {
		t.Fatal(err)
	}
	e.plugin.Update(scan(t, tree))
	want := []device{
		{tree.VFAddress("ens1f0", 0), pluginapi.Unhealthy, 0},
		{tree.VFAddress("ens1f0", 1), pluginapi.Healthy, 0},
		{tree.VFAddress("ens1f1", 0), pluginapi.Healthy, 1},
		{tree.VFAddress("ens1f1", 1), pluginapi.Healthy, 1},
	}
	if got := devices(t, stream); !reflect.DeepEqual(got, want) {
		t.Errorf("after link down: devices = %v, want %v", got, want)
	}

	// Fewer VFs: the list shrinks without a restart.
	if err := tree.SetNumVFs("ens1f1", 1); err != nil {
		t.Fatal(err)
	}
	e.plugin.Update(scan(t, tree))
	if got := devices(t, stream); !reflect.DeepEqual(got, want[:3]) {
		t.Errorf("after sriov_numvfs=1: devices = %v, want %v", got, want[:3])
	}
}

func TestAllocate(t *testing.T) {
	tree := sriovtest.New(t, sriovtest.Uniform(2, 2)...)
	e := start(t, scan(t, tree))
	a, b, c := tree.VFAddress("ens1f0", 0), tree.VFAddress("ens1f1", 1), tree.VFAddress("ens1f0", 1)

	resp, err := e.client.Allocate(ctx(t), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{
		{DevicesIds: []string{a, b}},
		{DevicesIds: []string{c}},
	}})
	if err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	var got []map[string]string
	for _, cr := range resp.ContainerResponses {
		got = append(got, cr.Envs)
	}
	want := []map[string]string{
		{"PCIDEVICE_LOOM_DEV_SRIOV_NET_A": a + "," + b},
		{"PCIDEVICE_LOOM_DEV_SRIOV_NET_A": c},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("envs = %v, want %v", got, want)
	}

	_, err = e.client.Allocate(ctx(t), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{
		{DevicesIds: []string{a, "0000:ff:00.0"}},
	}})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("Allocate of an unknown device: err = %v, want InvalidArgument", err)
	}
}

func TestPreferredAllocation(t *testing.T) {
	// Node 0 holds a0 and a1, node 1 holds b0, b1 and b2, and x0 has no NUMA node.
	vf := func(address string, numa int) sriov.VF {
		return sriov.VF{Address: address, NUMANode: numa, LinkUp: true}
	}
	var (
		a0, a1     = "0000:3b:02.0", "0000:3b:02.1"
		b0, b1, b2 = "0000:86:02.0", "0000:86:02.1", "0000:86:02.2"
		x0         = "0000:d8:02.0"
	)
	e := start(t, []sriov.VF{vf(b2, 1), vf(a0, 0), vf(b0, 1), vf(x0, -1), vf(a1, 0), vf(b1, 1)})
	all := []string{x0, b2, b1, b0, a1, a0}

	for _, tc := range []struct {
		name      string
		available []string
		must      []string
		size      int32
		want      []string
	}{
		{"the smallest node that fits", all, nil, 2, []string{a0, a1}},
		{"a larger node when the smaller does not fit", all, nil, 3, []string{b0, b1, b2}},
		{"the node of a device that must be included", all, []string{b1}, 2, []string{b1, b0}},
		{"must-include devices even across nodes", all, []string{a1, b2}, 3, []string{a1, b2, a0}},
		{"the fullest node first when none fits", all, nil, 4, []string{b0, b1, b2, a0}},
		{"only available devices", []string{a0, b0, b2}, nil, 2, []string{b0, b2}},
		{"no more than available", []string{a0}, nil, 2, []string{a0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := e.client.GetPreferredAllocation(ctx(t), &pluginapi.PreferredAllocationRequest{
				ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{{
					AvailableDeviceIDs:   tc.available,
					MustIncludeDeviceIDs: tc.must,
					AllocationSize:       tc.size,
				}},
			})
			if err != nil {
				t.Fatalf("GetPreferredAllocation: %v", err)
			}
			if got := resp.ContainerResponses[0].DeviceIDs; !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestKubeletRestart(t *testing.T) {
	tree := sriovtest.New(t, sriovtest.Uniform(1, 2)...)
	e := start(t, scan(t, tree))

	// A restarting kubelet re-creates kubelet.sock and removes the plugin sockets it finds.
	e.kubelet.stop()
	if err := os.Remove(e.plugin.Socket()); err != nil {
		t.Fatal(err)
	}
	restarted := startKubelet(t, e.dir)
	req := restarted.registered(t)
	if req.ResourceName != string(resource) || req.Endpoint != e.request.Endpoint {
		t.Errorf("register request after restart = %v, want %v", req, e.request)
	}

	client := dial(t, filepath.Join(e.dir, req.Endpoint))
	stream, err := client.ListAndWatch(ctx(t), &pluginapi.Empty{})
	if err != nil {
		t.Fatalf("ListAndWatch after restart: %v", err)
	}
	if got := devices(t, stream); len(got) != 2 {
		t.Errorf("devices after restart = %v, want the 2 VFs", got)
	}
}

func TestStopEndsStreams(t *testing.T) {
	tree := sriovtest.New(t, sriovtest.Uniform(1, 1)...)
	e := start(t, scan(t, tree))
	stream, err := e.client.ListAndWatch(ctx(t), &pluginapi.Empty{})
	if err != nil {
		t.Fatalf("ListAndWatch: %v", err)
	}
	devices(t, stream)
	e.plugin.Stop()
	if _, err := stream.Recv(); err == nil {
		t.Error("stream still open after Stop")
	}
}
