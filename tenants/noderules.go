package tenants

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// nodeRules says why the NAD n, in a namespace of tenant t, may not ask of the node what its
// configuration asks, or returns nil if t grants all of it.
func (d *Directory) nodeRules(t Tenant, n Network) *Denial {
	for _, a := range n.Asks {
		if rule, fix, grant := d.askRule(t, a); rule != "" {
			subject := strconv.Quote(a.Field)
			if a.Type != "" {
				subject += " of the " + a.Type + " plugin"
			}
			return &Denial{Network: n.Ref.String(), Tenant: t.Name, Field: a.Field, Grant: grant, Rule: subject + " " + rule, Fix: fix}
		}
	}
	return nil
}

// askRule says why tenant t may not have what a asks of the node, what would allow it and
// the Tenant field that grants it; an empty rule if t grants it.
func (d *Directory) askRule(t Tenant, a NodeAsk) (rule, fix, grant string) {
	nr := t.NodeResources
	sharedFix := fmt.Sprintf("remove it, or have the platform admin define the network in a namespace of no tenant and add it to spec.sharedNetworks of tenant %s", t.Name)
	switch a.Kind {
	case AskMaster:
		grant = "spec.nodeResources.masters"
		switch {
		case a.Value == "":
			return "names no master, so it would take the node's default-route interface",
				fmt.Sprintf("name one of the tenant's masters (%s) in %q", listOr(nr.Masters), a.Field), grant
		case ReservedInterface(a.Value) != "":
			return fmt.Sprintf("names %q: %s and is never a tenant's", a.Value, ReservedInterface(a.Value)),
				fmt.Sprintf("use one of the tenant's masters (%s)", listOr(nr.Masters)), ""
		case !slices.Contains(nr.Masters, a.Value):
			return fmt.Sprintf("names node interface %q, which is not among the tenant's masters (%s)", a.Value, listOr(nr.Masters)),
				fmt.Sprintf("use one of the tenant's masters, or add %s to spec.nodeResources.masters of tenant %s", a.Value, t.Name), grant
		}
	case AskBridge:
		return exclusiveRule(t, a, "bridge", "bridges", nr.Bridges, d.bridges[a.Value])
	case AskHostDevice:
		return exclusiveRule(t, a, "device", "hostDevices", nr.HostDevices, d.hostDevices[a.Value])
	case AskHostPort:
		return hostPortRule(t, a.Port, a.Protocol)
	case AskPlugin:
		if !slices.Contains(nr.Plugins, a.Value) {
			return fmt.Sprintf("is a plugin Loom does not know to keep to the pod, and not among the tenant's plugins (%s)", listOr(nr.Plugins)),
				fmt.Sprintf("use a plugin Loom knows, or add %s to spec.nodeResources.plugins of tenant %s if it cannot act on the node", a.Value, t.Name),
				"spec.nodeResources.plugins"
		}
	case AskType:
		return fmt.Sprintf("is %s, not a plain plugin name: it would run a program outside the node's CNI plugin directory", a.Value),
			"name the plugin by its file name in the CNI plugin directory, such as macvlan", ""
	case AskFixed:
		return fmt.Sprintf("is %s: it %s", abbreviateValue(a.Value), a.Why), sharedFix, "spec.sharedNetworks"
	}
	return "", "", ""
}

// exclusiveRule decides a node interface that one tenant at most may have: a bridge or a
// host device, granted in spec.nodeResources.<field> of t and of no other tenant.
func exclusiveRule(t Tenant, a NodeAsk, what, field string, granted []string, grantedTo []Name) (rule, fix, grant string) {
	grant = "spec.nodeResources." + field
	switch {
	case a.Value == "":
		return fmt.Sprintf("names no %s", what),
			fmt.Sprintf("name one of the tenant's %s (%s) in %q", field, listOr(granted), a.Field), grant
	case ReservedInterface(a.Value) != "":
		return fmt.Sprintf("names %q: %s and is never a tenant's", a.Value, ReservedInterface(a.Value)),
			fmt.Sprintf("use one of the tenant's %s (%s)", field, listOr(granted)), ""
	case !slices.Contains(granted, a.Value):
		return fmt.Sprintf("names node %s %q, which is not among the tenant's %s (%s)", what, a.Value, field, listOr(granted)),
			fmt.Sprintf("use one of the tenant's %s, or add %s to spec.nodeResources.%s of tenant %s", field, a.Value, field, t.Name), grant
	case len(grantedTo) > 1:
		return fmt.Sprintf("names node %s %q, which tenants %s are all granted, so it is none of theirs", what, a.Value, joinNames(grantedTo)),
			fmt.Sprintf("grant %s in spec.nodeResources.%s of one tenant only", a.Value, field), grant
	}
	return "", "", ""
}

// hostPortRule says why tenant t's pods may not map node port port, what would allow it and
// the Tenant field that grants it (none for the node's own ports), or returns "".
func hostPortRule(t Tenant, port int, proto string) (rule, fix, grant string) {
	if t.AllowsHostPort(port) {
		return "", "", ""
	}
	ranges := make([]string, len(t.NodeResources.HostPorts))
	for i, r := range t.NodeResources.HostPorts {
		ranges[i] = r.String()
	}
	p := strconv.Itoa(port) + "/" + strings.ToLower(proto)
	if owner, reserved := ReservedPort(port); reserved {
		return fmt.Sprintf("maps node port %s, the node's port for %s, which is never a tenant's", p, owner),
			fmt.Sprintf("map a port within the tenant's host ports (%s)", listOr(ranges)), ""
	}
	return fmt.Sprintf("maps node port %s, which is outside the tenant's host ports (%s)", p, listOr(ranges)),
		fmt.Sprintf("map a port within them, or add %d to spec.nodeResources.hostPorts of tenant %s", port, t.Name),
		"spec.nodeResources.hostPorts"
}

// abbreviateValue quotes a configuration value for a message, cut to a readable length.
func abbreviateValue(v string) string {
	if len(v) > 60 {
		v = v[:57] + "..."
	}
	return strconv.Quote(v)
}
