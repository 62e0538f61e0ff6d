// Package deviceplugin serves Loom's SR-IOV pools to the kubelet as extended resources, one
// device plugin (k8s.io/kubelet device plugin API v1beta1) per pool.
//
// # Design notes
//
// A Plugin serves gRPC on a unix socket in the kubelet's device plugin directory and registers
// it with the kubelet through kubelet.sock in the same directory. Devices are the pool's VFs,
// named by PCI address; a VF is healthy when its netdev's link is up, or when it is a DPDK VF,
// which has no netdev to judge by. The owner of the plugin rescans sysfs and calls Update with
// the pool's VFs; every open ListAndWatch stream then sends the new list, so new, removed or
// failed VFs reach the kubelet without restarting anything.
//
// The kubelet forgets its plugins when it restarts: it re-creates kubelet.sock and removes the
// sockets it finds in the directory. The plugin polls kubelet.sock, and when the file is not the
// one it registered with, it serves again on a fresh socket if its own has gone and registers
// again. Polling is used rather than inotify because it is simple, portable, and a second is
// well within what the kubelet tolerates.
//
// Allocate answers with the environment variable PCIDEVICE_<RESOURCE> (the resource name
// upper-cased, every other character than a letter or digit turned into '_') holding the
// allocated PCI addresses, comma-separated. GetPreferredAllocation keeps a container's devices
// on one NUMA node where it can.
//
// Allocate also writes each device's NPWG device-info file (spec 1.1.0: type "pci", the VF's
// and its PF's PCI addresses) where the NPWG client library looks for it,
// <DevInfoDir>/dp/<resource>-<device>-device.json with every "/" turned into "-", so the
// attachment that gets the device can report it in the pod's network-status. The file is
// replaced, not refused, when the device is allocated again; it is removed when the device
// leaves the pool, and Start removes those an earlier run left for devices no longer there.
// Files stay when the plugin stops: the pods holding the devices still run.
//
// A Manager owns the plugins of a node's pools: it scans sysfs once (failing if it cannot),
// starts a plugin per pool, a pool without VFs included, and rescans every interval with
// sriov.Watch, calling Update only on the plugins whose pools changed. A scan that fails keeps
// the pools as they were; the kubelet sees nothing of it.
package deviceplugin
