package fakekubelet

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	podresourcesapi "k8s.io/kubelet/pkg/apis/podresources/v1"
)

// KubeletSocket is the name of the registration socket in the plugin directory.
const KubeletSocket = "kubelet.sock"

// Config says where the fake kubelet serves.
type Config struct {
	// PluginDir is the device plugin directory: kubelet.sock is served there, and the
	// endpoints plugins register are file names in it. Required.
	PluginDir string
	// PodResourcesSocket is where the PodResources API v1 is served; not served when empty.
	// Its directory is created if need be.
	PodResourcesSocket string
	// PodResourcesGet says how the PodResources Get method answers; GetEnabled when zero.
	PodResourcesGet GetSupport
	// Logger receives plugin connections and failures; slog.Default() when nil.
	Logger *slog.Logger
}

// GetSupport is how a kubelet's PodResources API answers Get.
type GetSupport int

const (
	// GetEnabled answers Get, as kubelets from 1.34 do (the KubeletPodResourcesGet gate is
	// on by default there).
	GetEnabled GetSupport = iota
	// GetDisabled fails Get with the error a kubelet 1.27–1.33 gives while the gate is off:
	// code Unknown, "PodResources API Get method disabled".
	GetDisabled
	// GetUnimplemented fails Get with code Unimplemented, as a kubelet older than 1.27 does.
	GetUnimplemented
)

// Device is a device as a plugin last listed it.
type Device struct {
	// ID is the plugin's device ID.
	ID string
	// Health is pluginapi.Healthy or pluginapi.Unhealthy.
	Health string
	// NUMA is the device's NUMA node, -1 when the plugin gave none; a device on several
	// nodes shows the first.
	NUMA int
}

// Pod names a pod the kubelet runs.
type Pod struct {
	Namespace, Name string
	UID             types.UID
}

// Kubelet is a running fake kubelet. It is safe for concurrent use.
type Kubelet struct {
	cfg Config
	log *slog.Logger

	// allocating serializes Allocate, as pod admission is serialized in the kubelet.
	allocating sync.Mutex

	mu        sync.Mutex
	stopped   bool
	run       int                  // counts restarts: a registration begun before one is void
	resources map[string]*resource // by resource name, since the last (re)start
	changed   chan struct{}        // closed and replaced whenever a device list changes
	pods      map[types.UID]*podDevices
	seq       uint64 // orders pods' first allocations
	servers   []*grpc.Server
	serving   sync.WaitGroup
}

// resource is what the kubelet knows of one extended resource.
type resource struct {
	plugin  *plugin // nil once the plugin's stream ended
	devices []Device
	numa    map[string][]int64 // every NUMA node of each device
}

// Start serves kubelet.sock in cfg.PluginDir, after removing the sockets it finds there as
// the kubelet does, and the PodResources API if cfg says where.
func Start(cfg Config) (*Kubelet, error) {
	if cfg.PluginDir == "" {
		return nil, errors.New("start fake kubelet: no plugin directory")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	k := &Kubelet{
		cfg:       cfg,
		log:       cfg.Logger,
		resources: map[string]*resource{},
		changed:   make(chan struct{}),
		pods:      map[types.UID]*podDevices{},
	}
	ok := false
	defer func() {
		if !ok {
			k.Stop()
		}
	}()
	if err := k.serve(nil); err != nil {
		return nil, err
	}
	ok = true
	return k, nil
}

// Stop ends every server and plugin connection and removes kubelet.sock and the PodResources
// socket. The plugins' own sockets stay, as they do when a kubelet stops.
func (k *Kubelet) Stop() {
	k.mu.Lock()
	k.stopped = true
	k.mu.Unlock()
	k.shutdown()
}

// Restart stops the fake kubelet and serves it again, as a restarted kubelet: kubelet.sock
// is a new file, the plugin directory's sockets are removed, plugins are disconnected and
// their devices forgotten until they register again. Allocations are kept.
func (k *Kubelet) Restart() error {
	k.mu.Lock()
	if k.stopped {
		k.mu.Unlock()
		return errors.New("restart fake kubelet: stopped")
	}
	k.mu.Unlock()
	old, _ := os.Stat(k.registrationSocket())
	k.shutdown()
	return k.serve(old)
}

// shutdown stops the servers and drops every plugin, leaving allocations alone.
func (k *Kubelet) shutdown() {
	k.mu.Lock()
	servers := k.servers
	k.servers = nil
	var plugins []*plugin
	for _, r := range k.resources {
		if r.plugin != nil {
			plugins = append(plugins, r.plugin)
		}
	}
	k.resources = map[string]*resource{}
	k.run++
	k.notify()
	k.mu.Unlock()

	for _, s := range servers {
		s.Stop()
	}
	k.serving.Wait()
	for _, p := range plugins {
		p.close()
	}
	for _, path := range []string{k.registrationSocket(), k.cfg.PodResourcesSocket} {
		if path == "" {
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			k.log.Warn("remove fake kubelet socket", "path", path, "error", err)
		}
	}
}

// serve removes the plugin directory's sockets and serves kubelet.sock and the PodResources
// API. old is the kubelet.sock of the previous run, nil when none: the new one must not look
// the same to a plugin that compares inode and modification time.
func (k *Kubelet) serve(old os.FileInfo) error {
	if err := os.MkdirAll(k.cfg.PluginDir, 0o755); err != nil {
		return fmt.Errorf("start fake kubelet: %w", err)
	}
	if err := removeSockets(k.cfg.PluginDir); err != nil {
		return fmt.Errorf("start fake kubelet: %w", err)
	}
	reg := grpc.NewServer()
	pluginapi.RegisterRegistrationServer(reg, registration{k: k})
	if err := k.listen(reg, k.registrationSocket()); err != nil {
		return err
	}
	if fi, err := os.Stat(k.registrationSocket()); err == nil && old != nil &&
		os.SameFile(old, fi) && old.ModTime().Equal(fi.ModTime()) {
		later := old.ModTime().Add(time.Millisecond)
		if err := os.Chtimes(k.registrationSocket(), later, later); err != nil {
			return fmt.Errorf("start fake kubelet: %w", err)
		}
	}
	if k.cfg.PodResourcesSocket == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(k.cfg.PodResourcesSocket), 0o755); err != nil {
		return fmt.Errorf("start fake kubelet: %w", err)
	}
	if err := os.Remove(k.cfg.PodResourcesSocket); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale pod resources socket %s: %w", k.cfg.PodResourcesSocket, err)
	}
	pr := grpc.NewServer()
	podresourcesapi.RegisterPodResourcesListerServer(pr, podResources{k: k})
	return k.listen(pr, k.cfg.PodResourcesSocket)
}

// listen serves s on the unix socket path until s stops.
func (k *Kubelet) listen(s *grpc.Server, path string) error {
	lis, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("start fake kubelet: listen on %s: %w", path, err)
	}
	k.mu.Lock()
	if k.stopped {
		k.mu.Unlock()
		_ = lis.Close()
		return errors.New("start fake kubelet: stopped")
	}
	k.servers = append(k.servers, s)
	k.serving.Add(1)
	k.mu.Unlock()
	go func() {
		defer k.serving.Done()
		if err := s.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			k.log.Error("fake kubelet serve", "path", path, "error", err)
		}
	}()
	return nil
}

func (k *Kubelet) registrationSocket() string {
	return filepath.Join(k.cfg.PluginDir, KubeletSocket)
}

// removeSockets removes the unix sockets in dir, as the kubelet does when it starts.
func removeSockets(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Type()&fs.ModeSocket == 0 {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// Serves says a device plugin has registered resource since the kubelet (re)started. Its
// devices may all be unhealthy, or none.
func (k *Kubelet) Serves(resource string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	_, ok := k.resources[resource]
	return ok
}

// Resources lists the resources plugins have registered since the kubelet (re)started.
func (k *Kubelet) Resources() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Sorted(maps.Keys(k.resources))
}

// Devices returns the devices of resource as its plugin last listed them, by ID; nil when no
// plugin registered it.
func (k *Kubelet) Devices(resource string) []Device {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.devicesLocked(resource)
}

func (k *Kubelet) devicesLocked(resource string) []Device {
	r, ok := k.resources[resource]
	if !ok {
		return nil
	}
	return slices.Clone(r.devices)
}

// WaitDevices waits until ok accepts the devices of resource (as Devices returns them), or
// ctx ends. ok is called with the kubelet's lock released, once per change.
func (k *Kubelet) WaitDevices(ctx context.Context, resource string, ok func([]Device) bool) error {
	for {
		k.mu.Lock()
		devices, changed := k.devicesLocked(resource), k.changed
		k.mu.Unlock()
		if ok(devices) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the devices of %s (last listed: %v): %w", resource, devices, ctx.Err())
		case <-changed:
		}
	}
}

// notify wakes WaitDevices. k.mu must be held.
func (k *Kubelet) notify() {
	close(k.changed)
	k.changed = make(chan struct{})
}

// registration is the kubelet's Registration service.
type registration struct {
	pluginapi.UnimplementedRegistrationServer
	k *Kubelet
}

// Register connects to the plugin as the kubelet's device manager does, and fails when the
// request is not valid or the plugin cannot be reached.
func (r registration) Register(ctx context.Context, req *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	if req.Version != pluginapi.Version {
		return nil, fmt.Errorf("register %s: API version %q is not supported, want %q", req.ResourceName, req.Version, pluginapi.Version)
	}
	if err := checkResourceName(req.ResourceName); err != nil {
		return nil, fmt.Errorf("register %s: %w", req.ResourceName, err)
	}
	if req.Endpoint == "" || strings.Contains(req.Endpoint, "/") {
		return nil, fmt.Errorf("register %s: endpoint %q is not a file name in %s", req.ResourceName, req.Endpoint, r.k.cfg.PluginDir)
	}
	r.k.mu.Lock()
	run := r.k.run
	r.k.mu.Unlock()
	p, err := connect(ctx, req.ResourceName, filepath.Join(r.k.cfg.PluginDir, req.Endpoint))
	if err != nil {
		return nil, err
	}
	if err := r.k.add(p, run); err != nil {
		p.close()
		return nil, err
	}
	r.k.log.Info("device plugin registered", "resource", req.ResourceName, "endpoint", req.Endpoint)
	return &pluginapi.Empty{}, nil
}

// add makes p the plugin of its resource, replacing any other, and starts its ListAndWatch,
// unless the kubelet stopped or restarted since run.
func (k *Kubelet) add(p *plugin, run int) error {
	k.mu.Lock()
	if k.stopped || k.run != run {
		k.mu.Unlock()
		return fmt.Errorf("register %s: the kubelet stopped or restarted meanwhile", p.resource)
	}
	r, ok := k.resources[p.resource]
	if !ok {
		r = &resource{}
		k.resources[p.resource] = r
		k.notify()
	}
	old := r.plugin
	r.plugin = p
	p.start(k)
	k.mu.Unlock()
	if old != nil {
		old.close()
	}
	return nil
}

// listed records the devices p listed, if p is still its resource's plugin.
func (k *Kubelet) listed(p *plugin, devices []*pluginapi.Device) {
	k.mu.Lock()
	defer k.mu.Unlock()
	r, ok := k.resources[p.resource]
	if !ok || r.plugin != p {
		return
	}
	r.devices = make([]Device, 0, len(devices))
	r.numa = make(map[string][]int64, len(devices))
	for _, d := range devices {
		dev := Device{ID: d.ID, Health: d.Health, NUMA: -1}
		for _, n := range d.GetTopology().GetNodes() {
			r.numa[d.ID] = append(r.numa[d.ID], n.ID)
		}
		if nodes := r.numa[d.ID]; len(nodes) > 0 {
			dev.NUMA = int(nodes[0])
		}
		r.devices = append(r.devices, dev)
	}
	slices.SortFunc(r.devices, func(a, b Device) int { return strings.Compare(a.ID, b.ID) })
	k.notify()
}

// lost marks the devices of p's resource unhealthy when p's stream ended while p was still
// the resource's plugin.
func (k *Kubelet) lost(p *plugin, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	r, ok := k.resources[p.resource]
	if !ok || r.plugin != p {
		return
	}
	k.log.Warn("device plugin stream ended", "resource", p.resource, "error", err)
	r.plugin = nil
	for i := range r.devices {
		r.devices[i].Health = pluginapi.Unhealthy
	}
	k.notify()
}

// checkResourceName accepts extended resource names, as the kubelet does: a qualified name
// with a domain outside kubernetes.io, not starting with "requests.".
func checkResourceName(name string) error {
	if !strings.Contains(name, "/") || strings.Contains(name, "kubernetes.io/") {
		return fmt.Errorf("%q is not an extended resource name: want <domain>/<name> outside kubernetes.io", name)
	}
	if strings.HasPrefix(name, "requests.") {
		return fmt.Errorf("%q is not an extended resource name: it must not start with requests.", name)
	}
	if errs := validation.IsQualifiedName(name); len(errs) > 0 {
		return fmt.Errorf("%q is not an extended resource name: %s", name, strings.Join(errs, "; "))
	}
	return nil
}
