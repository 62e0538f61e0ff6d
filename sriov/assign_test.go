package sriov_test

import (
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/loom-cni/loom/sriov"
	"github.com/loom-cni/loom/sriov/sriovtest"
)

// testInventory has PF ens1f0 (8 VFs of 16, iavf), ens1f1 (4 VFs of 8, vfio-pci) and a
// Mellanox PF mlx0 (2 VFs of 2, mlx5_core, infiniband).
func testInventory() sriov.Inventory {
	pf := func(bus int, netdev, vendor, device, vfDevice, vfDriver, linkType string, total, num int) sriov.PF {
		p := sriov.PF{
			Address: fmt.Sprintf("0000:%02x:00.0", bus), Vendor: vendor, Device: device, Netdev: netdev,
			LinkType: linkType, TotalVFs: total, NumVFs: num,
		}
		for i := 0; i < num; i++ {
			vf := sriov.VF{
				Address: fmt.Sprintf("0000:%02x:02.%d", bus, i), Index: i, PF: p.Address,
				Vendor: vendor, Device: vfDevice, Driver: vfDriver, LinkType: linkType,
			}
			if vfDriver == "vfio-pci" {
				vf.DPDK = true
			} else {
				vf.Netdev = fmt.Sprintf("%sv%d", netdev, i)
			}
			p.VFs = append(p.VFs, vf)
		}
		return p
	}
	return sriov.Inventory{PFs: []sriov.PF{
		pf(0x3b, "ens1f0", "8086", "1572", "154c", "iavf", "ether", 16, 8),
		pf(0x3c, "ens1f1", "8086", "1572", "154c", "vfio-pci", "ether", 8, 4),
		pf(0x5e, "mlx0", "15b3", "1017", "1018", "mlx5_core", "infiniband", 2, 2),
	}}
}

// names returns the VFs of each pool as "<pf>#<index>".
func names(inv sriov.Inventory, assigned map[sriov.ResourceName][]sriov.VF) map[sriov.ResourceName][]string {
	pfs := make(map[string]string)
	for _, pf := range inv.PFs {
		pfs[pf.Address] = pf.Netdev
	}
	out := make(map[sriov.ResourceName][]string)
	for name, vfs := range assigned {
		out[name] = []string{}
		for _, vf := range vfs {
			out[name] = append(out[name], fmt.Sprintf("%s#%d", pfs[vf.PF], vf.Index))
		}
	}
	return out
}

func TestAssign(t *testing.T) {
	tests := []struct {
		name  string
		pools string
		want  map[sriov.ResourceName][]string
	}{
		{
			name:  "a range",
			pools: `{"pools": [{"resourceName": "loom.dev/a", "selectors": {"pfNames": ["ens1f0#2-4"]}}]}`,
			want:  map[sriov.ResourceName][]string{"loom.dev/a": {"ens1f0#2", "ens1f0#3", "ens1f0#4"}},
		},
		{
			name:  "ranges and single indexes",
			pools: `{"pools": [{"resourceName": "loom.dev/a", "selectors": {"pfNames": ["ens1f0#0,6-7", "ens1f1#3"]}}]}`,
			want:  map[sriov.ResourceName][]string{"loom.dev/a": {"ens1f0#0", "ens1f0#6", "ens1f0#7", "ens1f1#3"}},
		},
		{
			name:  "a range past numvfs takes the VFs there are",
			pools: `{"pools": [{"resourceName": "loom.dev/a", "selectors": {"pfNames": ["ens1f1#2-7"]}}]}`,
			want:  map[sriov.ResourceName][]string{"loom.dev/a": {"ens1f1#2", "ens1f1#3"}},
		},
		{
			name: "split of one PF",
			pools: `{"pools": [
				{"resourceName": "loom.dev/low", "selectors": {"pfNames": ["ens1f0#0-3"]}},
				{"resourceName": "loom.dev/high", "selectors": {"pfNames": ["ens1f0#4-7"]}}]}`,
			want: map[sriov.ResourceName][]string{
				"loom.dev/low":  {"ens1f0#0", "ens1f0#1", "ens1f0#2", "ens1f0#3"},
				"loom.dev/high": {"ens1f0#4", "ens1f0#5", "ens1f0#6", "ens1f0#7"},
			},
		},
		{
			name: "by driver",
			pools: `{"pools": [
				{"resourceName": "loom.dev/netdev", "selectors": {"drivers": ["iavf"]}},
				{"resourceName": "loom.dev/dpdk", "selectors": {"drivers": ["vfio-pci"]}}]}`,
			want: map[sriov.ResourceName][]string{
				"loom.dev/netdev": {"ens1f0#0", "ens1f0#1", "ens1f0#2", "ens1f0#3", "ens1f0#4", "ens1f0#5", "ens1f0#6", "ens1f0#7"},
				"loom.dev/dpdk":   {"ens1f1#0", "ens1f1#1", "ens1f1#2", "ens1f1#3"},
			},
		},
		{
			name: "by vendor, device and link type",
			pools: `{"pools": [
				{"resourceName": "loom.dev/ib", "selectors": {"linkTypes": ["infiniband"]}},
				{"resourceName": "loom.dev/cx5", "selectors": {"vendors": ["15b3"], "devices": ["1017"]}}]}`,
			want: map[sriov.ResourceName][]string{
				"loom.dev/ib":  {"mlx0#0", "mlx0#1"},
				"loom.dev/cx5": {},
			},
		},
		{
			name:  "selectors combine",
			pools: `{"pools": [{"resourceName": "loom.dev/a", "selectors": {"vendors": ["8086"], "drivers": ["vfio-pci"], "pfNames": ["ens1f0", "ens1f1#0-1"]}}]}`,
			want:  map[sriov.ResourceName][]string{"loom.dev/a": {"ens1f1#0", "ens1f1#1"}},
		},
		{
			name:  "no pools",
			pools: `{"pools": []}`,
			want:  map[sriov.ResourceName][]string{},
		},
	}
	inv := testInventory()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pools, err := sriov.ParsePools([]byte(tt.pools))
			if err != nil {
				t.Fatal(err)
			}
			assigned, err := sriov.Assign(inv, pools)
			if err != nil {
				t.Fatal(err)
			}
			if got := names(inv, assigned); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestAssignRejects(t *testing.T) {
	tests := []struct {
		name  string
		pools string
		// overlap is the VF (<pf>#<index>) and pools of an *OverlapError; selector the
		// selector of a *SelectorError.
		overlap  string
		between  [2]sriov.ResourceName
		selector string
	}{
		{
			name: "overlapping ranges",
			pools: `{"pools": [
				{"resourceName": "loom.dev/a", "selectors": {"pfNames": ["ens1f0#0-4"]}},
				{"resourceName": "loom.dev/b", "selectors": {"pfNames": ["ens1f0#4-7"]}}]}`,
			overlap: "0000:3b:02.4",
			between: [2]sriov.ResourceName{"loom.dev/a", "loom.dev/b"},
		},
		{
			name: "overlapping selector kinds",
			pools: `{"pools": [
				{"resourceName": "loom.dev/dpdk", "selectors": {"drivers": ["vfio-pci"]}},
				{"resourceName": "loom.dev/f1", "selectors": {"pfNames": ["ens1f1#3"]}}]}`,
			overlap: "0000:3c:02.3",
			between: [2]sriov.ResourceName{"loom.dev/dpdk", "loom.dev/f1"},
		},
		{
			name:     "unknown PF",
			pools:    `{"pools": [{"resourceName": "loom.dev/a", "selectors": {"pfNames": ["ens9f0#0-3"]}}]}`,
			selector: "pfNames",
		},
		{
			name:     "range past totalvfs",
			pools:    `{"pools": [{"resourceName": "loom.dev/a", "selectors": {"pfNames": ["ens1f1#0-8"]}}]}`,
			selector: "pfNames",
		},
	}
	inv := testInventory()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pools, err := sriov.ParsePools([]byte(tt.pools))
			if err != nil {
				t.Fatal(err)
			}
			assigned, err := sriov.Assign(inv, pools)
			if tt.selector != "" {
				var bad *sriov.SelectorError
				if !errors.As(err, &bad) || bad.Selector != tt.selector {
					t.Fatalf("got %v, %v; want a *SelectorError for %s", assigned, err, tt.selector)
				}
				return
			}
			var overlap *sriov.OverlapError
			if !errors.As(err, &overlap) {
				t.Fatalf("got %v, %v; want an *OverlapError", assigned, err)
			}
			if overlap.VF.Address != tt.overlap || overlap.Pools != tt.between {
				t.Errorf("overlap on %s between %v, want %s between %v", overlap.VF.Address, overlap.Pools, tt.overlap, tt.between)
			}
		})
	}
}

func TestAssignScannedInventory(t *testing.T) {
	tree := sriovtest.New(t, sriovtest.Uniform(2, 4)...)
	pools, err := sriov.ParsePools([]byte(`
pools:
- resourceName: loom.dev/sriov_net_a
  selectors: {pfNames: ["ens1f0#0-1"]}
- resourceName: loom.dev/sriov_net_b
  selectors: {pfNames: ["ens1f0#2-7"]}
- resourceName: loom.dev/sriov_dpdk
  selectors: {drivers: [vfio-pci], linkTypes: [ether]}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[sriov.ResourceName][]string{
		"loom.dev/sriov_net_a": {"ens1f0#0", "ens1f0#1"},
		"loom.dev/sriov_net_b": {"ens1f0#2", "ens1f0#3"},
		"loom.dev/sriov_dpdk":  {"ens1f1#0", "ens1f1#1", "ens1f1#2", "ens1f1#3"},
	}
	inv := scan(t, tree)
	assigned, err := sriov.Assign(inv, pools)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(inv, assigned); !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}

	// More VFs on ens1f0 go to the pool whose range covers them.
	if err = tree.SetNumVFs("ens1f0", 8); err != nil {
		t.Fatal(err)
	}
	inv = scan(t, tree)
	if assigned, err = sriov.Assign(inv, pools); err != nil {
		t.Fatal(err)
	}
	want["loom.dev/sriov_net_b"] = []string{"ens1f0#2", "ens1f0#3", "ens1f0#4", "ens1f0#5", "ens1f0#6", "ens1f0#7"}
	if got := names(inv, assigned); !reflect.DeepEqual(got, want) {
		t.Errorf("after numvfs 8: got %v, want %v", got, want)
	}
}
