// Package sriov owns Loom's view of a node's SR-IOV devices: discovering physical functions
// (PFs) and their virtual functions (VFs) from sysfs, and sorting the VFs into the pools that
// Loom's device plugin advertises to the kubelet as extended resources.
//
// # Design notes
//
// Discovery reads a sysfs root given to NewScanner (the host's "/" in loomd, a generated tree
// from package sriovtest in tests), never the process's own /sys. ghw lists the PCI functions
// and gives their vendor and device IDs (from modalias) and drivers; ghw knows nothing of
// SR-IOV, so the relations come from the files the kernel writes for it: a PF is a function
// with sriov_totalvfs, its VFs are the targets of its virtfnN links, and each VF's physfn
// link must point back at it. ghw's ParentAddress of a VF is its root port, not its PF, and
// is not used. NUMA nodes, netdevs, link types and operstates are read from the device
// directories too, because ghw reports NUMA only when topology discovery runs, and that
// discovery reads the real host.
//
// A scan is a snapshot: Scan reads everything again and returns a new Inventory, so a caller
// that watches for changes (sriov_numvfs written, a VF removed, a link going down) rescans and
// compares. A VF is listed when its virtfn link is there; sriov_numvfs is reported as the
// kernel says it, even when a VF was removed on its own and the two disagree.
//
// A malformed entry is an error that names the device and the file (*MalformedError), never
// an empty or partial inventory: ghw drops its whole listing when one modalias cannot be
// parsed, and Scan finds out which entry did it.
//
// ghw finds its PCI ID database (pci.ids, for names Loom does not use but ghw insists on
// loading) only through the PCIDB_PATH environment variable or the host's usual paths; an
// image without hwdata must set PCIDB_PATH.
//
// Watch rescans at an interval and passes on each assignment of VFs to pools that differs
// from the last: sysfs has no change notification for sriov_numvfs, VF removal or operstate.
// ADD does not scan: (*Scanner).Function reads the one VF it attaches from a few files.
//
// Pools are parsed once from configuration (ParsePools) into immutable values and applied to
// an inventory by Assign. The rules of both are on those functions.
//
// The subpackages are the rest of Loom's SR-IOV: deviceplugin (a kubelet device plugin per
// pool, kept up to date by Watch), podresources (which devices the kubelet gave a pod), vf
// (what a PF holds for each VF, through netlink or a recording file) and attach (the
// loom-sriov network type).
package sriov
