package sriov_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/loom-cni/loom/sriov"
	"github.com/loom-cni/loom/sriov/sriovtest"
)

func scan(t *testing.T, tree *sriovtest.Tree) sriov.Inventory {
	t.Helper()
	inv, err := sriov.NewScanner(tree.Root).Scan()
	if err != nil {
		t.Fatalf("scan: %v", err)
	}
	return inv
}

func TestScanFindsPFsAndVFs(t *testing.T) {
	tree := sriovtest.New(t, sriovtest.Uniform(3, 4)...)
	inv := scan(t, tree)

	if len(inv.PFs) != 3 {
		t.Fatalf("got %d PFs, want 3 (the host bridge is no PF)", len(inv.PFs))
	}
	if got := len(inv.VFs()); got != 12 {
		t.Fatalf("got %d VFs, want 12", got)
	}
	for i, pf := range inv.PFs {
		name := []string{"ens1f0", "ens1f1", "ens2f0"}[i]
		want := sriov.PF{
			Address: tree.PFAddress(name), Vendor: "8086", Device: "1572", Driver: "i40e",
			Netdev: name, LinkType: "ether", LinkUp: true, NUMANode: i % 2, TotalVFs: 8, NumVFs: 4,
		}
		got := pf
		got.VFs = nil
		if !reflect.DeepEqual(got, want) {
			t.Errorf("pf %d:\n got %+v\nwant %+v", i, got, want)
		}
		if len(pf.VFs) != 4 {
			t.Fatalf("pf %s has %d VFs, want 4", name, len(pf.VFs))
		}
		dpdk := i%2 == 1
		for j, vf := range pf.VFs {
			wantVF := sriov.VF{
				Address: tree.VFAddress(name, j), Index: j, PF: pf.Address, Vendor: "8086", Device: "154c",
				Driver: "iavf", Netdev: fmt.Sprintf("%sv%d", name, j), LinkType: "ether",
				NUMANode: i % 2, LinkUp: true,
			}
			if dpdk {
				wantVF.Driver, wantVF.Netdev, wantVF.DPDK, wantVF.LinkUp = "vfio-pci", "", true, false
			}
			if vf != wantVF {
				t.Errorf("pf %s vf %d:\n got %+v\nwant %+v", name, j, vf, wantVF)
			}
		}
	}
}

func TestScanReadsDevicesAndLinkState(t *testing.T) {
	tree := sriovtest.New(t,
		sriovtest.PF{Name: "mlx0", Vendor: "15b3", Device: "1017", VFDevice: "1018", Driver: "mlx5_core",
			VFDriver: "mlx5_core", NUMANode: -1, TotalVFs: 2, NumVFs: 2, LinkDown: true},
	)
	inv := scan(t, tree)
	if len(inv.PFs) != 1 {
		t.Fatalf("got %d PFs, want 1", len(inv.PFs))
	}
	pf := inv.PFs[0]
	if pf.Vendor != "15b3" || pf.Device != "1017" || pf.Driver != "mlx5_core" || pf.NUMANode != -1 || pf.LinkUp {
		t.Errorf("pf: got %+v", pf)
	}
	for _, vf := range pf.VFs {
		if vf.Device != "1018" || vf.DPDK || vf.LinkUp || vf.NUMANode != -1 {
			t.Errorf("vf: got %+v", vf)
		}
	}

	if err := tree.SetOperstate("mlx0v1", "up"); err != nil {
		t.Fatal(err)
	}
	inv = scan(t, tree)
	if inv.PFs[0].VFs[0].LinkUp || !inv.PFs[0].VFs[1].LinkUp {
		t.Errorf("after mlx0v1 went up: got %+v", inv.PFs[0].VFs)
	}
}

func TestScanWithoutPFs(t *testing.T) {
	tree := sriovtest.New(t)
	inv := scan(t, tree)
	if len(inv.PFs) != 0 {
		t.Errorf("got %d PFs on a host with none", len(inv.PFs))
	}
}

func TestScanAfterChanges(t *testing.T) {
	tree := sriovtest.New(t, sriovtest.Uniform(2, 4)...)
	scanner := sriov.NewScanner(tree.Root)

	steps := []struct {
		name   string
		change func() error
		// numVFs and indexes are, per PF, sriov_numvfs and the VF indexes listed.
		numVFs  [2]int
		indexes [2][]int
		dpdk    [2][]bool
	}{
		{
			name:    "as written",
			change:  func() error { return nil },
			numVFs:  [2]int{4, 4},
			indexes: [2][]int{{0, 1, 2, 3}, {0, 1, 2, 3}},
			dpdk:    [2][]bool{{false, false, false, false}, {true, true, true, true}},
		},
		{
			name:    "numvfs raised",
			change:  func() error { return tree.SetNumVFs("ens1f0", 6) },
			numVFs:  [2]int{6, 4},
			indexes: [2][]int{{0, 1, 2, 3, 4, 5}, {0, 1, 2, 3}},
			dpdk:    [2][]bool{{false, false, false, false, false, false}, {true, true, true, true}},
		},
		{
			name:    "numvfs lowered",
			change:  func() error { return tree.SetNumVFs("ens1f1", 1) },
			numVFs:  [2]int{6, 1},
			indexes: [2][]int{{0, 1, 2, 3, 4, 5}, {0}},
			dpdk:    [2][]bool{{false, false, false, false, false, false}, {true}},
		},
		{
			name:    "vf removed",
			change:  func() error { return tree.RemoveVF("ens1f0", 2) },
			numVFs:  [2]int{6, 1},
			indexes: [2][]int{{0, 1, 3, 4, 5}, {0}},
			dpdk:    [2][]bool{{false, false, false, false, false}, {true}},
		},
		{
			name:    "vf bound to vfio-pci",
			change:  func() error { return tree.Bind(tree.VFAddress("ens1f0", 0), "vfio-pci", "") },
			numVFs:  [2]int{6, 1},
			indexes: [2][]int{{0, 1, 3, 4, 5}, {0}},
			dpdk:    [2][]bool{{true, false, false, false, false}, {true}},
		},
		{
			name:    "numvfs zero",
			change:  func() error { return tree.SetNumVFs("ens1f0", 0) },
			numVFs:  [2]int{0, 1},
			indexes: [2][]int{nil, {0}},
			dpdk:    [2][]bool{nil, {true}},
		},
	}
	for _, step := range steps {
		if err := step.change(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		inv, err := scanner.Scan()
		if err != nil {
			t.Fatalf("%s: scan: %v", step.name, err)
		}
		for i, pf := range inv.PFs {
			if pf.NumVFs != step.numVFs[i] {
				t.Errorf("%s: pf %s numvfs %d, want %d", step.name, pf.Netdev, pf.NumVFs, step.numVFs[i])
			}
			var indexes []int
			var dpdk []bool
			for _, vf := range pf.VFs {
				indexes = append(indexes, vf.Index)
				dpdk = append(dpdk, vf.DPDK)
				if vf.DPDK != (vf.Netdev == "") {
					t.Errorf("%s: %s has DPDK %t and netdev %q", step.name, vf, vf.DPDK, vf.Netdev)
				}
			}
			if !equal(indexes, step.indexes[i]) || !equal(dpdk, step.dpdk[i]) {
				t.Errorf("%s: pf %s VFs %v (dpdk %v), want %v (dpdk %v)",
					step.name, pf.Netdev, indexes, dpdk, step.indexes[i], step.dpdk[i])
			}
		}
	}
}

func equal[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestScanMalformed(t *testing.T) {
	tests := []struct {
		name string
		// breakTree damages a tree of PF ens1f0 with two VFs and returns the device that
		// the error must name.
		breakTree func(t *testing.T, tree *sriovtest.Tree) string
		file      string
	}{
		{
			name: "short modalias",
			breakTree: func(t *testing.T, tree *sriovtest.Tree) string {
				return write(t, tree, tree.VFAddress("ens1f0", 1), "modalias", "pci:v00008086d0000154c")
			},
			file: "modalias",
		},
		{
			name: "missing modalias",
			breakTree: func(t *testing.T, tree *sriovtest.Tree) string {
				addr := tree.PFAddress("ens1f0")
				remove(t, filepath.Join(tree.DeviceDir(addr), "modalias"))
				return addr
			},
			file: "modalias",
		},
		{
			name: "modalias of the right length without hex ids",
			breakTree: func(t *testing.T, tree *sriovtest.Tree) string {
				return write(t, tree, tree.PFAddress("ens1f0"), "modalias", "pci:vXXXXXXXXdXXXXXXXXsvXXXXXXXXsdXXXXXXXXbcXXscXXiXX")
			},
			file: "modalias",
		},
		{
			name: "totalvfs not a number",
			breakTree: func(t *testing.T, tree *sriovtest.Tree) string {
				return write(t, tree, tree.PFAddress("ens1f0"), "sriov_totalvfs", "eight")
			},
			file: "sriov_totalvfs",
		},
		{
			name: "numvfs above totalvfs",
			breakTree: func(t *testing.T, tree *sriovtest.Tree) string {
				return write(t, tree, tree.PFAddress("ens1f0"), "sriov_numvfs", "9")
			},
			file: "sriov_numvfs",
		},
		{
			name: "numvfs missing",
			breakTree: func(t *testing.T, tree *sriovtest.Tree) string {
				addr := tree.PFAddress("ens1f0")
				remove(t, filepath.Join(tree.DeviceDir(addr), "sriov_numvfs"))
				return addr
			},
			file: "sriov_numvfs",
		},
		{
			name: "numa node not a number",
			breakTree: func(t *testing.T, tree *sriovtest.Tree) string {
				return write(t, tree, tree.VFAddress("ens1f0", 0), "numa_node", "zero")
			},
			file: "numa_node",
		},
		{
			name: "virtfn link to nothing",
			breakTree: func(t *testing.T, tree *sriovtest.Tree) string {
				addr := tree.PFAddress("ens1f0")
				link(t, "../0000:99:00.0", filepath.Join(tree.DeviceDir(addr), "virtfn7"))
				return addr
			},
			file: "virtfn7",
		},
		{
			name: "physfn pointing elsewhere",
			breakTree: func(t *testing.T, tree *sriovtest.Tree) string {
				addr := tree.VFAddress("ens1f0", 1)
				physfn := filepath.Join(tree.DeviceDir(addr), "physfn")
				remove(t, physfn)
				link(t, "../0000:00:00.0", physfn)
				return addr
			},
			file: "physfn",
		},
		{
			name: "physfn missing",
			breakTree: func(t *testing.T, tree *sriovtest.Tree) string {
				addr := tree.VFAddress("ens1f0", 0)
				remove(t, filepath.Join(tree.DeviceDir(addr), "physfn"))
				return addr
			},
			file: "physfn",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tree := sriovtest.New(t, sriovtest.PF{Name: "ens1f0", TotalVFs: 8, NumVFs: 2})
			device := tt.breakTree(t, tree)
			inv, err := sriov.NewScanner(tree.Root).Scan()
			var malformed *sriov.MalformedError
			if !errors.As(err, &malformed) {
				t.Fatalf("got inventory %+v and error %v, want a *MalformedError", inv, err)
			}
			if malformed.Device != device || filepath.Base(malformed.File) != tt.file {
				t.Errorf("error names device %s file %s, want %s and %s (%v)",
					malformed.Device, malformed.File, device, tt.file, err)
			}
		})
	}
}

func TestScanWithoutSysfs(t *testing.T) {
	tree := sriovtest.New(t)
	if _, err := sriov.NewScanner(filepath.Join(tree.Root, "nowhere")).Scan(); err == nil {
		t.Fatal("scan of a root without sys/ succeeded")
	}
}

func write(t *testing.T, tree *sriovtest.Tree, address, name, content string) string {
	t.Helper()
	if err := os.WriteFile(filepath.Join(tree.DeviceDir(address), name), []byte(content+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return address
}

func remove(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

func link(t *testing.T, target, path string) {
	t.Helper()
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
}
