package deviceplugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/loom-cni/loom/sriov"
)

// DefaultInterval is how often a Manager rescans sysfs and checks kubelet.sock: a change of
// the host's VFs reaches the kubelet within about this long.
const DefaultInterval = 200 * time.Millisecond

// ManagerConfig says which pools a Manager serves, from which host, and where.
type ManagerConfig struct {
	// Root is the directory holding the sys/ tree VFs are discovered in; "/" when empty.
	Root string
	// Pools are the pools to advertise, one device plugin each.
	Pools []sriov.PoolConfig
	// Dir is the kubelet's device plugin directory; DefaultDir when empty.
	Dir string
	// DevInfoDir is the NPWG device-info directory; DefaultDevInfoDir when empty.
	DevInfoDir string
	// Interval is how often sysfs is scanned and kubelet.sock checked; DefaultInterval when
	// zero.
	Interval time.Duration
	// Logger receives pool changes, scan failures and the plugins' logs; slog.Default() when
	// nil.
	Logger *slog.Logger
}

// Manager runs the device plugins of a node's pools and keeps them up to date with sysfs.
type Manager struct {
	cfg ManagerConfig
	log *slog.Logger

	mu       sync.Mutex
	pools    map[sriov.ResourceName][]sriov.VF // as advertised
	scanErr  error                             // of the last scan, nil when it succeeded
	failures int                               // consecutive failed scans
	logged   string                            // the failure last logged, "" when none
}

// NewManager returns a Manager of cfg's pools. It does nothing until Run.
func NewManager(cfg ManagerConfig) *Manager {
	if cfg.Root == "" {
		cfg.Root = "/"
	}
	if cfg.Dir == "" {
		cfg.Dir = DefaultDir
	}
	if cfg.DevInfoDir == "" {
		cfg.DevInfoDir = DefaultDevInfoDir
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Manager{cfg: cfg, log: cfg.Logger}
}

// Run scans the host, starts one device plugin per pool (a pool without VFs too, with no
// devices) and then rescans every interval until ctx ends, updating a plugin only when its
// pool's VFs changed: VFs added or removed (sriov_numvfs written, a VF removed), a link up or
// down, a driver rebound. A failed rescan is tried again at the next interval while the
// plugins keep advertising what they had, and logged when the next fails too. The first scan must succeed: Run fails
// with its error, as it does when a plugin cannot serve. When ctx ends, Run stops the plugins
// and returns nil. Run is called once.
func (m *Manager) Run(ctx context.Context) error {
	if len(m.cfg.Pools) == 0 {
		return errors.New("sriov device plugins: no pools configured")
	}
	scanner := sriov.NewScanner(m.cfg.Root)
	inv, err := scanner.Scan()
	if err != nil {
		return fmt.Errorf("sriov device plugins: scan sysfs under %s: %w", m.cfg.Root, err)
	}
	assigned, err := sriov.Assign(inv, m.cfg.Pools)
	if err != nil {
		return fmt.Errorf("sriov device plugins: sort the VFs under %s into pools: %w", m.cfg.Root, err)
	}

	plugins := make(map[sriov.ResourceName]*Plugin, len(m.cfg.Pools))
	defer func() {
		for _, p := range plugins {
			p.Stop()
		}
	}()
	for _, pool := range m.cfg.Pools {
		p := New(Config{
			Resource:   pool.Name,
			Dir:        m.cfg.Dir,
			Logger:     m.log,
			Poll:       m.cfg.Interval,
			DevInfoDir: m.cfg.DevInfoDir,
		}, assigned[pool.Name])
		if err := p.Start(); err != nil {
			return fmt.Errorf("sriov device plugins: start %s: %w", pool.Name, err)
		}
		plugins[pool.Name] = p
		m.log.Info("device plugin started", "resource", string(pool.Name), "vfs", len(assigned[pool.Name]),
			"healthy", healthy(assigned[pool.Name]))
	}
	m.mu.Lock()
	m.pools = assigned
	m.mu.Unlock()

	sriov.Watch(ctx, scanner, m.cfg.Pools, m.cfg.Interval, func(assigned map[sriov.ResourceName][]sriov.VF, err error) {
		if err != nil {
			m.failed(err)
			return
		}
		m.update(plugins, assigned)
	})
	return nil
}

// update hands each plugin its pool's VFs if they changed, and records them.
func (m *Manager) update(plugins map[sriov.ResourceName]*Plugin, assigned map[sriov.ResourceName][]sriov.VF) {
	m.mu.Lock()
	old, logged := m.pools, m.logged
	m.pools, m.scanErr, m.failures, m.logged = assigned, nil, 0, ""
	m.mu.Unlock()
	if logged != "" {
		m.log.Info("sriov rescan succeeded again", "root", m.cfg.Root)
	}
	for _, pool := range m.cfg.Pools {
		vfs := assigned[pool.Name]
		if slices.Equal(old[pool.Name], vfs) {
			continue
		}
		plugins[pool.Name].Update(vfs)
		m.log.Info("pool changed", "resource", string(pool.Name), "vfs", len(vfs), "healthy", healthy(vfs))
	}
}

// failed records a failed rescan. It is logged once it fails a second time in a row: a scan
// that runs while the kernel is halfway through creating or removing VFs can find a device
// half made, and the next scan does not. A failure already logged is not logged again.
func (m *Manager) failed(err error) {
	m.mu.Lock()
	m.scanErr = err
	m.failures++
	log := m.failures >= 2 && m.logged != err.Error()
	if log {
		m.logged = err.Error()
	}
	m.mu.Unlock()
	if log {
		m.log.Error("sriov rescan failed; the pools keep their devices until a rescan succeeds", "root", m.cfg.Root, "error", err)
	}
}

// Pools returns the VFs each pool advertises, nil before Run's first scan.
func (m *Manager) Pools() map[sriov.ResourceName][]sriov.VF {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pools == nil {
		return nil
	}
	pools := maps.Clone(m.pools)
	for name, vfs := range pools {
		pools[name] = slices.Clone(vfs)
	}
	return pools
}

// ScanError returns the error of the last rescan, nil when it succeeded.
func (m *Manager) ScanError() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.scanErr
}

func healthy(vfs []sriov.VF) int {
	n := 0
	for _, vf := range vfs {
		if health(vf) == pluginapi.Healthy {
			n++
		}
	}
	return n
}
