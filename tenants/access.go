package tenants

import (
	"fmt"
	"strconv"
	"strings"
)

// Denial is an access decision against a pod or a NetworkAttachmentDefinition: it names
// them, the tenant whose rule applies, the rule and what would make the request allowed.
// Callers find it with errors.As.
type Denial struct {
	// Pod is "namespace/name" of the pod; empty for a NAD's own check.
	Pod string
	// Network is "namespace/name" of the NAD; empty for rules about the pod as a whole.
	Network string
	// Tenant is the tenant whose rule was broken: the pod's, or for a platform pod the one
	// that owns the NAD; empty for a pod in a namespace several tenants select.
	Tenant Name
	// Rule is the rule broken, with the offending values.
	Rule string
	// Fix says what would make the request allowed.
	Fix string
}

// Error renders the denial on one line: "pod a/web may not use network b/net: tenant t:
// <rule> (fix: <fix>)".
func (e *Denial) Error() string {
	var b strings.Builder
	switch {
	case e.Pod != "" && e.Network != "":
		fmt.Fprintf(&b, "pod %s may not use network %s", e.Pod, e.Network)
	case e.Pod != "":
		fmt.Fprintf(&b, "pod %s is not allowed", e.Pod)
	default:
		fmt.Fprintf(&b, "network %s is not allowed", e.Network)
	}
	if e.Tenant != "" {
		fmt.Fprintf(&b, ": tenant %s", e.Tenant)
	}
	b.WriteString(": " + e.Rule)
	if e.Fix != "" {
		b.WriteString(" (fix: " + e.Fix + ")")
	}
	return b.String()
}

// CheckPod decides whether the pod r describes may have the networks it asks for, and
// returns nil or a *Denial for the first rule it breaks.
//
// A pod in a namespace that several tenants select is denied outright. A pod of tenant T may
// use the NADs in T's namespaces and those T lists in spec.sharedNetworks (a NAD in another
// tenant's namespace, or the platform's, is not T's to use otherwise); every VLAN of those
// NADs must be within T's ranges, every SR-IOV pool among T's pools, the VFs it requests
// within T's quota, and it may not hold NET_ADMIN or its equivalents unless T allows it. A
// NAD in one of T's namespaces must carry its configuration in spec.config. A platform pod
// may use any NAD that is not in a tenant's namespace.
func (d *Directory) CheckPod(r PodRequest) error {
	pod := r.Namespace + "/" + r.Name
	if by := d.claims[r.Namespace]; len(by) > 0 {
		return &Denial{Pod: pod,
			Rule: fmt.Sprintf("namespace %s is selected by several tenants (%s) and belongs to none", r.Namespace, joinNames(by)),
			Fix:  "change the namespace's labels or the tenants' namespaceSelectors so that at most one tenant selects it"}
	}
	t, ok := d.TenantOf(r.Namespace)
	if !ok {
		return d.checkPlatformPod(pod, r)
	}
	if r.NetAdmin != "" && !t.AllowNetAdmin {
		return &Denial{Pod: pod, Tenant: t.Name,
			Rule: r.NetAdmin + ", and tenant pods may not change their own network",
			Fix:  fmt.Sprintf("remove it, or set spec.allowNetAdmin of tenant %s", t.Name)}
	}
	for _, n := range r.Networks {
		if n.Ref.Namespace == "" {
			n.Ref.Namespace = r.Namespace
		}
		if rule, fix := d.usable(t, n.Ref); rule != "" {
			return &Denial{Pod: pod, Network: n.Ref.String(), Tenant: t.Name, Rule: rule, Fix: fix}
		}
		if rule, fix := d.networkRules(t, n); rule != "" {
			return &Denial{Pod: pod, Network: n.Ref.String(), Tenant: t.Name, Rule: rule, Fix: fix}
		}
	}
	if t.VFQuota >= 0 && r.VFs > t.VFQuota {
		return &Denial{Pod: pod, Tenant: t.Name,
			Rule: fmt.Sprintf("the pod requests %d SR-IOV VFs, more than the tenant's quota of %d", r.VFs, t.VFQuota),
			Fix:  fmt.Sprintf("request at most %d, or raise spec.sriov.vfQuota of tenant %s", t.VFQuota, t.Name)}
	}
	return nil
}

// CheckNetwork decides whether a NAD may exist as n describes it. A NAD in a tenant's
// namespace must keep to the tenant's VLANs and SR-IOV pools, and carry its configuration in
// spec.config; any other NAD is the platform's (or not yet any tenant's) and is allowed. It
// returns nil or a *Denial.
func (d *Directory) CheckNetwork(n Network) error {
	t, ok := d.TenantOf(n.Ref.Namespace)
	if !ok {
		return nil
	}
	if rule, fix := d.networkRules(t, n); rule != "" {
		return &Denial{Network: n.Ref.String(), Tenant: t.Name, Rule: rule, Fix: fix}
	}
	return nil
}

// checkPlatformPod denies a platform pod the NADs of tenants' namespaces.
func (d *Directory) checkPlatformPod(pod string, r PodRequest) error {
	for _, n := range r.Networks {
		ns := n.Ref.Namespace
		if ns == "" {
			ns = r.Namespace
		}
		ref := NetworkRef{Namespace: ns, Name: n.Ref.Name}.String()
		if owner, ok := d.owner[ns]; ok {
			return &Denial{Pod: pod, Network: ref, Tenant: owner,
				Rule: fmt.Sprintf("the NAD is in namespace %s of tenant %s, and a tenant's networks are for its own pods", ns, owner),
				Fix:  fmt.Sprintf("use a NAD in a namespace of no tenant, or run the pod in a namespace of tenant %s", owner)}
		}
		if by := d.claims[ns]; len(by) > 0 {
			return &Denial{Pod: pod, Network: ref,
				Rule: fmt.Sprintf("the NAD is in namespace %s, which tenants %s select", ns, joinNames(by)),
				Fix:  "use a NAD in a namespace of no tenant"}
		}
	}
	return nil
}

// usable says why tenant t may not use the NAD ref at all, or returns "" if it may.
func (d *Directory) usable(t Tenant, ref NetworkRef) (rule, fix string) {
	owner, owned := d.owner[ref.Namespace]
	if (owned && owner == t.Name) || t.Shares(ref) {
		return "", ""
	}
	fix = fmt.Sprintf("add %s to spec.sharedNetworks of tenant %s, or use a NAD in the tenant's namespaces", ref, t.Name)
	switch by := d.claims[ref.Namespace]; {
	case owned:
		rule = fmt.Sprintf("the NAD belongs to namespace %s of tenant %s", ref.Namespace, owner)
	case len(by) > 0:
		rule = fmt.Sprintf("the NAD is in namespace %s, which several tenants (%s) select", ref.Namespace, joinNames(by))
	default:
		rule = fmt.Sprintf("the NAD is in namespace %s of the platform and not shared with the tenant", ref.Namespace)
	}
	return rule, fix
}

// networkRules says why tenant t may not use NAD n for what its configuration asks (a node
// configuration, VLANs, an SR-IOV pool), or returns "" if it may.
func (d *Directory) networkRules(t Tenant, n Network) (rule, fix string) {
	if n.NodeConfig && d.owner[n.Ref.Namespace] == t.Name {
		return "the NAD has no spec.config and would take a configuration file from the nodes, which a tenant's NAD may not",
			fmt.Sprintf("put the network's configuration in spec.config of %s", n.Ref)
	}
	for _, v := range n.VLANs {
		if t.AllowsVLAN(v) {
			continue
		}
		ranges := "none"
		if len(t.VLANs) > 0 {
			parts := make([]string, len(t.VLANs))
			for i, r := range t.VLANs {
				parts[i] = r.String()
			}
			ranges = strings.Join(parts, ", ")
		}
		return fmt.Sprintf("VLAN %d is outside the tenant's VLANs (%s)", v, ranges),
			fmt.Sprintf("use a NAD on one of the tenant's VLANs, or add %s to spec.vlans of tenant %s", strconv.Itoa(v), t.Name)
	}
	if n.ResourceName != "" && !t.HasPool(n.ResourceName) {
		pools := "none"
		if len(t.SRIOVPools) > 0 {
			pools = strings.Join(t.SRIOVPools, ", ")
		}
		return fmt.Sprintf("the NAD uses SR-IOV pool %s, which is not one of the tenant's pools (%s)", n.ResourceName, pools),
			fmt.Sprintf("use a NAD of one of the tenant's pools, or add %s to spec.sriov.pools of tenant %s", n.ResourceName, t.Name)
	}
	return "", ""
}

func joinNames(ns []Name) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = string(n)
	}
	return strings.Join(s, ", ")
}
