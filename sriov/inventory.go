package sriov

import "fmt"

// Inventory is what one scan found: every SR-IOV PF of the host, sorted by PCI address.
type Inventory struct {
	PFs []PF
}

// VFs returns every VF of the inventory, in PF order and then by VF index.
func (inv Inventory) VFs() []VF {
	var vfs []VF
	for _, pf := range inv.PFs {
		vfs = append(vfs, pf.VFs...)
	}
	return vfs
}

// PF is a physical function: a PCI function with sriov_totalvfs.
type PF struct {
	// Address is the PCI address, e.g. "0000:3b:00.0".
	Address string
	// Vendor and Device are the PCI vendor and device IDs, four lower-case hex digits.
	Vendor, Device string
	// Driver is the bound driver, "" when none is.
	Driver string
	// Netdev is the PF's network interface, "" when its driver gives it none.
	Netdev string
	// LinkType is the netdev's link type ("ether", "infiniband"), "" when it has no netdev.
	LinkType string
	// LinkUp says the netdev's operstate is "up".
	LinkUp bool
	// NUMANode is the function's NUMA node, -1 when the platform does not say.
	NUMANode int
	// TotalVFs and NumVFs are what sriov_totalvfs and sriov_numvfs say.
	TotalVFs, NumVFs int
	// VFs are the VFs present, by index.
	VFs []VF
}

// VF is a virtual function of a PF.
type VF struct {
	// Address is the PCI address, e.g. "0000:3b:02.0".
	Address string
	// Index is N in the PF's virtfnN link.
	Index int
	// PF is the PCI address of the VF's PF.
	PF string
	// Vendor and Device are the PCI vendor and device IDs, four lower-case hex digits.
	Vendor, Device string
	// Driver is the bound driver, "" when none is.
	Driver string
	// Netdev is the VF's network interface, "" when it has none (DPDK or unbound).
	Netdev string
	// LinkType is the VF's link type; a VF without a netdev takes its PF's.
	LinkType string
	// NUMANode is the function's NUMA node, -1 when the platform does not say.
	NUMANode int
	// DPDK says the VF is bound to a userspace driver (vfio-pci, uio_pci_generic, igb_uio)
	// and is handed to pods as a device, not as a netdev.
	DPDK bool
	// LinkUp says the netdev's operstate is "up"; false for a VF without a netdev.
	LinkUp bool
}

// String names the VF for errors and logs: its index, its PF and its own address.
func (vf VF) String() string {
	return fmt.Sprintf("vf %d of %s (%s)", vf.Index, vf.PF, vf.Address)
}

// isUserspaceDriver says driver hands a function to userspace (DPDK) instead of giving it a
// netdev.
func isUserspaceDriver(driver string) bool {
	switch driver {
	case "vfio-pci", "uio_pci_generic", "igb_uio":
		return true
	}
	return false
}

// MalformedError reports a sysfs entry that does not read as the kernel writes it.
type MalformedError struct {
	// Device is the PCI address (or the directory entry name) of the device.
	Device string
	// File is the path of the offending file or link.
	File string
	// Reason says what is wrong with it.
	Reason string
}

func (e *MalformedError) Error() string {
	return fmt.Sprintf("device %s: malformed %s: %s", e.Device, e.File, e.Reason)
}
