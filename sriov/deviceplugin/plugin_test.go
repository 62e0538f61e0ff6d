package deviceplugin_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/loom-cni/loom/internal/fakekubelet"
	"github.com/loom-cni/loom/sriov"
	"github.com/loom-cni/loom/sriov/deviceplugin"
	"github.com/loom-cni/loom/sriov/sriovtest"
)

const resource sriov.ResourceName = "loom.dev/sriov_net_a"

// wait bounds every wait for the plugin; tests normally take milliseconds.
const wait = 5 * time.Second

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

// env is a plugin serving vfs, the fake kubelet it registered with, and a client of the
// plugin's own socket for the tests that call it directly.
type env struct {
	dir     string
	devInfo string
	plugin  *deviceplugin.Plugin
	kubelet *fakekubelet.Kubelet
	client  pluginapi.DevicePluginClient
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startKubelet starts a fake kubelet serving dir, stopped when the test ends.
func startKubelet(t *testing.T, dir string) *fakekubelet.Kubelet {
	t.Helper()
	k, err := fakekubelet.Start(fakekubelet.Config{PluginDir: dir, Logger: discard()})
	if err != nil {
		t.Fatalf("start fake kubelet: %v", err)
	}
	t.Cleanup(k.Stop)
	return k
}

// start starts a fake kubelet and a plugin serving vfs, and waits until the kubelet lists
// the plugin's devices.
func start(t *testing.T, vfs []sriov.VF) *env {
	t.Helper()
	e := &env{dir: shortDir(t), devInfo: t.TempDir()}
	e.kubelet = startKubelet(t, e.dir)
	e.plugin = deviceplugin.New(deviceplugin.Config{
		Resource:   resource,
		Dir:        e.dir,
		Logger:     discard(),
		Poll:       10 * time.Millisecond,
		DevInfoDir: e.devInfo,
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
	waitDevices(t, e.kubelet, func(ds []device) bool { return len(ds) == len(vfs) && e.kubelet.Serves(string(resource)) })
	e.client = dial(t, e.plugin.Socket())
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

type device = fakekubelet.Device

// waitDevices waits until ok accepts the devices the kubelet lists for resource.
func waitDevices(t *testing.T, k *fakekubelet.Kubelet, ok func([]device) bool) {
	t.Helper()
	if err := k.WaitDevices(ctx(t), string(resource), ok); err != nil {
		t.Fatal(err)
	}
}

// listed waits until the kubelet lists want for resource.
func listed(t *testing.T, k *fakekubelet.Kubelet, want []device) {
	t.Helper()
	waitDevices(t, k, func(got []device) bool { return reflect.DeepEqual(got, want) || len(got) == 0 && len(want) == 0 })
}

// streamed receives the next list from a ListAndWatch stream.
func streamed(t *testing.T, stream grpc.ServerStreamingClient[pluginapi.ListAndWatchResponse]) []device {
	t.Helper()
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("receive devices: %v", err)
	}
	var got []device
	for _, d := range resp.Devices {
		numa := -1
		if d.Topology != nil && len(d.Topology.Nodes) == 1 {
			numa = int(d.Topology.Nodes[0].ID)
		}
		got = append(got, device{ID: d.ID, Health: d.Health, NUMA: numa})
	}
	return got
}

func TestRegisterAndList(t *testing.T) {
	tree := sriovtest.New(t, sriovtest.Uniform(2, 2)...) // ens1f0: netdev VFs on NUMA 0; ens1f1: DPDK on 1
	e := start(t, scan(t, tree))

	want := []device{
		{ID: tree.VFAddress("ens1f0", 0), Health: pluginapi.Healthy, NUMA: 0},
		{ID: tree.VFAddress("ens1f0", 1), Health: pluginapi.Healthy, NUMA: 0},
		{ID: tree.VFAddress("ens1f1", 0), Health: pluginapi.Healthy, NUMA: 1},
		{ID: tree.VFAddress("ens1f1", 1), Health: pluginapi.Healthy, NUMA: 1},
	}
	if got := e.kubelet.Devices(string(resource)); !reflect.DeepEqual(got, want) {
		t.Errorf("the kubelet lists %v, want %v", got, want)
	}
	opts, err := e.client.GetDevicePluginOptions(ctx(t), &pluginapi.Empty{})
	if err != nil || !opts.GetPreferredAllocationAvailable {
		t.Errorf("GetDevicePluginOptions = %v, %v; want preferred allocation available", opts, err)
	}
	// A second watcher gets the same list.
	stream, err := e.client.ListAndWatch(ctx(t), &pluginapi.Empty{})
	if err != nil {
		t.Fatalf("ListAndWatch: %v", err)
	}
	if got := streamed(t, stream); !reflect.DeepEqual(got, want) {
		t.Errorf("ListAndWatch sends %v, want %v", got, want)
	}
}

func TestUpdate(t *testing.T) {
	tree := sriovtest.New(t, sriovtest.Uniform(2, 2)...)
	e := start(t, scan(t, tree))

	// A netdev VF whose link goes down is unhealthy; a DPDK VF has no link and stays healthy.
	if err := tree.SetOperstate("ens1f0v0", "down"); err != nil {
		t.Fatal(err)
	}
	e.plugin.Update(scan(t, tree))
	want := []device{
		{ID: tree.VFAddress("ens1f0", 0), Health: pluginapi.Unhealthy, NUMA: 0},
		{ID: tree.VFAddress("ens1f0", 1), Health: pluginapi.Healthy, NUMA: 0},
		{ID: tree.VFAddress("ens1f1", 0), Health: pluginapi.Healthy, NUMA: 1},
		{ID: tree.VFAddress("ens1f1", 1), Health: pluginapi.Healthy, NUMA: 1},
	}
	listed(t, e.kubelet, want)

	// Fewer VFs: the list shrinks without a restart.
	if err := tree.SetNumVFs("ens1f1", 1); err != nil {
		t.Fatal(err)
	}
	e.plugin.Update(scan(t, tree))
	listed(t, e.kubelet, want[:3])
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

// TestAllocateThroughKubelet has the kubelet pick devices: it asks for the plugin's
// preference, which keeps a pod's two VFs on one NUMA node.
func TestAllocateThroughKubelet(t *testing.T) {
	tree := sriovtest.New(t, sriovtest.PF{Name: "ens1f0", NUMANode: 0, TotalVFs: 4, NumVFs: 1},
		sriovtest.PF{Name: "ens1f1", NUMANode: 1, TotalVFs: 4, NumVFs: 2})
	e := start(t, scan(t, tree))
	pod := fakekubelet.Pod{Namespace: "ns", Name: "p", UID: "uid-p"}
	ids, resp, err := e.kubelet.Allocate(ctx(t), pod, "app", string(resource), 2)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{tree.VFAddress("ens1f1", 0), tree.VFAddress("ens1f1", 1)}
	if !reflect.DeepEqual(ids, want) {
		t.Errorf("allocated %v, want both VFs of NUMA node 1 %v", ids, want)
	}
	if got := resp.Envs["PCIDEVICE_LOOM_DEV_SRIOV_NET_A"]; got != strings.Join(want, ",") {
		t.Errorf("PCIDEVICE_LOOM_DEV_SRIOV_NET_A = %q", got)
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

	// A restarting kubelet re-creates kubelet.sock, removes the plugin sockets it finds and
	// forgets the devices until the plugins register again.
	if err := e.kubelet.Restart(); err != nil {
		t.Fatal(err)
	}
	waitDevices(t, e.kubelet, func(ds []device) bool { return len(ds) == 2 })
	if _, err := os.Stat(e.plugin.Socket()); err != nil {
		t.Errorf("plugin socket after re-registration: %v", err)
	}
	pod := fakekubelet.Pod{Namespace: "ns", Name: "p", UID: "uid-p"}
	if _, _, err := e.kubelet.Allocate(ctx(t), pod, "app", string(resource), 2); err != nil {
		t.Errorf("allocate after the restart: %v", err)
	}
}

func TestStopEndsStreams(t *testing.T) {
	tree := sriovtest.New(t, sriovtest.Uniform(1, 1)...)
	e := start(t, scan(t, tree))
	stream, err := e.client.ListAndWatch(ctx(t), &pluginapi.Empty{})
	if err != nil {
		t.Fatalf("ListAndWatch: %v", err)
	}
	streamed(t, stream)
	e.plugin.Stop()
	if _, err := stream.Recv(); err == nil {
		t.Error("stream still open after Stop")
	}
}
