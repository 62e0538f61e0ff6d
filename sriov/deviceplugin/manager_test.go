package deviceplugin_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/loom-cni/loom/internal/fakekubelet"
	"github.com/loom-cni/loom/sriov"
	"github.com/loom-cni/loom/sriov/deviceplugin"
	"github.com/loom-cni/loom/sriov/sriovtest"
)

// The pools of the manager tests: ens1f0's netdev VFs, every DPDK VF, and a pool of a vendor
// the host does not have.
var (
	poolNet   = sriov.PoolConfig{Name: "loom.dev/net", PFs: []sriov.PFSelector{{PF: "ens1f0"}}}
	poolDPDK  = sriov.PoolConfig{Name: "loom.dev/dpdk", Drivers: []string{sriovtest.DPDKDriver}}
	poolEmpty = sriov.PoolConfig{Name: "loom.dev/empty", Vendors: []string{"15b3"}}
	pools     = []sriov.PoolConfig{poolNet, poolDPDK, poolEmpty}
)

// errorLog is a slog handler that sends the message of every error record to a channel.
type errorLog struct{ errors chan string }

func (h errorLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelError }
func (h errorLog) Handle(_ context.Context, r slog.Record) error {
	select {
	case h.errors <- r.Message:
	default:
	}
	return nil
}
func (h errorLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h errorLog) WithGroup(string) slog.Handler      { return h }

type managed struct {
	manager *deviceplugin.Manager
	kubelet *fakekubelet.Kubelet
	errors  chan string
}

// manage runs a Manager of pools over tree with a fake kubelet until the test ends, and waits
// until every pool is registered.
func manage(t *testing.T, tree *sriovtest.Tree, pools []sriov.PoolConfig) *managed {
	t.Helper()
	dir := shortDir(t)
	m := &managed{kubelet: startKubelet(t, dir), errors: make(chan string, 16)}
	m.manager = deviceplugin.NewManager(deviceplugin.ManagerConfig{
		Root:       tree.Root,
		Pools:      pools,
		Dir:        dir,
		DevInfoDir: t.TempDir(),
		Interval:   10 * time.Millisecond,
		Logger:     slog.New(errorLog{m.errors}),
	})
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.manager.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	for _, pool := range pools {
		if err := m.kubelet.WaitDevices(ctx(t), string(pool.Name), func([]device) bool { return m.kubelet.Serves(string(pool.Name)) }); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// listed waits until the kubelet lists want for pool.
func (m *managed) listed(t *testing.T, pool sriov.PoolConfig, want []device) {
	t.Helper()
	err := m.kubelet.WaitDevices(ctx(t), string(pool.Name), func(got []device) bool {
		return reflect.DeepEqual(got, want) || len(got) == 0 && len(want) == 0
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestManagerFollowsSysfs(t *testing.T) {
	tree := sriovtest.New(t, sriovtest.Uniform(2, 2)...) // ens1f0: netdev VFs on NUMA 0; ens1f1: DPDK on 1
	m := manage(t, tree, pools)
	vf := func(i int, health string) device {
		return device{ID: tree.VFAddress("ens1f0", i), Health: health, NUMA: 0}
	}
	up, down := pluginapi.Healthy, pluginapi.Unhealthy

	m.listed(t, poolNet, []device{vf(0, up), vf(1, up)})
	m.listed(t, poolDPDK, []device{
		{ID: tree.VFAddress("ens1f1", 0), Health: up, NUMA: 1},
		{ID: tree.VFAddress("ens1f1", 1), Health: up, NUMA: 1},
	})
	m.listed(t, poolEmpty, nil)

	// sriov_numvfs raised: the new VFs appear without a restart.
	if err := tree.SetNumVFs("ens1f0", 4); err != nil {
		t.Fatal(err)
	}
	m.listed(t, poolNet, []device{vf(0, up), vf(1, up), vf(2, up), vf(3, up)})

	// A link goes down: its VF turns unhealthy.
	if err := tree.SetOperstate("ens1f0v1", "down"); err != nil {
		t.Fatal(err)
	}
	m.listed(t, poolNet, []device{vf(0, up), vf(1, down), vf(2, up), vf(3, up)})

	// A VF removed: it is gone from the list.
	if err := tree.RemoveVF("ens1f0", 2); err != nil {
		t.Fatal(err)
	}
	m.listed(t, poolNet, []device{vf(0, up), vf(1, down), vf(3, up)})

	// sriov_numvfs lowered to 0: the pool stays registered, with no devices.
	if err := tree.SetNumVFs("ens1f1", 0); err != nil {
		t.Fatal(err)
	}
	m.listed(t, poolDPDK, nil)
	if !m.kubelet.Serves(string(poolDPDK.Name)) {
		t.Errorf("%s is no longer served", poolDPDK.Name)
	}

	got := m.manager.Pools()
	var addresses []string
	for _, vf := range got[poolNet.Name] {
		addresses = append(addresses, vf.Address)
	}
	if want := []string{tree.VFAddress("ens1f0", 0), tree.VFAddress("ens1f0", 1), tree.VFAddress("ens1f0", 3)}; !reflect.DeepEqual(addresses, want) ||
		len(got[poolDPDK.Name]) != 0 || len(got) != 3 {
		t.Errorf("Pools() = %v; want %s: %v and two empty pools", got, poolNet.Name, want)
	}
	if err := m.manager.ScanError(); err != nil {
		t.Errorf("ScanError() = %v", err)
	}
}

// TestManagerScanError checks that a failed rescan leaves the pools as they were, and that
// the next good one brings the changes made meanwhile.
func TestManagerScanError(t *testing.T) {
	tree := sriovtest.New(t, sriovtest.Uniform(1, 2)...)
	m := manage(t, tree, []sriov.PoolConfig{poolNet})
	healthy := []device{
		{ID: tree.VFAddress("ens1f0", 0), Health: pluginapi.Healthy, NUMA: 0},
		{ID: tree.VFAddress("ens1f0", 1), Health: pluginapi.Healthy, NUMA: 0},
	}
	m.listed(t, poolNet, healthy)

	modalias := filepath.Join(tree.DeviceDir(tree.VFAddress("ens1f0", 1)), "modalias")
	good, err := os.ReadFile(modalias)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(modalias, []byte("garbage\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.errors:
	case <-time.After(wait):
		t.Fatal("no scan error logged")
	}
	// A change while scans fail is not seen until one succeeds.
	if err := tree.SetOperstate("ens1f0v0", "down"); err != nil {
		t.Fatal(err)
	}
	var malformed *sriov.MalformedError
	if err := m.manager.ScanError(); !errors.As(err, &malformed) {
		t.Errorf("ScanError() = %v, want a *sriov.MalformedError", err)
	}
	if got := m.kubelet.Devices(string(poolNet.Name)); !reflect.DeepEqual(got, healthy) {
		t.Errorf("while scans fail the kubelet lists %v, want what it had: %v", got, healthy)
	}

	if err := os.WriteFile(modalias, good, 0o644); err != nil {
		t.Fatal(err)
	}
	m.listed(t, poolNet, []device{{ID: healthy[0].ID, Health: pluginapi.Unhealthy, NUMA: 0}, healthy[1]})
	if err := m.manager.ScanError(); err != nil {
		t.Errorf("ScanError() after a good scan = %v", err)
	}
	select {
	case msg := <-m.errors:
		t.Errorf("error logged after a good scan: %s", msg)
	default:
	}
}

func TestManagerFirstScanFails(t *testing.T) {
	tree := sriovtest.New(t, sriovtest.Uniform(1, 1)...)
	run := func(pools []sriov.PoolConfig) error {
		m := deviceplugin.NewManager(deviceplugin.ManagerConfig{Root: tree.Root, Pools: pools, Dir: shortDir(t),
			DevInfoDir: t.TempDir(), Logger: discard()})
		return m.Run(ctx(t))
	}

	var selector *sriov.SelectorError
	if err := run([]sriov.PoolConfig{{Name: "loom.dev/x", PFs: []sriov.PFSelector{{PF: "ens9f9"}}}}); !errors.As(err, &selector) {
		t.Errorf("Run with a pool of a PF the host lacks: err = %v, want a *sriov.SelectorError", err)
	}
	if err := run(nil); err == nil {
		t.Error("Run without pools succeeded")
	}

	modalias := filepath.Join(tree.DeviceDir(tree.VFAddress("ens1f0", 0)), "modalias")
	if err := os.WriteFile(modalias, []byte("garbage\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var malformed *sriov.MalformedError
	if err := run(pools); !errors.As(err, &malformed) {
		t.Errorf("Run over a malformed sysfs: err = %v, want a *sriov.MalformedError", err)
	}
}
