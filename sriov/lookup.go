package sriov

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// ErrNotVF is wrapped by the error of Function for a PCI function that is not an SR-IOV VF.
var ErrNotVF = errors.New("not an SR-IOV virtual function")

// Function is one VF as attaching it to a pod needs it: the VF as a scan would report it, and
// the netdev of its PF, through which the PF-side settings of the VF are written.
type Function struct {
	VF
	// PFNetdev is the PF's network interface, "" when its driver gives it none.
	PFNetdev string
}

// pciAddressFormat is a PCI address as sysfs names devices: domain, bus, device and function,
// in lower-case hex. Domains are four digits on most hosts and longer behind VMD.
var pciAddressFormat = regexp.MustCompile(`^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$`)

// Function reads the VF at address from sysfs without a scan: its physfn link gives its PF,
// the PF's virtfnN link that points back gives its index, its driver link its driver, and its
// net/ directory its netdev. It costs a few dozen file reads, where a scan reads every PCI
// device of the host, so it is what ADD uses.
//
// A netdev that has been moved into another network namespace no longer shows in sysfs: the
// VF of a netdev driver then has Netdev "". An address that is malformed, names no device or
// names a function without a physfn link is an error naming it; the last wraps ErrNotVF.
func (s *Scanner) Function(address string) (Function, error) {
	if !pciAddressFormat.MatchString(address) {
		return Function{}, fmt.Errorf("look up vf %q: not a pci address such as 0000:3b:02.0", address)
	}
	if _, err := os.Stat(s.file(address)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Function{}, fmt.Errorf("look up vf %s: no pci device %s under %s: %w", address, address, s.root, err)
		}
		return Function{}, fmt.Errorf("look up vf %s: %w", address, err)
	}
	physfn := s.file(address, "physfn")
	target, err := os.Readlink(physfn)
	if errors.Is(err, fs.ErrNotExist) {
		return Function{}, fmt.Errorf("look up vf %s: pci device %s has no physfn link: %w", address, address, ErrNotVF)
	}
	if err != nil {
		return Function{}, &MalformedError{Device: address, File: physfn, Reason: err.Error()}
	}
	fn := Function{VF: VF{Address: address, PF: filepath.Base(target), NUMANode: -1}}
	if fn.Index, err = s.virtfnIndex(fn.PF, address); err != nil {
		return Function{}, err
	}
	if fn.Driver, err = s.boundDriver(address); err != nil {
		return Function{}, err
	}
	fn.DPDK = isUserspaceDriver(fn.Driver)
	if fn.Vendor, err = s.readPCIID(address, "vendor"); err != nil {
		return Function{}, err
	}
	if fn.Device, err = s.readPCIID(address, "device"); err != nil {
		return Function{}, err
	}
	if err = s.readNUMANode(address, &fn.NUMANode); err != nil {
		return Function{}, err
	}
	if fn.Netdev, err = s.firstNetdev(address); err != nil {
		return Function{}, err
	}
	if fn.PFNetdev, err = s.firstNetdev(fn.PF); err != nil {
		return Function{}, err
	}
	if fn.Netdev != "" {
		state, err := s.readOptional(address, "net", fn.Netdev, "operstate")
		if err != nil {
			return Function{}, err
		}
		fn.LinkUp = state == "up"
		arphrd, err := s.readOptional(address, "net", fn.Netdev, "type")
		if err != nil {
			return Function{}, err
		}
		fn.LinkType = linkType(arphrd)
	}
	if fn.LinkType == "" && fn.PFNetdev != "" {
		arphrd, err := s.readOptional(fn.PF, "net", fn.PFNetdev, "type")
		if err != nil {
			return Function{}, err
		}
		fn.LinkType = linkType(arphrd)
	}
	return fn, nil
}

// virtfnIndex finds the virtfnN link of pf that points at vf.
func (s *Scanner) virtfnIndex(pf, vf string) (int, error) {
	links, err := s.virtfnLinks(pf)
	if err != nil {
		return 0, fmt.Errorf("look up vf %s: %w", vf, err)
	}
	for _, l := range links {
		if l.target == vf {
			return l.index, nil
		}
	}
	return 0, &MalformedError{Device: vf, File: s.file(vf, "physfn"),
		Reason: fmt.Sprintf("points at %s, but no virtfn link of %s points back", pf, pf)}
}

// boundDriver reads the name of the driver bound to the device, "" when none is.
func (s *Scanner) boundDriver(address string) (string, error) {
	path := s.file(address, "driver")
	target, err := os.Readlink(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", &MalformedError{Device: address, File: path, Reason: err.Error()}
	}
	return filepath.Base(target), nil
}

// firstNetdev returns the first of the device's netdevs by name, "" when it has none.
func (s *Scanner) firstNetdev(address string) (string, error) {
	entries, err := os.ReadDir(s.file(address, "net"))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read netdevs of %s: %w", address, err)
	}
	if len(entries) == 0 {
		return "", nil
	}
	return entries[0].Name(), nil
}

// readPCIID reads a vendor or device file ("0x8086") as four lower-case hex digits; a missing
// file reads as "".
func (s *Scanner) readPCIID(address, name string) (string, error) {
	v, err := s.readOptional(address, name)
	if err != nil || v == "" {
		return "", err
	}
	id := strings.ToLower(strings.TrimPrefix(v, "0x"))
	if !isPCIID(id) {
		return "", &MalformedError{Device: address, File: s.file(address, name),
			Reason: fmt.Sprintf("%q is not a pci id such as 0x8086", v)}
	}
	return id, nil
}

// readNUMANode reads numa_node into n, leaving it alone when the file is missing.
func (s *Scanner) readNUMANode(address string, n *int) error {
	v, err := s.readOptional(address, "numa_node")
	if err != nil || v == "" {
		return err
	}
	numa, err := strconv.Atoi(v)
	if err != nil || numa < -1 {
		return &MalformedError{Device: address, File: s.file(address, "numa_node"),
			Reason: fmt.Sprintf("%q is not a node number or -1", v)}
	}
	*n = numa
	return nil
}
