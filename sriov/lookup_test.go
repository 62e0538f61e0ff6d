package sriov_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/loom-cni/loom/sriov"
	"github.com/loom-cni/loom/sriov/sriovtest"
)

func TestFunctionAgreesWithScan(t *testing.T) {
	tree := sriovtest.New(t, sriovtest.Uniform(3, 3)...)
	inv := scan(t, tree)
	s := sriov.NewScanner(tree.Root)
	for _, pf := range inv.PFs {
		for _, vf := range pf.VFs {
			fn, err := s.Function(vf.Address)
			if err != nil {
				t.Fatalf("function %s: %v", vf.Address, err)
			}
			if fn.VF != vf {
				t.Errorf("function %s:\n got %+v\nwant %+v", vf.Address, fn.VF, vf)
			}
			if fn.PFNetdev != pf.Netdev {
				t.Errorf("function %s: pf netdev %q, want %q", vf.Address, fn.PFNetdev, pf.Netdev)
			}
		}
	}
}

func TestFunctionFollowsDriverAndNetdev(t *testing.T) {
	tree := sriovtest.New(t, sriovtest.PF{Name: "ens1f0", TotalVFs: 4, NumVFs: 4})
	s := sriov.NewScanner(tree.Root)
	addr := tree.VFAddress("ens1f0", 2)

	if err := tree.Bind(addr, sriovtest.DPDKDriver, ""); err != nil {
		t.Fatal(err)
	}
	fn, err := s.Function(addr)
	if err != nil {
		t.Fatal(err)
	}
	if !fn.DPDK || fn.Driver != sriovtest.DPDKDriver || fn.Netdev != "" || fn.Index != 2 || fn.LinkType != "ether" {
		t.Errorf("after binding vfio-pci: got %+v", fn)
	}

	// The kernel hands a VF back from a deleted pod namespace under its in-pod name.
	if err = tree.Bind(addr, "iavf", "net1"); err != nil {
		t.Fatal(err)
	}
	if fn, err = s.Function(addr); err != nil {
		t.Fatal(err)
	}
	if fn.DPDK || fn.Netdev != "net1" || !fn.LinkUp || fn.PFNetdev != "ens1f0" || fn.PF != tree.PFAddress("ens1f0") {
		t.Errorf("after binding iavf as net1: got %+v", fn)
	}
}

func TestFunctionErrors(t *testing.T) {
	tree := sriovtest.New(t, sriovtest.PF{Name: "ens1f0", TotalVFs: 4, NumVFs: 2})
	s := sriov.NewScanner(tree.Root)

	t.Run("not a vf", func(t *testing.T) {
		for _, addr := range []string{tree.PFAddress("ens1f0"), "0000:00:00.0"} {
			if _, err := s.Function(addr); !errors.Is(err, sriov.ErrNotVF) {
				t.Errorf("function %s: got %v, want ErrNotVF", addr, err)
			}
		}
	})
	t.Run("no such device", func(t *testing.T) {
		_, err := s.Function(tree.VFAddress("ens1f0", 3))
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("got %v, want ErrNotExist", err)
		}
	})
	t.Run("malformed address", func(t *testing.T) {
		for _, addr := range []string{"", "3b:02.0", "0000:3b:02.0/../..", "../0000:3b:02.0", "0000:3B:02.0"} {
			if _, err := s.Function(addr); err == nil {
				t.Errorf("function %q: no error", addr)
			}
		}
	})
	t.Run("physfn without virtfn back", func(t *testing.T) {
		addr := tree.VFAddress("ens1f0", 1)
		if err := os.Remove(filepath.Join(tree.DeviceDir(tree.PFAddress("ens1f0")), "virtfn1")); err != nil {
			t.Fatal(err)
		}
		var malformed *sriov.MalformedError
		if _, err := s.Function(addr); !errors.As(err, &malformed) || malformed.Device != addr {
			t.Errorf("got %v, want a MalformedError for %s", err, addr)
		}
	})
	t.Run("malformed vendor", func(t *testing.T) {
		addr := tree.VFAddress("ens1f0", 0)
		if err := os.WriteFile(filepath.Join(tree.DeviceDir(addr), "vendor"), []byte("intel\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		var malformed *sriov.MalformedError
		if _, err := s.Function(addr); !errors.As(err, &malformed) {
			t.Errorf("got %v, want a MalformedError", err)
		}
	})
}
