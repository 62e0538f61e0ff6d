// Package sriovtest writes fake sysfs trees of SR-IOV NICs, for the tests of package sriov and
// for the simulated cluster, where each node gets a tree of its own.
//
// A tree has the shape the kernel gives a real host, as far as discovery reads it:
//
//	sys/devices/pci0000:00/<addr>/                 modalias, vendor, device, class, numa_node
//	    <pf>/sriov_totalvfs, sriov_numvfs, virtfnN -> ../<vf addr>
//	    <vf>/physfn -> ../<pf addr>
//	    <addr>/driver -> ../../../bus/pci/drivers/<driver>
//	    <addr>/net/<name>/                          operstate, type (only for netdev drivers)
//	sys/bus/pci/devices/<addr> -> ../../../devices/pci0000:00/<addr>
//	sys/bus/pci/drivers/<driver>/<addr> -> ../../../../devices/pci0000:00/<addr>
//	sys/class/net/<name> -> ../../devices/pci0000:00/<addr>/net/<name>
//	pci.ids                                         a small PCI ID database
//
// Every link is relative, so the tree resolves inside its root wherever it is written. A host
// bridge without SR-IOV sits at 0000:00:00.0 so that discovery always has a device to skip.
// The methods on Tree change the tree the way the kernel does when an administrator writes
// sriov_numvfs, removes a device or binds a driver, so that rescans can be tested.
package sriovtest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// DPDKDriver is the userspace driver PFs' VFs are bound to when a spec asks for DPDK VFs.
const DPDKDriver = "vfio-pci"

// maxVFs is the number of VFs one PF's bus can address in this layout: VF j sits at device
// 2+j/8, function j%8, and a PCI device number is at most 0x1f.
const maxVFs = (0x1f - 1) * 8

// PF describes one physical function and its VFs. Zero values take the defaults named on
// each field.
type PF struct {
	// Name is the PF's netdev name, e.g. "ens1f0"; its VFs' netdevs are "<Name>v<index>".
	Name string
	// Vendor, Device and VFDevice are PCI IDs as four hex digits: "8086", "1572", "154c".
	Vendor, Device, VFDevice string
	// Driver is the PF's driver ("i40e"); VFDriver its VFs' ("iavf"). A VFDriver of
	// DPDKDriver (or any driver without a netdev, such as "uio_pci_generic") gives VFs
	// without netdevs.
	Driver, VFDriver string
	// NUMANode is written to numa_node; -1 means the platform has no NUMA.
	NUMANode int
	// TotalVFs and NumVFs are what sriov_totalvfs and sriov_numvfs say.
	TotalVFs, NumVFs int
	// LinkDown sets the operstate of the PF and its VFs to "down".
	LinkDown bool
}

// Uniform returns n PFs with m VFs each (and room for 2m): PF i is named ens<1+i/2>f<i%2>,
// sits on NUMA node i%2, and its VFs use the kernel driver iavf when i is even and
// vfio-pci (DPDK) when i is odd.
func Uniform(n, m int) []PF {
	pfs := make([]PF, n)
	for i := range pfs {
		pfs[i] = PF{
			Name:     fmt.Sprintf("ens%df%d", 1+i/2, i%2),
			NUMANode: i % 2,
			TotalVFs: 2 * m,
			NumVFs:   m,
		}
		if i%2 == 1 {
			pfs[i].VFDriver = DPDKDriver
		}
	}
	return pfs
}

// Tree is a fake sysfs written on disk.
type Tree struct {
	// Root is the directory to give discovery as its sysfs root: it holds sys/.
	Root string
	// PCIIDs is the path of the tree's pci.ids, for PCIDB_PATH.
	PCIIDs string

	pfs []pfEntry
}

type pfEntry struct {
	spec    PF
	address string
	bus     int
}

// New writes a tree for pfs under a fresh temporary directory of t, points PCIDB_PATH at its
// pci.ids for the rest of the test (ghw reads the database path from the environment only),
// and fails the test on any error. Tests that use it cannot run in parallel.
func New(t testing.TB, pfs ...PF) *Tree {
	t.Helper()
	tree, err := Write(t.TempDir(), pfs...)
	if err != nil {
		t.Fatalf("write fake sysfs: %v", err)
	}
	t.Setenv("PCIDB_PATH", tree.PCIIDs)
	return tree
}

// Write writes a tree for pfs under dir, which should be empty.
func Write(dir string, pfs ...PF) (*Tree, error) {
	tree := &Tree{Root: dir, PCIIDs: filepath.Join(dir, "pci.ids")}
	if err := os.WriteFile(tree.PCIIDs, []byte(pciIDs), 0o644); err != nil {
		return nil, err
	}
	hostBridge := device{address: "0000:00:00.0", vendor: "8086", device: "2020", class: "060000", numa: -1}
	if err := tree.writeDevice(hostBridge); err != nil {
		return nil, err
	}
	names := make(map[string]bool)
	for i, spec := range pfs {
		spec = withDefaults(spec, i)
		if names[spec.Name] {
			return nil, fmt.Errorf("pf %d: name %s used twice", i, spec.Name)
		}
		names[spec.Name] = true
		if spec.NumVFs < 0 || spec.NumVFs > spec.TotalVFs || spec.TotalVFs > maxVFs {
			return nil, fmt.Errorf("pf %s: want 0 <= numvfs (%d) <= totalvfs (%d) <= %d",
				spec.Name, spec.NumVFs, spec.TotalVFs, maxVFs)
		}
		bus := 0x3b + i
		pf := pfEntry{spec: spec, bus: bus, address: fmt.Sprintf("0000:%02x:00.0", bus)}
		tree.pfs = append(tree.pfs, pf)
		if err := tree.writePF(pf); err != nil {
			return nil, fmt.Errorf("pf %s: %w", spec.Name, err)
		}
	}
	return tree, nil
}

func withDefaults(spec PF, i int) PF {
	if spec.Name == "" {
		spec.Name = fmt.Sprintf("ens%df%d", 1+i/2, i%2)
	}
	if spec.Vendor == "" {
		spec.Vendor = "8086"
	}
	if spec.Device == "" {
		spec.Device = "1572"
	}
	if spec.VFDevice == "" {
		spec.VFDevice = "154c"
	}
	if spec.Driver == "" {
		spec.Driver = "i40e"
	}
	if spec.VFDriver == "" {
		spec.VFDriver = "iavf"
	}
	return spec
}

// PFAddress returns the PCI address of the PF named name, or "" when there is none.
func (t *Tree) PFAddress(name string) string {
	if pf, ok := t.pf(name); ok {
		return pf.address
	}
	return ""
}

// VFAddress returns the PCI address that VF index of the PF named name has (or would have).
func (t *Tree) VFAddress(name string, index int) string {
	pf, ok := t.pf(name)
	if !ok {
		return ""
	}
	return pf.vfAddress(index)
}

// DeviceDir returns the directory of the device at address, for tests that write their own
// (malformed) entries into it.
func (t *Tree) DeviceDir(address string) string {
	return filepath.Join(t.Root, "sys", "devices", "pci0000:00", address)
}

// SetNumVFs writes sriov_numvfs of the PF named name and creates or removes its VFs, as the
// kernel does: VFs are created or removed from the end.
func (t *Tree) SetNumVFs(name string, n int) error {
	i, ok := t.pfIndex(name)
	if !ok {
		return fmt.Errorf("set numvfs of %s: no such pf", name)
	}
	pf := &t.pfs[i]
	if n < 0 || n > pf.spec.TotalVFs {
		return fmt.Errorf("set numvfs of %s: %d is not within 0..%d", name, n, pf.spec.TotalVFs)
	}
	for j := n; j < pf.spec.NumVFs; j++ {
		if err := t.RemoveVF(name, j); err != nil {
			return err
		}
	}
	for j := pf.spec.NumVFs; j < n; j++ {
		if err := t.writeVF(*pf, j); err != nil {
			return fmt.Errorf("set numvfs of %s: %w", name, err)
		}
	}
	pf.spec.NumVFs = n
	return writeFile(filepath.Join(t.DeviceDir(pf.address), "sriov_numvfs"), strconv.Itoa(n))
}

// RemoveVF removes VF index of the PF named name as `echo 1 > remove` does: the device, its
// links and its netdev go, the PF's virtfn link goes, and sriov_numvfs stays as it was.
// Removing a VF that is not there is not an error.
func (t *Tree) RemoveVF(name string, index int) error {
	pf, ok := t.pf(name)
	if !ok {
		return fmt.Errorf("remove vf %d of %s: no such pf", index, name)
	}
	addr := pf.vfAddress(index)
	dir := t.DeviceDir(addr)
	driver, _ := os.Readlink(filepath.Join(dir, "driver"))
	for _, path := range []string{
		filepath.Join(t.Root, "sys", "class", "net", vfNetdev(pf.spec, index)),
		filepath.Join(t.Root, "sys", "bus", "pci", "drivers", filepath.Base(driver), addr),
		filepath.Join(t.Root, "sys", "bus", "pci", "devices", addr),
		filepath.Join(t.DeviceDir(pf.address), fmt.Sprintf("virtfn%d", index)),
	} {
		if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("remove vf %s: %w", addr, err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove vf %s: %w", addr, err)
	}
	return nil
}

// Bind rebinds the device at address to driver, creating or removing its netdev as the
// driver is a kernel netdev driver or a userspace (DPDK) one. The netdev, when created, is
// named netdev.
func (t *Tree) Bind(address, driver, netdev string) error {
	dir := t.DeviceDir(address)
	old, err := os.Readlink(filepath.Join(dir, "driver"))
	if err != nil {
		return fmt.Errorf("bind %s to %s: %w", address, driver, err)
	}
	if err := t.removeNetdevs(dir); err != nil {
		return fmt.Errorf("bind %s to %s: %w", address, driver, err)
	}
	for _, path := range []string{
		filepath.Join(t.Root, "sys", "bus", "pci", "drivers", filepath.Base(old), address),
		filepath.Join(dir, "driver"),
	} {
		if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("bind %s to %s: %w", address, driver, err)
		}
	}
	if err := t.bindDriver(address, driver); err != nil {
		return fmt.Errorf("bind %s to %s: %w", address, driver, err)
	}
	if isUserspace(driver) {
		return nil
	}
	return t.writeNetdev(address, netdev, true)
}

// SetOperstate writes the operstate ("up", "down") of the netdev named netdev.
func (t *Tree) SetOperstate(netdev, state string) error {
	path := filepath.Join(t.Root, "sys", "class", "net", netdev, "operstate")
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("set operstate of %s: %w", netdev, err)
	}
	return writeFile(path, state)
}

func (t *Tree) pf(name string) (pfEntry, bool) {
	i, ok := t.pfIndex(name)
	if !ok {
		return pfEntry{}, false
	}
	return t.pfs[i], true
}

func (t *Tree) pfIndex(name string) (int, bool) {
	for i, pf := range t.pfs {
		if pf.spec.Name == name {
			return i, true
		}
	}
	return 0, false
}

func (pf pfEntry) vfAddress(index int) string {
	return fmt.Sprintf("0000:%02x:%02x.%d", pf.bus, 2+index/8, index%8)
}

func vfNetdev(pf PF, index int) string {
	return fmt.Sprintf("%sv%d", pf.Name, index)
}

func (t *Tree) writePF(pf pfEntry) error {
	spec := pf.spec
	dev := device{
		address: pf.address, vendor: spec.Vendor, device: spec.Device, class: "020000",
		numa: spec.NUMANode, driver: spec.Driver, netdev: spec.Name, up: !spec.LinkDown,
	}
	if err := t.writeDevice(dev); err != nil {
		return err
	}
	dir := t.DeviceDir(pf.address)
	if err := writeFile(filepath.Join(dir, "sriov_totalvfs"), strconv.Itoa(spec.TotalVFs)); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, "sriov_numvfs"), strconv.Itoa(spec.NumVFs)); err != nil {
		return err
	}
	for j := 0; j < spec.NumVFs; j++ {
		if err := t.writeVF(pf, j); err != nil {
			return err
		}
	}
	return nil
}

func (t *Tree) writeVF(pf pfEntry, index int) error {
	spec := pf.spec
	addr := pf.vfAddress(index)
	dev := device{
		address: addr, vendor: spec.Vendor, device: spec.VFDevice, class: "020000",
		numa: spec.NUMANode, driver: spec.VFDriver, netdev: vfNetdev(spec, index), up: !spec.LinkDown,
	}
	if err := t.writeDevice(dev); err != nil {
		return err
	}
	if err := os.Symlink("../"+addr, filepath.Join(t.DeviceDir(pf.address), fmt.Sprintf("virtfn%d", index))); err != nil {
		return err
	}
	return os.Symlink("../"+pf.address, filepath.Join(t.DeviceDir(addr), "physfn"))
}

// device is one PCI function as writeDevice lays it out.
type device struct {
	address, vendor, device, class string
	numa                           int
	driver, netdev                 string
	up                             bool
}

func (t *Tree) writeDevice(d device) error {
	dir := t.DeviceDir(d.address)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	files := map[string]string{
		"modalias":  Modalias(d.vendor, d.device, d.class),
		"vendor":    "0x" + d.vendor,
		"device":    "0x" + d.device,
		"class":     "0x" + d.class,
		"numa_node": strconv.Itoa(d.numa),
	}
	for name, content := range files {
		if err := writeFile(filepath.Join(dir, name), content); err != nil {
			return err
		}
	}
	bus := filepath.Join(t.Root, "sys", "bus", "pci", "devices")
	if err := os.MkdirAll(bus, 0o755); err != nil {
		return err
	}
	if err := os.Symlink("../../../devices/pci0000:00/"+d.address, filepath.Join(bus, d.address)); err != nil {
		return err
	}
	if d.driver == "" {
		return nil
	}
	if err := t.bindDriver(d.address, d.driver); err != nil {
		return err
	}
	if isUserspace(d.driver) || d.netdev == "" {
		return nil
	}
	return t.writeNetdev(d.address, d.netdev, d.up)
}

func (t *Tree) bindDriver(address, driver string) error {
	drivers := filepath.Join(t.Root, "sys", "bus", "pci", "drivers", driver)
	if err := os.MkdirAll(drivers, 0o755); err != nil {
		return err
	}
	if err := os.Symlink("../../../../devices/pci0000:00/"+address, filepath.Join(drivers, address)); err != nil {
		return err
	}
	return os.Symlink("../../../bus/pci/drivers/"+driver, filepath.Join(t.DeviceDir(address), "driver"))
}

func (t *Tree) writeNetdev(address, name string, up bool) error {
	dir := filepath.Join(t.DeviceDir(address), "net", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	state := "up"
	if !up {
		state = "down"
	}
	if err := writeFile(filepath.Join(dir, "operstate"), state); err != nil {
		return err
	}
	// type 1 is ARPHRD_ETHER.
	if err := writeFile(filepath.Join(dir, "type"), "1"); err != nil {
		return err
	}
	class := filepath.Join(t.Root, "sys", "class", "net")
	if err := os.MkdirAll(class, 0o755); err != nil {
		return err
	}
	return os.Symlink("../../devices/pci0000:00/"+address+"/net/"+name, filepath.Join(class, name))
}

func (t *Tree) removeNetdevs(dir string) error {
	entries, err := os.ReadDir(filepath.Join(dir, "net"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.Remove(filepath.Join(t.Root, "sys", "class", "net", e.Name())); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return os.RemoveAll(filepath.Join(dir, "net"))
}

// Modalias returns the modalias the kernel writes for a PCI function with the given vendor
// and device IDs (four hex digits each) and class (six hex digits).
func Modalias(vendor, device, class string) string {
	return fmt.Sprintf("pci:v0000%sd0000%ssv0000%ssd00000000bc%ssc%si%s",
		upper(vendor), upper(device), upper(vendor), upper(class[0:2]), upper(class[2:4]), upper(class[4:6]))
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'f' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

func isUserspace(driver string) bool {
	switch driver {
	case "vfio-pci", "uio_pci_generic", "igb_uio":
		return true
	}
	return false
}

func writeFile(path, content string) error {
	return os.WriteFile(path, []byte(content+"\n"), 0o644)
}
