package sriov_test

import (
	"errors"
	"reflect"
	"testing"

	"github.com/loom-cni/loom/sriov"
)

func TestParsePools(t *testing.T) {
	yamlConfig := `
pools:
- resourceName: loom.dev/sriov_net_a
  selectors:
    vendors: ["8086"]
    devices: ["154C"]
    drivers: [iavf]
    pfNames: ["ens1f0#0-3,6", ens1f1]
    linkTypes: [ether]
- resourceName: example.com/dpdk
  selectors:
    drivers: [vfio-pci]
`
	jsonConfig := `{"pools": [
  {"resourceName": "loom.dev/sriov_net_a", "selectors": {"vendors": ["8086"], "devices": ["154c"],
   "drivers": ["iavf"], "pfNames": ["ens1f0#0-3,6", "ens1f1"], "linkTypes": ["ether"]}},
  {"resourceName": "example.com/dpdk", "selectors": {"drivers": ["vfio-pci"]}}]}`
	want := []sriov.PoolConfig{
		{
			Name: "loom.dev/sriov_net_a", Vendors: []string{"8086"}, Devices: []string{"154c"},
			Drivers: []string{"iavf"}, LinkTypes: []string{"ether"},
			PFs: []sriov.PFSelector{
				{PF: "ens1f0", Ranges: []sriov.VFRange{{First: 0, Last: 3}, {First: 6, Last: 6}}},
				{PF: "ens1f1"},
			},
		},
		{Name: "example.com/dpdk", Drivers: []string{"vfio-pci"}},
	}
	for name, config := range map[string]string{"yaml": yamlConfig, "json": jsonConfig} {
		got, err := sriov.ParsePools([]byte(config))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", name, got, want)
		}
	}

	got, err := sriov.ParsePools([]byte(""))
	if err != nil || len(got) != 0 {
		t.Errorf("empty config: got %v, %v; want no pools", got, err)
	}
}

func TestParsePoolsRejects(t *testing.T) {
	tests := []struct {
		name     string
		config   string
		selector string
	}{
		{"no resource name", `{"pools": [{"selectors": {"drivers": ["iavf"]}}]}`, "resourceName"},
		{"resource name without domain", `{"pools": [{"resourceName": "sriov_net_a", "selectors": {"drivers": ["iavf"]}}]}`, "resourceName"},
		{"resource name in kubernetes.io", `{"pools": [{"resourceName": "kubernetes.io/vf", "selectors": {"drivers": ["iavf"]}}]}`, "resourceName"},
		{"resource name in a kubernetes.io subdomain", `{"pools": [{"resourceName": "x.kubernetes.io/vf", "selectors": {"drivers": ["iavf"]}}]}`, "resourceName"},
		{"resource name with spaces", `{"pools": [{"resourceName": "loom.dev/net a", "selectors": {"drivers": ["iavf"]}}]}`, "resourceName"},
		{"resource name with bad domain", `{"pools": [{"resourceName": "Loom_dev/net", "selectors": {"drivers": ["iavf"]}}]}`, "resourceName"},
		{"resource name too long", `{"pools": [{"resourceName": "loom.dev/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "selectors": {"drivers": ["iavf"]}}]}`, "resourceName"},
		{"resource name twice", `{"pools": [{"resourceName": "loom.dev/a", "selectors": {"drivers": ["iavf"]}}, {"resourceName": "loom.dev/a", "selectors": {"drivers": ["vfio-pci"]}}]}`, "resourceName"},
		{"no selectors", `{"pools": [{"resourceName": "loom.dev/a"}]}`, "selectors"},
		{"vendor not hex", `{"pools": [{"resourceName": "loom.dev/a", "selectors": {"vendors": ["intel"]}}]}`, "vendors"},
		{"vendor too long", `{"pools": [{"resourceName": "loom.dev/a", "selectors": {"vendors": ["0x8086"]}}]}`, "vendors"},
		{"device not hex", `{"pools": [{"resourceName": "loom.dev/a", "selectors": {"devices": ["15g4"]}}]}`, "devices"},
		{"driver with a slash", `{"pools": [{"resourceName": "loom.dev/a", "selectors": {"drivers": ["../iavf"]}}]}`, "drivers"},
		{"unknown link type", `{"pools": [{"resourceName": "loom.dev/a", "selectors": {"linkTypes": ["eth"]}}]}`, "linkTypes"},
		{"pf name too long", `{"pools": [{"resourceName": "loom.dev/a", "selectors": {"pfNames": ["enp175s0f0np0xyz"]}}]}`, "pfNames"},
		{"pf name empty", `{"pools": [{"resourceName": "loom.dev/a", "selectors": {"pfNames": ["#0-3"]}}]}`, "pfNames"},
		{"range backwards", `{"pools": [{"resourceName": "loom.dev/a", "selectors": {"pfNames": ["ens1f0#7-0"]}}]}`, "pfNames"},
		{"range open", `{"pools": [{"resourceName": "loom.dev/a", "selectors": {"pfNames": ["ens1f0#3-"]}}]}`, "pfNames"},
		{"range empty", `{"pools": [{"resourceName": "loom.dev/a", "selectors": {"pfNames": ["ens1f0#"]}}]}`, "pfNames"},
		{"range negative", `{"pools": [{"resourceName": "loom.dev/a", "selectors": {"pfNames": ["ens1f0#-1"]}}]}`, "pfNames"},
		{"range not a number", `{"pools": [{"resourceName": "loom.dev/a", "selectors": {"pfNames": ["ens1f0#a-b"]}}]}`, "pfNames"},
		{"range too large", `{"pools": [{"resourceName": "loom.dev/a", "selectors": {"pfNames": ["ens1f0#0-70000"]}}]}`, "pfNames"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pools, err := sriov.ParsePools([]byte(tt.config))
			var bad *sriov.SelectorError
			if !errors.As(err, &bad) {
				t.Fatalf("got %+v, %v; want a *SelectorError", pools, err)
			}
			if bad.Selector != tt.selector {
				t.Errorf("error names selector %q, want %q (%v)", bad.Selector, tt.selector, err)
			}
		})
	}
}

func TestParsePoolsRejectsUnknownKeys(t *testing.T) {
	for _, config := range []string{
		`{"pools": [{"resourceName": "loom.dev/a", "selectors": {"pfName": ["ens1f0"]}}]}`,
		`{"pool": []}`,
		`pools: {resourceName: loom.dev/a}`,
	} {
		if pools, err := sriov.ParsePools([]byte(config)); err == nil {
			t.Errorf("%s: got %+v, want an error", config, pools)
		}
	}
}

// FuzzParsePools: any input either fails or gives pools with valid, distinct names, at least
// one selector each and forward VF ranges.
func FuzzParsePools(f *testing.F) {
	f.Add([]byte(`{"pools": [{"resourceName": "loom.dev/a", "selectors": {"pfNames": ["ens1f0#0-7,9"], "vendors": ["8086"]}}]}`))
	f.Add([]byte("pools:\n- resourceName: loom.dev/b\n  selectors: {drivers: [vfio-pci], linkTypes: [ether]}\n"))
	f.Add([]byte(`{"pools": [{"resourceName": "a/b", "selectors": {"devices": ["ABCD"]}}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		pools, err := sriov.ParsePools(b)
		if err != nil {
			return
		}
		seen := make(map[sriov.ResourceName]bool)
		for _, p := range pools {
			if p.Name == "" || seen[p.Name] {
				t.Fatalf("pool name %q empty or repeated", p.Name)
			}
			seen[p.Name] = true
			if len(p.Vendors)+len(p.Devices)+len(p.Drivers)+len(p.PFs)+len(p.LinkTypes) == 0 {
				t.Fatalf("pool %s has no selectors", p.Name)
			}
			for _, s := range p.PFs {
				for _, r := range s.Ranges {
					if r.First < 0 || r.First > r.Last {
						t.Fatalf("pool %s: range %+v", p.Name, r)
					}
				}
			}
		}
	})
}
