package sim

// SR-IOV without hardware (Options.SRIOV). Each node gets what a host with one dual-port
// SR-IOV NIC shows Loom:
//
//   - a fake sysfs tree (package sriovtest) in its /var/lib/loom/sim-sysfs: PF ens1f0 with
//     simVFs netdev VFs (driver iavf, netdevs ens1f0v0…) and PF ens1f1 with simVFs DPDK VFs
//     (vfio-pci, no netdevs);
//   - the PF netdev ens1f0, a veth whose other end is on the bridge "sriov" in the underlay
//     namespace: the NIC's cable into a data network that joins every node on L2, whatever
//     its underlay subnet;
//   - each netdev VF stood in for by a macvlan link (bridge mode) on ens1f0, named as sysfs
//     names it, so moving it into a pod, renaming it, its MAC, MTU, addresses and traffic are
//     all real;
//   - VF settings on the PF (VLAN, spoof check, trust…) recorded in
//     /var/lib/loom/sim-vf-state.json instead of written to hardware (loomd's
//     sriov.pfConfig "record:"), where tests read them.
//
// loomd advertises two pools of ens1f0's VFs and one of the DPDK VFs (simPools); the node's
// pod runtime plays the kubelet's device manager (package fakekubelet).
//
// A VF stand-in whose pod namespace is deleted before CNI DEL dies with it, where the kernel
// would hand a real VF back to the host; the runtime always runs DEL first, as containerd does.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"

	"github.com/loom-cni/loom/sriov/sriovtest"
)

const (
	// simVFs is the number of VFs of each simulated PF.
	simVFs = 8
	// sriovBridge is the data network's switch in the underlay namespace.
	sriovBridge = "sriov"
	// SimPF is the PF whose VFs are netdevs: a veth in each node.
	SimPF = "ens1f0"
	// simSysfs is the fake sysfs root and simVFState the recorded VF settings, as the node
	// sees them.
	simSysfs   = "/var/lib/loom/sim-sysfs"
	simVFState = "/var/lib/loom/sim-vf-state.json"
)

// The simulated node's SR-IOV pools: ens1f0's VFs split in two, and every DPDK VF.
const (
	SRIOVPoolA    = "loom.dev/sriov_net_a"
	SRIOVPoolB    = "loom.dev/sriov_net_b"
	SRIOVPoolDPDK = "loom.dev/sriov_dpdk"
)

// simPFs are each node's PFs, as package sriovtest writes them.
func simPFs() []sriovtest.PF { return sriovtest.Uniform(2, simVFs) }

// simPools is the pools section of loomd's sriov configuration.
func simPools() []any {
	half := simVFs / 2
	return []any{
		map[string]any{"resourceName": SRIOVPoolA, "selectors": map[string]any{"pfNames": []string{fmt.Sprintf("%s#0-%d", SimPF, half-1)}}},
		map[string]any{"resourceName": SRIOVPoolB, "selectors": map[string]any{"pfNames": []string{fmt.Sprintf("%s#%d-%d", SimPF, half, simVFs-1)}}},
		map[string]any{"resourceName": SRIOVPoolDPDK, "selectors": map[string]any{"drivers": []string{sriovtest.DPDKDriver}}},
	}
}

// sriovConfig is the sriov section of loomd's configuration in a simulated node.
func sriovConfig() map[string]any {
	return map[string]any{
		"sysfsRoot": simSysfs,
		"pfConfig":  "record:" + simVFState,
		"pools":     simPools(),
	}
}

// SimVFNetdev names VF i of the simulated netdev PF, as the node's sysfs does.
func SimVFNetdev(i int) string { return fmt.Sprintf("%sv%d", SimPF, i) }

// SimSysfsRoot is the host path of a node's fake sysfs root.
func (n Node) SimSysfsRoot() string { return n.HostPath(simSysfs) }

// SimVFStateFile is the host path of a node's recorded VF settings.
func (n Node) SimVFStateFile() string { return n.HostPath(simVFState) }

// writeSimSysfs writes the node's fake sysfs once; a cluster that is up keeps its tree.
func writeSimSysfs(n Node) error {
	dir := n.HostPath(simSysfs)
	if _, err := os.Stat(filepath.Join(dir, "sys")); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if _, err := sriovtest.Write(dir, simPFs()...); err != nil {
		return fmt.Errorf("%s: fake sysfs: %w", n.Name, err)
	}
	return nil
}

// simPCIIDs is the fake tree's PCI ID database, as the node sees it (loomd's PCIDB_PATH).
func simPCIIDs() string { return filepath.Join(simSysfs, "pci.ids") }

// buildSimNIC gives node n its PF netdev, cabled to the data network, and a stand-in for each
// of its netdev VFs.
func buildSimNIC(ul, node netHandle, n Node) error {
	port := n.Name + ".pf0"
	if err := addVeth(ul.Handle, port, SimPF, node.ns); err != nil {
		return err
	}
	if err := attachToBridge(ul.Handle, port, sriovBridge); err != nil {
		return err
	}
	pf, err := linkUp(node.Handle, SimPF)
	if err != nil {
		return err
	}
	for i := range simVFs {
		vf := &netlink.Macvlan{
			LinkAttrs: netlink.LinkAttrs{Name: SimVFNetdev(i), ParentIndex: pf.Attrs().Index},
			Mode:      netlink.MACVLAN_MODE_BRIDGE,
		}
		if err := node.LinkAdd(vf); err != nil {
			return fmt.Errorf("%s: VF stand-in %s: %w", n.Name, vf.Name, err)
		}
	}
	return writeSimSysfs(n)
}
