package sriov

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/jaypipes/ghw"
)

// Scanner discovers the SR-IOV devices under one sysfs root.
type Scanner struct {
	root string
}

// NewScanner returns a Scanner that reads root/sys: "/" on a host, a generated tree in tests.
func NewScanner(root string) *Scanner {
	return &Scanner{root: root}
}

// Scan reads the PFs and VFs present now. It fails with a *MalformedError when an entry it
// needs cannot be read as the kernel writes it.
func (s *Scanner) Scan() (Inventory, error) {
	info, err := ghw.PCI(
		ghw.WithChroot(s.root),
		ghw.WithDisableTools(),    // else ghw runs ethtool against the real host
		ghw.WithDisableTopology(), // else ghw reads the real host's NUMA topology
		ghw.WithDisableWarnings(), // a bad entry is diagnosed below, not logged
	)
	if err != nil {
		// ghw fails here when it finds no pci.ids, which is a deployment mistake to point at.
		return Inventory{}, fmt.Errorf(
			"list pci devices under %s (pci.ids is read from PCIDB_PATH or /usr/share/hwdata, /usr/share/misc): %w",
			s.root, err)
	}
	entries, err := os.ReadDir(s.busDir())
	if err != nil {
		return Inventory{}, fmt.Errorf("list pci devices under %s: %w", s.root, err)
	}
	if len(info.Devices) != len(entries) {
		return Inventory{}, s.diagnose(entries, len(info.Devices))
	}

	devices := make(map[string]*ghw.PCIDevice, len(info.Devices))
	for _, d := range info.Devices {
		devices[d.Address] = d
	}
	var inv Inventory
	for _, d := range info.Devices {
		isPF, err := exists(s.file(d.Address, "sriov_totalvfs"))
		if err != nil {
			return Inventory{}, err
		}
		if !isPF {
			continue
		}
		pf, err := s.pf(d, devices)
		if err != nil {
			return Inventory{}, err
		}
		inv.PFs = append(inv.PFs, pf)
	}
	sort.Slice(inv.PFs, func(i, j int) bool { return inv.PFs[i].Address < inv.PFs[j].Address })
	return inv, nil
}

func (s *Scanner) busDir() string {
	return filepath.Join(s.root, "sys", "bus", "pci", "devices")
}

func (s *Scanner) file(address string, name ...string) string {
	return filepath.Join(append([]string{s.busDir(), address}, name...)...)
}

// pf reads the PF d and the VFs its virtfnN links point at.
func (s *Scanner) pf(d *ghw.PCIDevice, devices map[string]*ghw.PCIDevice) (PF, error) {
	fn, err := s.function(d)
	if err != nil {
		return PF{}, err
	}
	pf := PF{
		Address: d.Address, Vendor: fn.vendor, Device: fn.device, Driver: d.Driver,
		Netdev: fn.netdev, LinkType: fn.linkType, LinkUp: fn.linkUp, NUMANode: fn.numa,
	}
	if pf.TotalVFs, err = s.readCount(d.Address, "sriov_totalvfs"); err != nil {
		return PF{}, err
	}
	if pf.NumVFs, err = s.readCount(d.Address, "sriov_numvfs"); err != nil {
		return PF{}, err
	}
	if pf.NumVFs > pf.TotalVFs {
		return PF{}, &MalformedError{Device: d.Address, File: s.file(d.Address, "sriov_numvfs"),
			Reason: fmt.Sprintf("%d VFs is more than sriov_totalvfs (%d)", pf.NumVFs, pf.TotalVFs)}
	}
	links, err := s.virtfnLinks(d.Address)
	if err != nil {
		return PF{}, err
	}
	for _, l := range links {
		vf, err := s.vf(pf, l, devices)
		if err != nil {
			return PF{}, err
		}
		pf.VFs = append(pf.VFs, vf)
	}
	return pf, nil
}

type virtfnLink struct {
	index  int
	path   string
	target string
}

var virtfnName = regexp.MustCompile(`^virtfn(0|[1-9][0-9]*)$`)

// virtfnLinks returns the PF's virtfnN links by index.
func (s *Scanner) virtfnLinks(address string) ([]virtfnLink, error) {
	entries, err := os.ReadDir(s.file(address))
	if err != nil {
		return nil, fmt.Errorf("read device %s: %w", address, err)
	}
	var links []virtfnLink
	for _, e := range entries {
		m := virtfnName.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		path := s.file(address, e.Name())
		target, err := os.Readlink(path)
		if err != nil {
			return nil, &MalformedError{Device: address, File: path, Reason: err.Error()}
		}
		index, err := strconv.Atoi(m[1])
		if err != nil {
			return nil, &MalformedError{Device: address, File: path, Reason: err.Error()}
		}
		links = append(links, virtfnLink{index: index, path: path, target: filepath.Base(target)})
	}
	sort.Slice(links, func(i, j int) bool { return links[i].index < links[j].index })
	return links, nil
}

// vf reads the VF that link of pf points at, and checks it points back.
func (s *Scanner) vf(pf PF, link virtfnLink, devices map[string]*ghw.PCIDevice) (VF, error) {
	d, ok := devices[link.target]
	if !ok {
		return VF{}, &MalformedError{Device: pf.Address, File: link.path,
			Reason: fmt.Sprintf("points at %s, which is not a listed pci device", link.target)}
	}
	physfn := s.file(d.Address, "physfn")
	back, err := os.Readlink(physfn)
	if err != nil {
		return VF{}, &MalformedError{Device: d.Address, File: physfn, Reason: err.Error()}
	}
	if filepath.Base(back) != pf.Address {
		return VF{}, &MalformedError{Device: d.Address, File: physfn,
			Reason: fmt.Sprintf("points at %s, but %s of %s points here",
				filepath.Base(back), filepath.Base(link.path), pf.Address)}
	}
	fn, err := s.function(d)
	if err != nil {
		return VF{}, err
	}
	vf := VF{
		Address: d.Address, Index: link.index, PF: pf.Address, Vendor: fn.vendor, Device: fn.device,
		Driver: d.Driver, Netdev: fn.netdev, LinkType: fn.linkType, NUMANode: fn.numa,
		DPDK: isUserspaceDriver(d.Driver), LinkUp: fn.linkUp,
	}
	if vf.LinkType == "" {
		vf.LinkType = pf.LinkType
	}
	return vf, nil
}

// function is what PFs and VFs have alike.
type function struct {
	vendor, device   string
	netdev, linkType string
	linkUp           bool
	numa             int
}

func (s *Scanner) function(d *ghw.PCIDevice) (function, error) {
	fn := function{numa: -1}
	if d.Vendor == nil || d.Product == nil || !isPCIID(d.Vendor.ID) || !isPCIID(d.Product.ID) {
		return function{}, &MalformedError{Device: d.Address, File: s.file(d.Address, "modalias"),
			Reason: fmt.Sprintf("%q has no vendor and device ids", d.Modalias)}
	}
	fn.vendor, fn.device = d.Vendor.ID, d.Product.ID

	numa, err := s.readOptional(d.Address, "numa_node")
	if err != nil {
		return function{}, err
	}
	if numa != "" {
		if fn.numa, err = strconv.Atoi(numa); err != nil || fn.numa < -1 {
			return function{}, &MalformedError{Device: d.Address, File: s.file(d.Address, "numa_node"),
				Reason: fmt.Sprintf("%q is not a node number or -1", numa)}
		}
	}

	netdevs, err := os.ReadDir(s.file(d.Address, "net"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return function{}, fmt.Errorf("read netdevs of %s: %w", d.Address, err)
	}
	if len(netdevs) == 0 {
		return fn, nil
	}
	// A function with several netdevs is rare; the first by name is the one a pod gets.
	fn.netdev = netdevs[0].Name()
	state, err := s.readOptional(d.Address, "net", fn.netdev, "operstate")
	if err != nil {
		return function{}, err
	}
	fn.linkUp = state == "up"
	arphrd, err := s.readOptional(d.Address, "net", fn.netdev, "type")
	if err != nil {
		return function{}, err
	}
	fn.linkType = linkType(arphrd)
	return fn, nil
}

// linkType names an ARPHRD_* number from a netdev's type file; "" when it is absent or not
// one that pools select by.
func linkType(arphrd string) string {
	switch arphrd {
	case "1":
		return "ether"
	case "32":
		return "infiniband"
	}
	return ""
}

func isPCIID(id string) bool {
	if len(id) != 4 {
		return false
	}
	_, err := strconv.ParseUint(id, 16, 16)
	return err == nil
}

// readCount reads a file holding a non-negative number.
func (s *Scanner) readCount(address string, name string) (int, error) {
	path := s.file(address, name)
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, &MalformedError{Device: address, File: path, Reason: err.Error()}
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n < 0 {
		return 0, &MalformedError{Device: address, File: path,
			Reason: fmt.Sprintf("%q is not a count", strings.TrimSpace(string(b)))}
	}
	return n, nil
}

// readOptional reads a file that may be missing, as "".
func (s *Scanner) readOptional(address string, name ...string) (string, error) {
	b, err := os.ReadFile(s.file(address, name...))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", s.file(address, name...), err)
	}
	return strings.TrimSpace(string(b)), nil
}

func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stat %s: %w", path, err)
	}
	return true, nil
}

// modaliasFormat is what the kernel writes for a PCI function: vendor, device, subsystem
// vendor and device, base class, subclass and programming interface.
var modaliasFormat = regexp.MustCompile(`^pci:` +
	`v[0-9A-Fa-f]{8}d[0-9A-Fa-f]{8}sv[0-9A-Fa-f]{8}sd[0-9A-Fa-f]{8}` +
	`bc[0-9A-Fa-f]{2}sc[0-9A-Fa-f]{2}i[0-9A-Fa-f]{2}$`)

// diagnose explains why ghw listed fewer devices than sysfs has. ghw gives up on the whole
// listing at the first entry it cannot parse, so the first such entry is the answer.
func (s *Scanner) diagnose(entries []os.DirEntry, listed int) error {
	for _, e := range entries {
		name := e.Name()
		if ghw.PCIAddressFromString(name) == nil {
			return &MalformedError{Device: name, File: filepath.Join(s.busDir(), name),
				Reason: "the name is not a pci address"}
		}
		path := s.file(name, "modalias")
		b, err := os.ReadFile(path)
		if err != nil {
			return &MalformedError{Device: name, File: path, Reason: err.Error()}
		}
		if alias := strings.TrimSpace(string(b)); !modaliasFormat.MatchString(alias) {
			return &MalformedError{Device: name, File: path,
				Reason: fmt.Sprintf("%q is not pci:vXXXXXXXXdXXXXXXXXsvXXXXXXXXsdXXXXXXXXbcXXscXXiXX", alias)}
		}
	}
	return fmt.Errorf("list pci devices under %s: ghw listed %d of %d devices", s.root, listed, len(entries))
}
