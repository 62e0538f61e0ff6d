package sriov

import (
	"fmt"
	"slices"
)

// OverlapError reports a VF that two pools select.
type OverlapError struct {
	VF    VF
	Pools [2]ResourceName
}

func (e *OverlapError) Error() string {
	return fmt.Sprintf("assign %s: selected by pools %s and %s; a VF belongs to one pool at most: "+
		"narrow the selectors of one of them", e.VF, e.Pools[0], e.Pools[1])
}

// Assign sorts the VFs of inv into pools. Every pool has an entry in the result, empty when
// no VF matches, and its VFs are in inventory order.
//
// A VF that two pools select is an error (*OverlapError), not a tie broken by pool order:
// a VF that could silently move between networks when the configuration is reordered is the
// ambiguity pools exist to remove. A pfNames selector is checked against the host
// (*SelectorError): a PF netdev the host does not have, or a VF range past the PF's
// sriov_totalvfs, is a mistake in the configuration and not an empty pool. A range past
// sriov_numvfs is allowed, since VFs come and go as sriov_numvfs is written.
func Assign(inv Inventory, pools []PoolConfig) (map[ResourceName][]VF, error) {
	pfs := make(map[string]PF, len(inv.PFs)) // by netdev
	pfNetdevs := make(map[string]string, len(inv.PFs))
	for _, pf := range inv.PFs {
		if pf.Netdev != "" {
			pfs[pf.Netdev] = pf
		}
		pfNetdevs[pf.Address] = pf.Netdev
	}
	for _, pool := range pools {
		if err := checkPFs(pool, pfs); err != nil {
			return nil, err
		}
	}

	assigned := make(map[ResourceName][]VF, len(pools))
	for _, pool := range pools {
		assigned[pool.Name] = nil
	}
	for _, vf := range inv.VFs() {
		var owner *PoolConfig
		for i := range pools {
			if !pools[i].matches(vf, pfNetdevs[vf.PF]) {
				continue
			}
			if owner != nil {
				return nil, &OverlapError{VF: vf, Pools: [2]ResourceName{owner.Name, pools[i].Name}}
			}
			owner = &pools[i]
		}
		if owner != nil {
			assigned[owner.Name] = append(assigned[owner.Name], vf)
		}
	}
	return assigned, nil
}

func checkPFs(pool PoolConfig, pfs map[string]PF) error {
	for _, sel := range pool.PFs {
		pf, ok := pfs[sel.PF]
		if !ok {
			return &SelectorError{Pool: string(pool.Name), Selector: "pfNames", Value: sel.PF,
				Reason: "this host has no SR-IOV PF with that netdev name"}
		}
		for _, r := range sel.Ranges {
			if r.Last >= pf.TotalVFs {
				return &SelectorError{Pool: string(pool.Name), Selector: "pfNames",
					Value:  fmt.Sprintf("%s#%d-%d", sel.PF, r.First, r.Last),
					Reason: fmt.Sprintf("%s has VFs 0-%d at most (sriov_totalvfs %d)", sel.PF, pf.TotalVFs-1, pf.TotalVFs)}
			}
		}
	}
	return nil
}

// matches says every selector of the pool matches vf, whose PF has the netdev pfNetdev.
func (p *PoolConfig) matches(vf VF, pfNetdev string) bool {
	if len(p.Vendors) > 0 && !slices.Contains(p.Vendors, vf.Vendor) {
		return false
	}
	if len(p.Devices) > 0 && !slices.Contains(p.Devices, vf.Device) {
		return false
	}
	if len(p.Drivers) > 0 && !slices.Contains(p.Drivers, vf.Driver) {
		return false
	}
	if len(p.LinkTypes) > 0 && (vf.LinkType == "" || !slices.Contains(p.LinkTypes, vf.LinkType)) {
		return false
	}
	if len(p.PFs) > 0 && !slices.ContainsFunc(p.PFs, func(s PFSelector) bool {
		return s.PF == pfNetdev && s.matches(vf.Index)
	}) {
		return false
	}
	return true
}
