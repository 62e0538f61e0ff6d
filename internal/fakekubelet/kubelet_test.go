package fakekubelet_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/apimachinery/pkg/types"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	podresourcesapi "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/loom-cni/loom/internal/fakekubelet"
	"github.com/loom-cni/loom/internal/leakcheck"
)

const res = "example.com/nic"

// wait bounds every wait; tests normally take milliseconds.
const wait = 5 * time.Second

// TestMain fails the run when goroutines the tests started are still running a moment after
// the last test.
func TestMain(m *testing.M) { os.Exit(leakcheck.Main(m)) }

// shortDir returns a fresh directory with a path short enough for unix sockets.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "loomfk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// start starts a fake kubelet with cfg in a fresh plugin directory, which it returns too.
func start(t *testing.T, cfg fakekubelet.Config) (*fakekubelet.Kubelet, string) {
	t.Helper()
	cfg.PluginDir = shortDir(t)
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	k, err := fakekubelet.Start(cfg)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(k.Stop)
	return k, cfg.PluginDir
}

func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return c
}

// waitLen waits for n devices of resource.
func waitLen(t *testing.T, k *fakekubelet.Kubelet, resource string, n int) []fakekubelet.Device {
	t.Helper()
	if err := k.WaitDevices(ctx(t), resource, func(d []fakekubelet.Device) bool { return len(d) == n }); err != nil {
		t.Fatal(err)
	}
	return k.Devices(resource)
}

// registered starts a kubelet and a plugin of res with devices a0 (NUMA 0), a1 (NUMA 0,
// unhealthy), b0 and b1 (NUMA 1) and x0 (no NUMA node), registered and listed.
func registered(t *testing.T, preferred bool, cfg fakekubelet.Config) (*fakekubelet.Kubelet, *testPlugin) {
	t.Helper()
	k, dir := start(t, cfg)
	p := startPlugin(t, dir, res, preferred,
		device("b1", pluginapi.Healthy, 1), device("a0", pluginapi.Healthy, 0), device("a1", pluginapi.Unhealthy, 0),
		device("b0", pluginapi.Healthy, 1), device("x0", pluginapi.Healthy, -1))
	if err := p.register(ctx(t)); err != nil {
		t.Fatalf("register: %v", err)
	}
	waitLen(t, k, res, 5)
	return k, p
}

func pod(name string) fakekubelet.Pod {
	return fakekubelet.Pod{Namespace: "ns", Name: name, UID: types.UID("uid-" + name)}
}

func TestRegisterAndList(t *testing.T) {
	k, p := registered(t, false, fakekubelet.Config{})
	want := []fakekubelet.Device{
		{ID: "a0", Health: pluginapi.Healthy, NUMA: 0},
		{ID: "a1", Health: pluginapi.Unhealthy, NUMA: 0},
		{ID: "b0", Health: pluginapi.Healthy, NUMA: 1},
		{ID: "b1", Health: pluginapi.Healthy, NUMA: 1},
		{ID: "x0", Health: pluginapi.Healthy, NUMA: -1},
	}
	if got := k.Devices(res); !reflect.DeepEqual(got, want) {
		t.Errorf("devices = %v, want %v", got, want)
	}
	if !k.Serves(res) || k.Serves("example.com/other") {
		t.Errorf("Serves(%s) = %v, Serves(other) = %v; want true, false", res, k.Serves(res), k.Serves("example.com/other"))
	}

	// The stream stays open: a changed list arrives.
	p.set(device("a0", pluginapi.Unhealthy, 0))
	got := waitLen(t, k, res, 1)
	if want := []fakekubelet.Device{{ID: "a0", Health: pluginapi.Unhealthy, NUMA: 0}}; !reflect.DeepEqual(got, want) {
		t.Errorf("after the change: devices = %v, want %v", got, want)
	}
}

func TestRegisterRefused(t *testing.T) {
	k, dir := start(t, fakekubelet.Config{})
	p := startPlugin(t, dir, res, false)
	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, "kubelet.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	reg := pluginapi.NewRegistrationClient(conn)
	for _, tc := range []struct {
		name string
		req  *pluginapi.RegisterRequest
	}{
		{"old version", &pluginapi.RegisterRequest{Version: "v1alpha", Endpoint: p.endpoint, ResourceName: res}},
		{"native resource", &pluginapi.RegisterRequest{Version: pluginapi.Version, Endpoint: p.endpoint, ResourceName: "cpu"}},
		{"kubernetes.io resource", &pluginapi.RegisterRequest{Version: pluginapi.Version, Endpoint: p.endpoint, ResourceName: "kubernetes.io/nic"}},
		{"endpoint with a path", &pluginapi.RegisterRequest{Version: pluginapi.Version, Endpoint: "../" + p.endpoint, ResourceName: res}},
		{"nobody at the endpoint", &pluginapi.RegisterRequest{Version: pluginapi.Version, Endpoint: "gone.sock", ResourceName: res}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := reg.Register(ctx(t), tc.req); err == nil {
				t.Error("registered")
			}
		})
	}
	if k.Serves(res) {
		t.Errorf("serves %s after refused registrations", res)
	}
}

func TestAllocate(t *testing.T) {
	prSocket := filepath.Join(shortDir(t), "pod-resources", "kubelet.sock")
	k, p := registered(t, true, fakekubelet.Config{PodResourcesSocket: prSocket})
	// The plugin prefers the last devices offered: x0, then b1.
	ids, resp, err := k.Allocate(ctx(t), pod("p1"), "app", res, 2)
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	if want := []string{"b1", "x0"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("allocated %v, want the plugin's preference %v", ids, want)
	}
	if got := resp.Envs["DEVICES"]; got != "b1,x0" {
		t.Errorf("the plugin's answer: DEVICES=%q, want b1,x0", got)
	}
	// The same container asking again gets the same devices, without a second call.
	again, _, err := k.Allocate(ctx(t), pod("p1"), "app", res, 2)
	if err != nil || !reflect.DeepEqual(again, ids) {
		t.Errorf("allocate again = %v, %v; want %v", again, err, ids)
	}
	if got := p.requests(); len(got) != 1 {
		t.Errorf("plugin asked to allocate %v, want once", got)
	}

	// a1 is unhealthy and b1, x0 are taken: a0 and b0 are left.
	ids, _, err = k.Allocate(ctx(t), pod("p2"), "app", res, 2)
	if err != nil || !reflect.DeepEqual(ids, []string{"a0", "b0"}) {
		t.Fatalf("allocate to p2 = %v, %v; want [a0 b0]", ids, err)
	}
	if _, _, err = k.Allocate(ctx(t), pod("p3"), "app", res, 1); !errors.Is(err, fakekubelet.ErrNotEnoughDevices) {
		t.Errorf("allocate with none free: err = %v, want ErrNotEnoughDevices", err)
	}
	if _, _, err = k.Allocate(ctx(t), pod("p3"), "app", "example.com/other", 1); !errors.Is(err, fakekubelet.ErrNoPlugin) {
		t.Errorf("allocate of a resource nobody serves: err = %v, want ErrNoPlugin", err)
	}

	// PodResources reports what was allocated.
	conn, err := grpc.NewClient("unix://"+prSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	lister := podresourcesapi.NewPodResourcesListerClient(conn)
	list, err := lister.List(ctx(t), &podresourcesapi.ListPodResourcesRequest{})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if got := listed(list.PodResources); !reflect.DeepEqual(got, map[string][]string{"ns/p1/app": {"b1@1", "x0"}, "ns/p2/app": {"a0@0", "b0@1"}}) {
		t.Errorf("List = %v", got)
	}
	get, err := lister.Get(ctx(t), &podresourcesapi.GetPodResourcesRequest{PodNamespace: "ns", PodName: "p2"})
	if err != nil || !reflect.DeepEqual(listed([]*podresourcesapi.PodResources{get.PodResources}), map[string][]string{"ns/p2/app": {"a0@0", "b0@1"}}) {
		t.Errorf("Get(ns/p2) = %v, %v", get, err)
	}
	if _, err = lister.Get(ctx(t), &podresourcesapi.GetPodResourcesRequest{PodNamespace: "ns", PodName: "p3"}); err == nil {
		t.Error("Get of a pod without devices succeeded, want the kubelet's not found")
	}
	alloc, err := lister.GetAllocatableResources(ctx(t), &podresourcesapi.AllocatableResourcesRequest{})
	if err != nil {
		t.Fatalf("GetAllocatableResources: %v", err)
	}
	var allocatable []string
	for _, d := range alloc.Devices {
		allocatable = append(allocatable, d.DeviceIds...)
	}
	if want := []string{"a0", "b0", "b1", "x0"}; !reflect.DeepEqual(allocatable, want) {
		t.Errorf("allocatable = %v, want the healthy devices %v", allocatable, want)
	}

	// Released devices are free again.
	k.Release(pod("p1").UID)
	if ids, _, err := k.Allocate(ctx(t), pod("p3"), "app", res, 2); err != nil || !reflect.DeepEqual(ids, []string{"b1", "x0"}) {
		t.Errorf("allocate after release = %v, %v; want [b1 x0]", ids, err)
	}
}

// listed renders pod resources as namespace/pod/container → device@numa.
func listed(pods []*podresourcesapi.PodResources) map[string][]string {
	out := map[string][]string{}
	for _, p := range pods {
		for _, c := range p.Containers {
			key := p.Namespace + "/" + p.Name + "/" + c.Name
			for _, d := range c.Devices {
				for _, id := range d.DeviceIds {
					if d.ResourceName != res {
						id = d.ResourceName + ":" + id
					}
					for _, n := range d.GetTopology().GetNodes() {
						id = fmt.Sprintf("%s@%d", id, n.ID)
					}
					out[key] = append(out[key], id)
				}
			}
			slices.Sort(out[key])
		}
	}
	return out
}

func TestAllocateWithoutPreference(t *testing.T) {
	k, p := registered(t, false, fakekubelet.Config{})
	ids, _, err := k.Allocate(ctx(t), pod("p1"), "app", res, 3)
	if err != nil || !reflect.DeepEqual(ids, []string{"a0", "b0", "b1"}) {
		t.Errorf("allocate = %v, %v; want the first healthy devices by ID", ids, err)
	}
	if got := p.requests(); !reflect.DeepEqual(got, [][]string{{"a0", "b0", "b1"}}) {
		t.Errorf("plugin asked for %v", got)
	}
}

func TestAllocateIgnoresBadPreference(t *testing.T) {
	k, dir := start(t, fakekubelet.Config{})
	p := startPlugin(t, dir, res, true, device("a", pluginapi.Healthy, -1), device("b", pluginapi.Healthy, -1))
	p.prefer = func([]string, int) []string { return []string{"a", "zz"} }
	if err := p.register(ctx(t)); err != nil {
		t.Fatal(err)
	}
	waitLen(t, k, res, 2)
	ids, _, err := k.Allocate(ctx(t), pod("p1"), "app", res, 2)
	if err != nil || !reflect.DeepEqual(ids, []string{"a", "b"}) {
		t.Errorf("allocate = %v, %v; want [a b], ignoring a preference of a device not offered", ids, err)
	}
}

func TestConcurrentAllocate(t *testing.T) {
	k, dir := start(t, fakekubelet.Config{})
	var devices []*pluginapi.Device
	for i := range 8 {
		devices = append(devices, device(fmt.Sprintf("d%d", i), pluginapi.Healthy, int64(i%2)))
	}
	p := startPlugin(t, dir, res, true, devices...)
	if err := p.register(ctx(t)); err != nil {
		t.Fatal(err)
	}
	waitLen(t, k, res, 8)

	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		got    = map[string]string{}
		failed int
	)
	for i := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("p%d", i)
			ids, _, err := k.Allocate(ctx(t), pod(name), "app", res, 1)
			mu.Lock()
			defer mu.Unlock()
			if errors.Is(err, fakekubelet.ErrNotEnoughDevices) {
				failed++
				return
			}
			if err != nil {
				t.Errorf("allocate to %s: %v", name, err)
				return
			}
			if other, ok := got[ids[0]]; ok {
				t.Errorf("%s given to %s and %s", ids[0], other, name)
			}
			got[ids[0]] = name
		}()
	}
	wg.Wait()
	if len(got) != 8 || failed != 4 {
		t.Errorf("%d devices given, %d refused; want 8 and 4", len(got), failed)
	}
}

func TestPluginGone(t *testing.T) {
	k, p := registered(t, false, fakekubelet.Config{})
	p.stop()
	err := k.WaitDevices(ctx(t), res, func(ds []fakekubelet.Device) bool {
		return len(ds) == 5 && !slices.ContainsFunc(ds, func(d fakekubelet.Device) bool { return d.Health == pluginapi.Healthy })
	})
	if err != nil {
		t.Fatalf("devices of a plugin that went away: %v", err)
	}
	if !k.Serves(res) {
		t.Error("the resource is forgotten when its plugin goes; the kubelet keeps it, unhealthy")
	}
	if _, _, err := k.Allocate(ctx(t), pod("p1"), "app", res, 1); !errors.Is(err, fakekubelet.ErrNoPlugin) {
		t.Errorf("allocate: err = %v, want ErrNoPlugin", err)
	}
}

func TestReplacedPlugin(t *testing.T) {
	k, first := registered(t, false, fakekubelet.Config{})
	second := startPlugin(t, first.dir, res, false, device("n0", pluginapi.Healthy, -1))
	second.endpoint = "second.sock"
	second.stop()
	second.serve(t)
	if err := second.register(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if got := waitLen(t, k, res, 1); got[0].ID != "n0" {
		t.Errorf("devices = %v, want the second plugin's", got)
	}
}

func TestRestart(t *testing.T) {
	k, p := registered(t, false, fakekubelet.Config{})
	if _, _, err := k.Allocate(ctx(t), pod("p1"), "app", res, 1); err != nil {
		t.Fatal(err)
	}
	dir := p.dir
	before, err := os.Stat(filepath.Join(dir, "kubelet.sock"))
	if err != nil {
		t.Fatal(err)
	}
	if err = k.Restart(); err != nil {
		t.Fatalf("restart: %v", err)
	}
	after, err := os.Stat(filepath.Join(dir, "kubelet.sock"))
	if err != nil {
		t.Fatal(err)
	}
	if os.SameFile(before, after) && before.ModTime().Equal(after.ModTime()) {
		t.Error("kubelet.sock looks the same after the restart; plugins cannot tell")
	}
	if _, err = os.Stat(filepath.Join(dir, p.endpoint)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("plugin socket after the restart: stat err = %v, want it removed", err)
	}
	if k.Serves(res) || k.Devices(res) != nil {
		t.Errorf("after the restart the kubelet still knows %s: %v", res, k.Devices(res))
	}

	// The plugin serves again and registers; its allocation survived.
	p.stop()
	p.serve(t)
	if err = p.register(ctx(t)); err != nil {
		t.Fatal(err)
	}
	waitLen(t, k, res, 5)
	ids, _, err := k.Allocate(ctx(t), pod("p2"), "app", res, 4)
	if !errors.Is(err, fakekubelet.ErrNotEnoughDevices) {
		t.Errorf("allocate 4 of the 3 healthy devices left = %v, %v; want ErrNotEnoughDevices", ids, err)
	}
}

func TestRestore(t *testing.T) {
	k, _ := registered(t, false, fakekubelet.Config{})
	k.Restore(pod("p1"), "app", res, []string{"a0", "b0", "b1"})
	ids, _, err := k.Allocate(ctx(t), pod("p2"), "app", res, 1)
	if err != nil || !reflect.DeepEqual(ids, []string{"x0"}) {
		t.Errorf("allocate beside restored devices = %v, %v; want [x0]", ids, err)
	}
}

func TestStopRemovesSockets(t *testing.T) {
	dir := shortDir(t)
	prSocket := filepath.Join(dir, "pr.sock")
	k, err := fakekubelet.Start(fakekubelet.Config{PluginDir: dir, PodResourcesSocket: prSocket, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	k.Stop()
	for _, path := range []string{filepath.Join(dir, "kubelet.sock"), prSocket} {
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after Stop: stat err = %v, want it removed", path, err)
		}
	}
	if err := k.Restart(); err == nil {
		t.Error("restart after Stop succeeded")
	}
}
