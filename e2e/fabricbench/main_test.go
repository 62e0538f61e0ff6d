package main

import (
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/loom-cni/loom/e2e/sim"
)

func TestTargetFor(t *testing.T) {
	a1 := sim.Node{Name: "node1", Subnet: netip.MustParsePrefix("198.18.1.0/24")}
	a2 := sim.Node{Name: "node2", Subnet: netip.MustParsePrefix("198.18.1.0/24")}
	b3 := sim.Node{Name: "node3", Subnet: netip.MustParsePrefix("198.19.1.0/24")}
	for _, tc := range []struct {
		mode     sim.Mode
		to       sim.Node
		wantKind string
		wantTput float64
		wantRTT  float64
	}{
		{sim.ModeVXLAN, a1, "same node", 0.95, 1.25},
		{sim.ModeBGP, a1, "same node", 0.95, 1.25},
		{sim.ModeVXLAN, a2, "vxlan", 0.75, 1.4},
		{sim.ModeBGP, a2, "routed", 0.9, 1.25},
		{sim.ModeBGP, b3, "routed", 0.9, 1.25},
		{sim.ModeVXLANCrossSubnet, a2, "routed", 0.9, 1.25},
		{sim.ModeVXLANCrossSubnet, b3, "vxlan", 0.75, 1.4},
	} {
		t.Run(string(tc.mode)+"/"+tc.to.Name, func(t *testing.T) {
			got, err := targetFor(tc.mode, a1, tc.to)
			if err != nil {
				t.Fatal(err)
			}
			if got.kind != tc.wantKind || got.throughput != tc.wantTput || got.latency != tc.wantRTT {
				t.Errorf("targetFor = %+v, want %s ≥%g ≤%g", got, tc.wantKind, tc.wantTput, tc.wantRTT)
			}
		})
	}
	if _, err := targetFor(sim.ModeBridge, a1, a2); err == nil {
		t.Error("targetFor(bridge) = nil error, want one: bridge is not Loom's network")
	}
}

func TestPickBlocks(t *testing.T) {
	cluster := netip.MustParsePrefix("10.244.0.0/16")
	used := []netip.Prefix{netip.MustParsePrefix("10.244.255.192/26"), netip.MustParsePrefix("10.244.255.0/25")}
	got, err := pickBlocks(cluster, 26, used, 3)
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{
		netip.MustParsePrefix("10.244.255.128/26"),
		netip.MustParsePrefix("10.244.254.192/26"),
		netip.MustParsePrefix("10.244.254.128/26"),
	}
	if !slices.Equal(got, want) {
		t.Errorf("pickBlocks = %v, want %v", got, want)
	}
	if _, err = pickBlocks(cluster, 26, used, 1022); err == nil {
		t.Error("pickBlocks(1022 of the 1021 free) = nil error, want one")
	}
	all, err := pickBlocks(cluster, 26, used, 1021)
	if err != nil || len(all) != 1021 {
		t.Errorf("pickBlocks(all 1021 free) = %d blocks, %v", len(all), err)
	}
}

func TestProcessStartAndMemory(t *testing.T) {
	born, err := processStart(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if age := time.Since(born); age < 0 || age > 10*time.Minute {
		t.Errorf("this process started %s ago, by processStart", age)
	}
	m, err := readMemory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.rss <= 0 || m.hwm < m.rss {
		t.Errorf("readMemory = %+v: want 0 < rss <= hwm", m)
	}
}
