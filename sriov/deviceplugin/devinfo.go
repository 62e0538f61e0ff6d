package deviceplugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"

	"github.com/loom-cni/loom/sriov"
)

// DefaultDevInfoDir is the NPWG device-info directory; device plugins write in its dp/.
const DefaultDevInfoDir = "/var/run/k8s.cni.cncf.io/devinfo"

// pciAddress matches a PCI address as device IDs are: domain:bus:device.function.
var pciAddress = regexp.MustCompile(`^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$`)

// devInfoPath is the device-info file of device id of resource under dir, named as the NPWG
// client library's getDPDeviceInfoPath names it, so that any reader following the spec finds
// it: <dir>/dp/<resource>-<id>-device.json, every "/" turned into "-".
func devInfoPath(dir string, resource sriov.ResourceName, id string) string {
	return filepath.Join(dir, "dp", fmt.Sprintf("%s-%s-device.json",
		strings.ReplaceAll(string(resource), "/", "-"), strings.ReplaceAll(id, "/", "-")))
}

// devInfo is the device-info of vf (NPWG device-info spec 1.1.0): a PCI device, with its PF.
// DPDK VFs are described the same way: the spec adds nothing a vfio-pci VF must carry.
func devInfo(vf sriov.VF) *nadv1.DeviceInfo {
	return &nadv1.DeviceInfo{
		Type:    nadv1.DeviceInfoTypePCI,
		Version: nadv1.DeviceInfoVersion,
		Pci:     &nadv1.PciDevice{PciAddress: vf.Address, PfPciAddress: vf.PF},
	}
}

// writeDevInfo writes vf's device-info file, replacing any file of an earlier allocation.
// The NPWG library writes it read-only (0444) and refuses to overwrite one; a device plugin
// allocates a device again for each pod it goes to, so the file is replaced, atomically,
// through a temporary file in the same directory.
func writeDevInfo(dir string, resource sriov.ResourceName, vf sriov.VF) error {
	path := devInfoPath(dir, resource, vf.Address)
	data, err := json.Marshal(devInfo(vf))
	if err != nil {
		return fmt.Errorf("write device info %s: %w", path, err)
	}
	if err = os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write device info %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("write device info %s: %w", path, err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write device info %s: %w", path, err)
	}
	if err := tmp.Chmod(0o444); err != nil {
		return fmt.Errorf("write device info %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write device info %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write device info %s: %w", path, err)
	}
	ok = true
	return nil
}

// removeDevInfo removes the device-info file of device id; one already gone is no error.
func removeDevInfo(dir string, resource sriov.ResourceName, id string) error {
	path := devInfoPath(dir, resource, id)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove device info %s: %w", path, err)
	}
	return nil
}

// staleDevInfo lists the devices of resource that have a device-info file under dir but are
// not in keep: files a previous run left for VFs that have since left the pool. Only names
// that are the resource's prefix followed by a PCI address count, so a resource whose name
// extends this one's ("…_a" and "…_a-x") is left alone.
func staleDevInfo(dir string, resource sriov.ResourceName, keep map[string]sriov.VF) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(dir, "dp"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list device info files: %w", err)
	}
	prefix := strings.ReplaceAll(string(resource), "/", "-") + "-"
	var stale []string
	for _, e := range entries {
		id, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok {
			continue
		}
		id, ok = strings.CutSuffix(id, "-device.json")
		if !ok || !pciAddress.MatchString(id) {
			continue
		}
		if _, ok := keep[id]; !ok {
			stale = append(stale, id)
		}
	}
	return stale, nil
}
