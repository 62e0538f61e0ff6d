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
	// Field is the field that asks for what is refused: of the NAD's configuration
	// ("plugins[1].master") or of the pod ("spec.containers[app].ports[0].hostPort"); empty
	// when the refusal is about the network or the pod as a whole.
	Field string
	// Grant is the field of the Tenant's spec that would allow the request
	// ("spec.nodeResources.masters"), or empty when none would.
	Grant string
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
// NADs must be within T's ranges, every SR-IOV pool among T's pools, and a NAD in a tenant's
// namespace may ask of the node only what that tenant's spec.nodeResources grants (see
// CheckNetwork). The pod may map only host ports T grants, request VFs only of T's pools and
// only as many as T's quota leaves after its other pods, and it may not hold NET_ADMIN or its
// equivalents unless T allows it. A NAD in one of T's namespaces must carry its configuration
// in spec.config. A platform pod may use any NAD that is not in a tenant's namespace.
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
		return &Denial{Pod: pod, Tenant: t.Name, Grant: "spec.allowNetAdmin",
			Rule: r.NetAdmin + ", and tenant pods may not change their own network",
			Fix:  fmt.Sprintf("remove it, or set spec.allowNetAdmin of tenant %s", t.Name)}
	}
	for _, n := range r.Networks {
		if n.Ref.Namespace == "" {
			n.Ref.Namespace = r.Namespace
		}
		if rule, fix := d.usable(t, n.Ref); rule != "" {
			return &Denial{Pod: pod, Network: n.Ref.String(), Tenant: t.Name, Grant: "spec.sharedNetworks", Rule: rule, Fix: fix}
		}
		if err := d.networkRules(t, n); err != nil {
			err.Pod = pod
			return err
		}
		if owner, ok := d.TenantOf(n.Ref.Namespace); ok {
			if err := d.nodeRules(owner, n); err != nil {
				err.Pod = pod
				return err
			}
		}
	}
	for _, hp := range r.HostPorts {
		if rule, fix, grant := hostPortRule(t, hp.Port, hp.Protocol); rule != "" {
			return &Denial{Pod: pod, Tenant: t.Name, Field: hp.Field, Grant: grant, Rule: hp.Field + " " + rule, Fix: fix}
		}
	}
	return d.checkVFs(pod, t, r)
}

// checkVFs decides the VFs a tenant's pod requests: only of the tenant's pools, and within
// its quota together with those its other pods hold.
func (d *Directory) checkVFs(pod string, t Tenant, r PodRequest) error {
	vfs := 0
	for _, pool := range sortedKeys(r.VFs) {
		n := r.VFs[pool]
		if !t.HasPool(pool) {
			return &Denial{Pod: pod, Tenant: t.Name, Grant: "spec.sriov.pools",
				Rule: fmt.Sprintf("the pod requests %d VFs of SR-IOV pool %s, which is not one of the tenant's pools (%s)", n, pool, listOr(t.SRIOVPools)),
				Fix:  fmt.Sprintf("request VFs of one of the tenant's pools, or add %s to spec.sriov.pools of tenant %s", pool, t.Name)}
		}
		vfs += n
	}
	if vfs > 0 && t.VFQuota >= 0 && vfs+r.HeldVFs > t.VFQuota {
		return &Denial{Pod: pod, Tenant: t.Name, Grant: "spec.sriov.vfQuota",
			Rule: fmt.Sprintf("the pod requests %d SR-IOV VFs and the tenant's other pods hold %d: %d, more than the tenant's quota of %d",
				vfs, r.HeldVFs, vfs+r.HeldVFs, t.VFQuota),
			Fix: fmt.Sprintf("request at most %d, delete pods of the tenant that hold VFs, or raise spec.sriov.vfQuota of tenant %s",
				max(t.VFQuota-r.HeldVFs, 0), t.Name)}
	}
	return nil
}

// CheckNetwork decides whether a NAD may exist as n describes it. A NAD in a tenant's
// namespace must keep to the tenant's VLANs and SR-IOV pools, carry its configuration in
// spec.config, and ask of the node only what the tenant's spec.nodeResources grants: a master
// for macvlan, ipvlan, vlan and macvtap (none named is the node's default-route interface); a
// bridge for bridge (cni0 when it names none) and ovs, that no other tenant is granted; a
// device for host-device, named in "device", that no other tenant is granted; host ports for
// portmap, never the node's own (ReservedPort); any plugin type Loom does not know. Its
// "type"s must be plain plugin names and it may not carry fields that reach into the node in
// other ways (AskFixed). Every plugin counts: a list's, and those nested in "ipam",
// "delegate" and "delegates". Any other NAD is the platform's (or not yet any tenant's) and
// is allowed. It returns nil or a *Denial.
func (d *Directory) CheckNetwork(n Network) error {
	t, ok := d.TenantOf(n.Ref.Namespace)
	if !ok {
		return nil
	}
	if err := d.networkRules(t, n); err != nil {
		return err
	}
	if err := d.nodeRules(t, n); err != nil {
		return err
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
// configuration, VLANs, an SR-IOV pool), or returns nil if it may.
func (d *Directory) networkRules(t Tenant, n Network) *Denial {
	deny := func(grant, rule, fix string) *Denial {
		return &Denial{Network: n.Ref.String(), Tenant: t.Name, Grant: grant, Rule: rule, Fix: fix}
	}
	if n.NodeConfig && d.owner[n.Ref.Namespace] == t.Name {
		return deny("", "the NAD has no spec.config and would take a configuration file from the nodes, which a tenant's NAD may not",
			fmt.Sprintf("put the network's configuration in spec.config of %s", n.Ref))
	}
	for _, v := range n.VLANs {
		if t.AllowsVLAN(v) {
			continue
		}
		parts := make([]string, len(t.VLANs))
		for i, r := range t.VLANs {
			parts[i] = r.String()
		}
		return deny("spec.vlans", fmt.Sprintf("VLAN %d is outside the tenant's VLANs (%s)", v, listOr(parts)),
			fmt.Sprintf("use a NAD on one of the tenant's VLANs, or add %s to spec.vlans of tenant %s", strconv.Itoa(v), t.Name))
	}
	if n.ResourceName != "" && !t.HasPool(n.ResourceName) {
		return deny("spec.sriov.pools",
			fmt.Sprintf("the NAD uses SR-IOV pool %s, which is not one of the tenant's pools (%s)", n.ResourceName, listOr(t.SRIOVPools)),
			fmt.Sprintf("use a NAD of one of the tenant's pools, or add %s to spec.sriov.pools of tenant %s", n.ResourceName, t.Name))
	}
	return nil
}

func listOr(items []string) string {
	if len(items) == 0 {
		return "none"
	}
	return strings.Join(items, ", ")
}

func joinNames(ns []Name) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = string(n)
	}
	return strings.Join(s, ", ")
}
