package deviceplugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/loom-cni/loom/sriov"
)

// DefaultDir is the kubelet's device plugin directory.
const DefaultDir = pluginapi.DevicePluginPath

// registerTimeout bounds one Register call to the kubelet.
const registerTimeout = 5 * time.Second

// Config says which pool a Plugin serves and where.
type Config struct {
	// Resource is the pool's extended resource name, e.g. "loom.dev/sriov_net_a".
	Resource sriov.ResourceName
	// Dir is the kubelet's device plugin directory; DefaultDir when empty.
	Dir string
	// Logger receives registration failures and restarts; slog.Default() when nil.
	Logger *slog.Logger
	// Poll is how often kubelet.sock is checked for a kubelet restart; one second when zero.
	Poll time.Duration
	// DevInfoDir is the NPWG device-info directory, where Allocate writes a file for each
	// device it hands out (in dp/); DefaultDevInfoDir when empty.
	DevInfoDir string
}

// Plugin is the device plugin of one pool. Start serves and registers it, Update changes its
// devices, Stop ends it.
type Plugin struct {
	pluginapi.UnimplementedDevicePluginServer

	resource sriov.ResourceName
	dir      string
	socket   string
	log      *slog.Logger
	poll     time.Duration
	devInfo  string

	mu      sync.Mutex
	vfs     map[string]sriov.VF // by PCI address
	changed chan struct{}       // closed and replaced on each Update
	server  *grpc.Server
	serving sync.WaitGroup // Serve goroutines

	stop    context.CancelFunc
	watcher sync.WaitGroup
}

var _ pluginapi.DevicePluginServer = (*Plugin)(nil)

// New returns the plugin of the pool cfg.Resource, advertising vfs. It serves nothing until
// Start.
func New(cfg Config, vfs []sriov.VF) *Plugin {
	if cfg.Dir == "" {
		cfg.Dir = DefaultDir
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Poll == 0 {
		cfg.Poll = time.Second
	}
	if cfg.DevInfoDir == "" {
		cfg.DevInfoDir = DefaultDevInfoDir
	}
	p := &Plugin{
		resource: cfg.Resource,
		dir:      cfg.Dir,
		socket:   "loom-" + strings.ToLower(sanitize(cfg.Resource)) + ".sock",
		log:      cfg.Logger.With("resource", string(cfg.Resource)),
		poll:     cfg.Poll,
		devInfo:  cfg.DevInfoDir,
		changed:  make(chan struct{}),
	}
	p.vfs = byAddress(vfs)
	return p
}

// Socket is the path of the plugin's own socket.
func (p *Plugin) Socket() string {
	return filepath.Join(p.dir, p.socket)
}

// Start removes the device-info files an earlier run left for devices no longer in the pool,
// serves the plugin on its socket and watches kubelet.sock, registering with the kubelet
// whenever it appears anew. A failed registration is logged and retried at the next poll. Start
// fails only when it cannot serve.
func (p *Plugin) Start() error {
	p.mu.Lock()
	p.removeStaleDevInfo()
	p.mu.Unlock()
	if err := p.serve(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.stop = cancel
	p.watcher.Add(1)
	go func() {
		defer p.watcher.Done()
		p.watch(ctx)
	}()
	return nil
}

// Stop ends the watch of kubelet.sock and the gRPC server, closing every stream, and removes
// the plugin's socket.
func (p *Plugin) Stop() {
	if p.stop != nil {
		p.stop()
	}
	p.watcher.Wait()
	p.mu.Lock()
	if p.server != nil {
		p.server.Stop()
		p.server = nil
	}
	p.mu.Unlock()
	p.serving.Wait()
	if err := os.Remove(p.Socket()); err != nil && !errors.Is(err, os.ErrNotExist) {
		p.log.Warn("remove device plugin socket", "path", p.Socket(), "error", err)
	}
}

// Update replaces the plugin's devices with vfs; every ListAndWatch stream sends the new list.
// The device-info files of devices that left the pool are removed.
func (p *Plugin) Update(vfs []sriov.VF) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.vfs
	p.vfs = byAddress(vfs)
	for address := range old {
		if _, ok := p.vfs[address]; ok {
			continue
		}
		if err := removeDevInfo(p.devInfo, p.resource, address); err != nil {
			p.log.Warn("remove the device info of a device that left the pool", "device", address, "error", err)
		}
	}
	close(p.changed)
	p.changed = make(chan struct{})
}

// removeStaleDevInfo removes the device-info files of devices not in the pool. p.mu must be
// held.
func (p *Plugin) removeStaleDevInfo() {
	stale, err := staleDevInfo(p.devInfo, p.resource, p.vfs)
	if err != nil {
		p.log.Warn("look for stale device info files", "dir", p.devInfo, "error", err)
		return
	}
	for _, address := range stale {
		if err := removeDevInfo(p.devInfo, p.resource, address); err != nil {
			p.log.Warn("remove stale device info file", "device", address, "error", err)
		}
	}
}

func byAddress(vfs []sriov.VF) map[string]sriov.VF {
	m := make(map[string]sriov.VF, len(vfs))
	for _, vf := range vfs {
		m[vf.Address] = vf
	}
	return m
}

// serve starts a gRPC server on a fresh socket, replacing any server already running. The old
// server stops first: closing its listener unlinks the socket path, which would otherwise take
// the new socket with it.
func (p *Plugin) serve() error {
	p.mu.Lock()
	old := p.server
	p.server = nil
	p.mu.Unlock()
	if old != nil {
		old.Stop()
	}
	path := p.Socket()
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale device plugin socket %s: %w", path, err)
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("listen on device plugin socket %s: %w", path, err)
	}
	server := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(server, p)

	p.mu.Lock()
	p.server = server
	p.mu.Unlock()
	p.serving.Add(1)
	go func() {
		defer p.serving.Done()
		if serveErr := server.Serve(lis); serveErr != nil && !errors.Is(serveErr, grpc.ErrServerStopped) {
			p.log.Error("serve device plugin", "path", path, "error", serveErr)
		}
	}()
	return nil
}

// watch registers with the kubelet each time kubelet.sock is a new file, until ctx ends.
func (p *Plugin) watch(ctx context.Context) {
	kubelet := filepath.Join(p.dir, filepath.Base(pluginapi.KubeletSocket))
	var registered os.FileInfo // the kubelet.sock registered with, nil when none
	ticker := time.NewTicker(p.poll)
	defer ticker.Stop()
	for {
		fi, err := os.Stat(kubelet)
		switch {
		case err != nil:
			registered = nil
		case registered != nil && os.SameFile(registered, fi) && registered.ModTime().Equal(fi.ModTime()):
		default:
			if err := p.reregister(ctx, kubelet); err != nil {
				p.log.Error("register device plugin with the kubelet", "path", kubelet, "error", err)
			} else {
				registered = fi
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// reregister serves again if the kubelet removed the plugin's socket, then registers.
func (p *Plugin) reregister(ctx context.Context, kubelet string) error {
	if _, err := os.Stat(p.Socket()); errors.Is(err, os.ErrNotExist) {
		p.log.Info("device plugin socket removed, serving again", "path", p.Socket())
		if err := p.serve(); err != nil {
			return err
		}
	}
	return p.register(ctx, kubelet)
}

// register tells the kubelet at kubelet about the plugin.
func (p *Plugin) register(ctx context.Context, kubelet string) error {
	conn, err := grpc.NewClient("unix://"+kubelet, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dial kubelet %s: %w", kubelet, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     p.socket,
		ResourceName: string(p.resource),
		Options:      options(),
	})
	if err != nil {
		return fmt.Errorf("register %s with kubelet %s: %w", p.resource, kubelet, err)
	}
	p.log.Info("registered device plugin with the kubelet", "path", kubelet)
	return nil
}

func options() *pluginapi.DevicePluginOptions {
	return &pluginapi.DevicePluginOptions{GetPreferredAllocationAvailable: true}
}

// envName is the environment variable Allocate sets for resource.
func envName(resource sriov.ResourceName) string {
	return "PCIDEVICE_" + sanitize(resource)
}

// sanitize upper-cases resource and turns every character other than a letter or a digit
// into '_'.
func sanitize(resource sriov.ResourceName) string {
	var b strings.Builder
	for _, r := range strings.ToUpper(string(resource)) {
		if ('A' <= r && r <= 'Z') || ('0' <= r && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}
