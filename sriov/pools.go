package sriov

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// ResourceName is the extended resource a pool is advertised as, e.g. "loom.dev/sriov_net_a".
type ResourceName string

// PoolConfig is one pool: the VFs that every given selector matches. Within a selector any
// listed value matches; an empty selector matches every VF.
type PoolConfig struct {
	Name ResourceName
	// Vendors and Devices are PCI IDs of the VF, four lower-case hex digits.
	Vendors, Devices []string
	// Drivers are the VF's bound drivers ("iavf", "vfio-pci").
	Drivers []string
	// PFs select by the PF's netdev name and the VF's index.
	PFs []PFSelector
	// LinkTypes are "ether" or "infiniband". A VF's link type comes from its netdev, or its
	// PF's when it has none (DPDK VFs); a VF whose link type cannot be derived at all never
	// matches a pool that selects by link type.
	LinkTypes []string
}

// PFSelector selects VFs of one PF by index: "ens1f0" is all of them, "ens1f0#0-7,12" some.
type PFSelector struct {
	// PF is the PF's netdev name.
	PF string
	// Ranges are inclusive VF index ranges; none means every VF of the PF.
	Ranges []VFRange
}

// VFRange is an inclusive range of VF indexes.
type VFRange struct {
	First, Last int
}

func (s PFSelector) matches(index int) bool {
	if len(s.Ranges) == 0 {
		return true
	}
	for _, r := range s.Ranges {
		if r.First <= index && index <= r.Last {
			return true
		}
	}
	return false
}

// SelectorError reports a pool configuration that is not valid, naming the pool and the
// selector.
type SelectorError struct {
	// Pool is the pool's resource name, or "pools[i]" when the name is the problem.
	Pool string
	// Selector is the key of the offending setting: "resourceName", "vendors", "pfNames"…
	Selector string
	// Value is the offending value, "" when the setting is missing.
	Value string
	// Reason says what is wrong and what would be right.
	Reason string
}

func (e *SelectorError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("pool %s: %s: %s", e.Pool, e.Selector, e.Reason)
	}
	return fmt.Sprintf("pool %s: %s %q: %s", e.Pool, e.Selector, e.Value, e.Reason)
}

// poolsFile is the configuration as written: JSON, or YAML that converts to it.
//
//	pools:
//	- resourceName: loom.dev/sriov_net_a
//	  selectors:
//	    vendors: ["8086"]
//	    drivers: [iavf]
//	    pfNames: ["ens1f0#0-7"]
type poolsFile struct {
	Pools []poolEntry `json:"pools"`
}

type poolEntry struct {
	ResourceName string    `json:"resourceName"`
	Selectors    selectors `json:"selectors"`
}

type selectors struct {
	Vendors   []string `json:"vendors"`
	Devices   []string `json:"devices"`
	Drivers   []string `json:"drivers"`
	PFNames   []string `json:"pfNames"`
	LinkTypes []string `json:"linkTypes"`
}

// ParsePools parses a pool configuration (JSON or YAML, unknown keys rejected) and validates
// every pool. The order of the pools is kept. A bad setting is a *SelectorError.
func ParsePools(b []byte) ([]PoolConfig, error) {
	var f poolsFile
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return nil, fmt.Errorf("parse sriov pools: %w", err)
	}
	pools := make([]PoolConfig, 0, len(f.Pools))
	seen := make(map[ResourceName]bool)
	for i, entry := range f.Pools {
		pool, err := parsePool(i, entry)
		if err != nil {
			return nil, err
		}
		if seen[pool.Name] {
			return nil, &SelectorError{Pool: fmt.Sprintf("pools[%d]", i), Selector: "resourceName",
				Value: string(pool.Name), Reason: "used by an earlier pool; give each pool its own"}
		}
		seen[pool.Name] = true
		pools = append(pools, pool)
	}
	return pools, nil
}

func parsePool(i int, entry poolEntry) (PoolConfig, error) {
	if reason := validateResourceName(entry.ResourceName); reason != "" {
		return PoolConfig{}, &SelectorError{Pool: fmt.Sprintf("pools[%d]", i), Selector: "resourceName",
			Value: entry.ResourceName, Reason: reason}
	}
	pool := PoolConfig{Name: ResourceName(entry.ResourceName)}
	bad := func(selector, value, reason string) error {
		return &SelectorError{Pool: entry.ResourceName, Selector: selector, Value: value, Reason: reason}
	}
	sel := entry.Selectors
	for _, v := range sel.Vendors {
		if !isPCIID(v) {
			return PoolConfig{}, bad("vendors", v, "want a PCI vendor ID of four hex digits, e.g. 8086")
		}
		pool.Vendors = append(pool.Vendors, strings.ToLower(v))
	}
	for _, d := range sel.Devices {
		if !isPCIID(d) {
			return PoolConfig{}, bad("devices", d, "want a PCI device ID of four hex digits, e.g. 154c")
		}
		pool.Devices = append(pool.Devices, strings.ToLower(d))
	}
	for _, d := range sel.Drivers {
		if !driverName.MatchString(d) {
			return PoolConfig{}, bad("drivers", d, "want a kernel driver name, e.g. iavf or vfio-pci")
		}
		pool.Drivers = append(pool.Drivers, d)
	}
	for _, l := range sel.LinkTypes {
		if l != "ether" && l != "infiniband" {
			return PoolConfig{}, bad("linkTypes", l, "want ether or infiniband")
		}
		pool.LinkTypes = append(pool.LinkTypes, l)
	}
	for _, p := range sel.PFNames {
		pf, reason := parsePFSelector(p)
		if reason != "" {
			return PoolConfig{}, bad("pfNames", p, reason)
		}
		pool.PFs = append(pool.PFs, pf)
	}
	if len(pool.Vendors)+len(pool.Devices)+len(pool.Drivers)+len(pool.PFs)+len(pool.LinkTypes) == 0 {
		return PoolConfig{}, bad("selectors", "", "none given; a pool of every VF is almost always a mistake: "+
			"give at least one of vendors, devices, drivers, pfNames, linkTypes")
	}
	return pool, nil
}

var (
	driverName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)
	// netdevName is what the kernel accepts as an interface name, less '#', which separates
	// the VF ranges.
	netdevName = regexp.MustCompile(`^[^/:#\s]{1,15}$`)
)

// maxVFIndex bounds VF indexes; sriov_totalvfs is a 16-bit number.
const maxVFIndex = 65535

// parsePFSelector parses "ens1f0" or "ens1f0#0-7,12", returning a reason when it is not valid.
func parsePFSelector(s string) (PFSelector, string) {
	name, ranges, hasRanges := strings.Cut(s, "#")
	if !netdevName.MatchString(name) || name == "." || name == ".." {
		return PFSelector{}, "want a PF netdev name of at most 15 characters, optionally with VF ranges: ens1f0 or ens1f0#0-7"
	}
	sel := PFSelector{PF: name}
	if !hasRanges {
		return sel, ""
	}
	for _, part := range strings.Split(ranges, ",") {
		first, last, isRange := strings.Cut(part, "-")
		if !isRange {
			last = first
		}
		a, errA := parseIndex(first)
		b, errB := parseIndex(last)
		if errA != "" || errB != "" {
			return PFSelector{}, fmt.Sprintf("VF range %q: want N or N-M with 0 <= N <= M <= %d", part, maxVFIndex)
		}
		if a > b {
			return PFSelector{}, fmt.Sprintf("VF range %q runs backwards; write %d-%d", part, b, a)
		}
		sel.Ranges = append(sel.Ranges, VFRange{First: a, Last: b})
	}
	return sel, ""
}

func parseIndex(s string) (int, string) {
	if s == "" || (len(s) > 1 && s[0] == '0') {
		return 0, "not a VF index"
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > maxVFIndex {
		return 0, "not a VF index"
	}
	return n, ""
}

// validateResourceName returns why name cannot be an extended resource advertised by a device
// plugin, or "" when it can: it must be domain/name, with a domain outside kubernetes.io.
func validateResourceName(name string) string {
	if name == "" {
		return "missing; want a name such as loom.dev/sriov_net_a"
	}
	domain, _, ok := strings.Cut(name, "/")
	if !ok {
		return "want domain/name, e.g. loom.dev/sriov_net_a"
	}
	if domain == "kubernetes.io" || strings.HasSuffix(domain, ".kubernetes.io") {
		return "the kubernetes.io domain is reserved for Kubernetes; use your own, e.g. loom.dev"
	}
	if errs := validation.IsQualifiedName(name); len(errs) > 0 {
		return strings.Join(errs, "; ")
	}
	// The kubelet also accepts the name only if a quota can be set on it.
	if errs := validation.IsQualifiedName("requests." + name); len(errs) > 0 {
		return strings.Join(errs, "; ")
	}
	return ""
}
