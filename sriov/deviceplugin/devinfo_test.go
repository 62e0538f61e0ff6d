package deviceplugin_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/loom-cni/loom/internal/fakekubelet"
	"github.com/loom-cni/loom/sriov/deviceplugin"
	"github.com/loom-cni/loom/sriov/sriovtest"
)

// devInfoFile is where the NPWG client library looks for the device-info of a device of
// resource under dir.
func devInfoFile(dir, id string) string {
	return filepath.Join(dir, "dp", "loom.dev-sriov_net_a-"+id+"-device.json")
}

func TestDevInfoFiles(t *testing.T) {
	tree := sriovtest.New(t, sriovtest.Uniform(2, 1)...) // a netdev VF on ens1f0, a DPDK VF on ens1f1
	e := start(t, scan(t, tree))
	vf, dpdk := tree.VFAddress("ens1f0", 0), tree.VFAddress("ens1f1", 0)

	if _, _, err := e.kubelet.Allocate(ctx(t), fakekubelet.Pod{Namespace: "ns", Name: "p", UID: "uid-p"}, "app", string(resource), 2); err != nil {
		t.Fatal(err)
	}
	for id, pf := range map[string]string{vf: tree.PFAddress("ens1f0"), dpdk: tree.PFAddress("ens1f1")} {
		path := devInfoFile(e.devInfo, id)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("device info of %s: %v", id, err)
		}
		want := `{"type":"pci","version":"1.1.0","pci":{"pci-address":"` + id + `","pf-pci-address":"` + pf + `"}}`
		if string(data) != want {
			t.Errorf("%s:\n got %s\nwant %s", path, data, want)
		}
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o444 {
			t.Errorf("%s: mode %v, %v; want read-only as the NPWG library writes it", path, fi.Mode(), err)
		}
	}

	// The device goes to another pod: its file is written again.
	e.kubelet.Release("uid-p")
	if _, _, err := e.kubelet.Allocate(ctx(t), fakekubelet.Pod{Namespace: "ns", Name: "q", UID: "uid-q"}, "app", string(resource), 2); err != nil {
		t.Fatalf("allocate the devices again: %v", err)
	}

	// A VF that leaves the pool takes its file with it.
	if err := tree.SetNumVFs("ens1f1", 0); err != nil {
		t.Fatal(err)
	}
	e.plugin.Update(scan(t, tree))
	if _, err := os.Stat(devInfoFile(e.devInfo, dpdk)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("device info of a VF gone from the pool: stat err = %v, want it removed", err)
	}
	if _, err := os.Stat(devInfoFile(e.devInfo, vf)); err != nil {
		t.Errorf("device info of a VF still in the pool: %v", err)
	}
}

// TestStaleDevInfoFiles checks that Start removes the files a previous run left for VFs no
// longer in the pool, and no other files.
func TestStaleDevInfoFiles(t *testing.T) {
	tree := sriovtest.New(t, sriovtest.Uniform(1, 1)...)
	dir := t.TempDir()
	kept := []string{
		devInfoFile(dir, tree.VFAddress("ens1f0", 0)),                               // in the pool
		filepath.Join(dir, "dp", "loom.dev-sriov_net_a-x-0000:3b:02.5-device.json"), // another resource
		filepath.Join(dir, "dp", "loom.dev-sriov_net_b-0000:3b:02.5-device.json"),   // another resource
	}
	stale := devInfoFile(dir, tree.VFAddress("ens1f0", 5))
	if err := os.MkdirAll(filepath.Join(dir, "dp"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, path := range append(kept, stale) {
		if err := os.WriteFile(path, []byte("{}"), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	p := deviceplugin.New(deviceplugin.Config{Resource: resource, Dir: shortDir(t), Logger: discard(), DevInfoDir: dir}, scan(t, tree))
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	p.Stop()
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale %s: stat err = %v, want it removed", stale, err)
	}
	for _, path := range kept {
		if _, err := os.Stat(path); err != nil {
			t.Errorf("%s: %v, want it kept", path, err)
		}
	}
}

// TestDevInfoUnwritable checks that Allocate fails when it cannot write a device's
// information: a pod whose device cannot be described must not start.
func TestDevInfoUnwritable(t *testing.T) {
	tree := sriovtest.New(t, sriovtest.Uniform(1, 1)...)
	notADir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notADir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	p := deviceplugin.New(deviceplugin.Config{Resource: resource, Dir: shortDir(t), Logger: discard(), DevInfoDir: notADir}, scan(t, tree))
	_, err := p.Allocate(ctx(t), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{
		{DevicesIds: []string{tree.VFAddress("ens1f0", 0)}},
	}})
	if status.Code(err) != codes.Internal {
		t.Errorf("Allocate with an unwritable device info directory: err = %v, want Internal", err)
	}
}
