package tenants

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Tenant is a validated Tenant spec: what its pods may use. Build it with Parse; the zero
// value has no namespaces and allows nothing.
type Tenant struct {
	Name Name
	// Selector selects the tenant's namespaces; labels.Nothing() when the spec's selector is
	// missing, malformed or empty.
	Selector       labels.Selector
	SharedNetworks []NetworkRef
	// VLANs are sorted and merged: no two overlap or touch.
	VLANs      []VLANRange
	SRIOVPools []string
	// VFQuota is the most SR-IOV VFs the tenant's pods may hold together; -1 for no limit.
	VFQuota      int
	AddressPools []AddressPool
	Peers        []Name
	// AllowNetAdmin lets the tenant's pods hold NET_ADMIN and its equivalents.
	AllowNetAdmin bool
	// NodeResources are the parts of the nodes its NADs may act on.
	NodeResources NodeResources
}

// AllowsVLAN reports whether v is within one of t's VLAN ranges.
func (t Tenant) AllowsVLAN(v int) bool {
	return slices.ContainsFunc(t.VLANs, func(r VLANRange) bool { return r.Contains(v) })
}

// Shares reports whether t lists ref among its shared networks.
func (t Tenant) Shares(ref NetworkRef) bool { return slices.Contains(t.SharedNetworks, ref) }

// HasPool reports whether t may draw VFs from the SR-IOV pool named resource.
func (t Tenant) HasPool(resource string) bool { return slices.Contains(t.SRIOVPools, resource) }

// NetworkRef names a NetworkAttachmentDefinition.
type NetworkRef struct{ Namespace, Name string }

// String returns "namespace/name".
func (r NetworkRef) String() string { return r.Namespace + "/" + r.Name }

// ParseNetworkRef parses "namespace/name", the namespace a DNS label and the name a DNS
// subdomain, as Kubernetes requires of a NetworkAttachmentDefinition.
func ParseNetworkRef(s string) (NetworkRef, error) {
	ns, name, ok := strings.Cut(s, "/")
	switch {
	case !ok:
		return NetworkRef{}, fmt.Errorf("%q is not namespace/name", s)
	case len(validation.IsDNS1123Label(ns)) > 0:
		return NetworkRef{}, fmt.Errorf("namespace %q of %q is not a DNS label", ns, s)
	case len(validation.IsDNS1123Subdomain(name)) > 0:
		return NetworkRef{}, fmt.Errorf("name %q of %q is not a DNS subdomain", name, s)
	}
	return NetworkRef{Namespace: ns, Name: name}, nil
}

// The VLAN IDs a tenant may be given: 0 means untagged and 4095 is reserved.
const (
	MinVLAN = 1
	MaxVLAN = 4094
)

// VLANRange is an inclusive range of VLAN IDs.
type VLANRange struct{ Min, Max int }

// Contains reports whether v is within r.
func (r VLANRange) Contains(v int) bool { return r.Min <= v && v <= r.Max }

// String returns "42" or "100-199", as a spec writes it.
func (r VLANRange) String() string {
	if r.Min == r.Max {
		return strconv.Itoa(r.Min)
	}
	return strconv.Itoa(r.Min) + "-" + strconv.Itoa(r.Max)
}

// ParseVLANRange parses "42" or "100-199": decimal IDs within 1-4094, no spaces or signs.
func ParseVLANRange(s string) (VLANRange, error) {
	first, last, isRange := strings.Cut(s, "-")
	if !isRange {
		last = first
	}
	lo, okLo := vlanID(first)
	hi, okHi := vlanID(last)
	switch {
	case lo < 0 || hi < 0:
		return VLANRange{}, fmt.Errorf("%q is not a VLAN ID or range such as 42 or 100-199", s)
	case !okLo || !okHi:
		return VLANRange{}, fmt.Errorf("%q is outside %d-%d", s, MinVLAN, MaxVLAN)
	case lo > hi:
		return VLANRange{}, fmt.Errorf("%q ends before it starts", s)
	}
	return VLANRange{Min: lo, Max: hi}, nil
}

// vlanID parses a decimal VLAN ID: -1 if s is not a decimal number, false if it is one
// outside MinVLAN-MaxVLAN.
func vlanID(s string) (int, bool) {
	if s == "" || strings.Trim(s, "0123456789") != "" {
		return -1, false
	}
	if len(strings.TrimLeft(s, "0")) > 4 {
		return 0, false
	}
	v, _ := strconv.Atoi(s)
	return v, MinVLAN <= v && v <= MaxVLAN
}

// AddressPool is one of a tenant's IPv4 ranges on the primary network.
type AddressPool struct {
	Name      string
	CIDR      netip.Prefix
	BlockSize int
}

// The address pool limits Loom's IPAM (fabric/ipam) enforces, repeated so that a Tenant that
// IPAM would refuse is reported on the Tenant itself.
const (
	defaultBlockSize = 26
	largestBlock     = 22 // a block's allocations must fit in one object
	maxBlockBits     = 20 // at most 2^20 blocks a pool
	smallestPool     = 30
)

// Problem is one thing wrong with a Tenant spec, for its Valid condition.
type Problem struct {
	// Field is the path of the offending field, such as spec.vlans[1].
	Field string
	// Message says what is wrong with it, quoting the value.
	Message string
}

// Error returns "field: message".
func (p Problem) Error() string { return p.Field + ": " + p.Message }

func (p Problem) String() string { return p.Error() }

// Parse validates o into a Tenant. Problems never make a tenant wider: an entry that does not
// parse is left out (fewer VLANs, pools, shared networks, peers, node resources), a negative
// VF quota is zero, and a selector that is missing, malformed or empty selects no namespace.
func Parse(o *Object) (Tenant, []Problem) {
	p := &parser{}
	t := Tenant{
		Name:          Name(o.Name),
		AllowNetAdmin: o.Spec.AllowNetAdmin,
		VFQuota:       -1,
	}
	if errs := validation.IsDNS1123Label(o.Name); len(errs) > 0 {
		p.add("metadata.name", "%q is not a DNS label: %s", o.Name, strings.Join(errs, "; "))
	}
	t.Selector = p.selector(o.Spec.NamespaceSelector)
	for i, s := range o.Spec.SharedNetworks {
		ref, err := ParseNetworkRef(s)
		if err != nil {
			p.add(index("spec.sharedNetworks", i), "%v", err)
		} else if !slices.Contains(t.SharedNetworks, ref) {
			t.SharedNetworks = append(t.SharedNetworks, ref)
		}
	}
	var vlans []VLANRange
	for i, s := range o.Spec.VLANs {
		r, err := ParseVLANRange(s)
		if err != nil {
			p.add(index("spec.vlans", i), "%v", err)
			continue
		}
		vlans = append(vlans, r)
	}
	t.VLANs = mergeVLANs(vlans)
	if o.Spec.SRIOV != nil {
		t.SRIOVPools, t.VFQuota = p.sriov(o.Spec.SRIOV)
	}
	t.AddressPools = p.addressPools(o.Spec.AddressPools)
	t.NodeResources = p.nodeResources(o.Spec.NodeResources)
	for i, s := range o.Spec.Peers {
		switch {
		case len(validation.IsDNS1123Label(s)) > 0:
			p.add(index("spec.peers", i), "%q is not a tenant name (a DNS label)", s)
		case s == o.Name:
			p.add(index("spec.peers", i), "%q is the tenant itself", s)
		case !slices.Contains(t.Peers, Name(s)):
			t.Peers = append(t.Peers, Name(s))
		}
	}
	return t, p.problems
}

type parser struct{ problems []Problem }

func (p *parser) add(field, format string, args ...any) {
	p.problems = append(p.problems, Problem{Field: field, Message: fmt.Sprintf(format, args...)})
}

func index(field string, i int) string { return field + "[" + strconv.Itoa(i) + "]" }

func (p *parser) selector(s *metav1.LabelSelector) labels.Selector {
	const field = "spec.namespaceSelector"
	if s == nil {
		p.add(field, "is missing: the tenant has no namespaces")
		return labels.Nothing()
	}
	sel, err := metav1.LabelSelectorAsSelector(s)
	switch {
	case err != nil:
		p.add(field, "is not a valid label selector (%v): it selects no namespace", err)
		return labels.Nothing()
	case sel.Empty():
		p.add(field, "is empty and would select every namespace, the platform's included: it selects none")
		return labels.Nothing()
	}
	return sel
}

// mergeVLANs sorts rs and merges ranges that overlap or touch.
func mergeVLANs(rs []VLANRange) []VLANRange {
	slices.SortFunc(rs, func(a, b VLANRange) int { return cmp.Compare(a.Min, b.Min) })
	var out []VLANRange
	for _, r := range rs {
		if n := len(out); n > 0 && r.Min <= out[n-1].Max+1 {
			out[n-1].Max = max(out[n-1].Max, r.Max)
			continue
		}
		out = append(out, r)
	}
	return out
}

func (p *parser) sriov(s *SRIOVSpec) (pools []string, quota int) {
	for i, name := range s.Pools {
		if err := checkResourceName(name); err != nil {
			p.add(index("spec.sriov.pools", i), "%v", err)
		} else if !slices.Contains(pools, name) {
			pools = append(pools, name)
		}
	}
	switch {
	case s.VFQuota == nil:
		return pools, -1
	case *s.VFQuota < 0:
		p.add("spec.sriov.vfQuota", "%d is negative: the quota is 0", *s.VFQuota)
		return pools, 0
	}
	return pools, *s.VFQuota
}

// checkResourceName checks that name can be an extended resource a device plugin advertises:
// a qualified name with a domain prefix outside kubernetes.io.
func checkResourceName(name string) error {
	domain, _, ok := strings.Cut(name, "/")
	switch {
	case !ok || len(validation.IsQualifiedName(name)) > 0:
		return fmt.Errorf("%q is not a resource name such as loom.dev/sriov_net_a", name)
	case domain == "kubernetes.io" || strings.HasSuffix(domain, ".kubernetes.io"):
		return fmt.Errorf("%q is in the kubernetes.io domain, which device plugins cannot use", name)
	}
	return nil
}

func (p *parser) addressPools(specs []AddressPoolSpec) []AddressPool {
	var pools []AddressPool
	for i, s := range specs {
		field := index("spec.addressPools", i)
		if len(validation.IsDNS1123Label(s.Name)) > 0 {
			p.add(field+".name", "%q is not a DNS label", s.Name)
			continue
		}
		cidr, err := netip.ParsePrefix(s.CIDR)
		switch {
		case err != nil:
			p.add(field+".cidr", "%q is not a CIDR such as 10.244.0.0/20", s.CIDR)
			continue
		case !cidr.Addr().Is4():
			p.add(field+".cidr", "%s is not IPv4: pools are IPv4 only", cidr)
			continue
		case cidr != cidr.Masked():
			p.add(field+".cidr", "%s has host bits set: use %s", cidr, cidr.Masked())
			continue
		case cidr.Bits() > smallestPool:
			p.add(field+".cidr", "%s is too small: use a /%d or larger", cidr, smallestPool)
			continue
		}
		pool := AddressPool{Name: s.Name, CIDR: cidr, BlockSize: s.BlockSize}
		if pool.BlockSize == 0 {
			pool.BlockSize = max(defaultBlockSize, cidr.Bits())
		}
		if msg := blockSizeProblem(pool); msg != "" {
			p.add(field+".blockSize", "%s", msg)
			continue
		}
		if j := slices.IndexFunc(pools, func(q AddressPool) bool { return q.Name == s.Name }); j >= 0 {
			p.add(field+".name", "%q is already the name of another pool", s.Name)
			continue
		}
		if j := slices.IndexFunc(pools, func(q AddressPool) bool { return q.CIDR.Overlaps(cidr) }); j >= 0 {
			p.add(field+".cidr", "%s overlaps pool %s (%s)", cidr, pools[j].Name, pools[j].CIDR)
			continue
		}
		pools = append(pools, pool)
	}
	return pools
}

func blockSizeProblem(pool AddressPool) string {
	bits, size := pool.CIDR.Bits(), pool.BlockSize
	switch {
	case size < bits || size > 32:
		return fmt.Sprintf("/%d blocks do not fit %s: use a prefix length between %d and 32", size, pool.CIDR, max(bits, largestBlock))
	case size < largestBlock:
		return fmt.Sprintf("/%d blocks are too large: use %d or more", size, largestBlock)
	case size-bits > maxBlockBits:
		return fmt.Sprintf("/%d blocks would carve %s into more than %d blocks: use %d or less", size, pool.CIDR, 1<<maxBlockBits, bits+maxBlockBits)
	}
	return ""
}
