package tenants

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// NodeResources is what a tenant's NADs may act on in the nodes: the validated
// spec.nodeResources.
type NodeResources struct {
	// Masters, Bridges and HostDevices are node interface names, none of them Loom's own.
	Masters     []string
	Bridges     []string
	HostDevices []string
	// HostPorts are sorted and merged: no two overlap or touch.
	HostPorts []PortRange
	// Plugins are plugin types Loom does not know, each a plain plugin name.
	Plugins []string
}

// PortRange is an inclusive range of ports.
type PortRange struct{ Min, Max int }

// Contains reports whether p is within r.
func (r PortRange) Contains(p int) bool { return r.Min <= p && p <= r.Max }

// String returns "8080" or "30000-30100", as a spec writes it.
func (r PortRange) String() string {
	if r.Min == r.Max {
		return strconv.Itoa(r.Min)
	}
	return strconv.Itoa(r.Min) + "-" + strconv.Itoa(r.Max)
}

// ParsePortRange parses "8080" or "30000-30100": decimal ports within 1-65535.
func ParsePortRange(s string) (PortRange, error) {
	first, last, isRange := strings.Cut(s, "-")
	if !isRange {
		last = first
	}
	lo, hi := portNumber(first), portNumber(last)
	switch {
	case lo < 0 || hi < 0:
		return PortRange{}, fmt.Errorf("%q is not a port or range such as 8080 or 30000-30100 (ports 1-65535)", s)
	case lo > hi:
		return PortRange{}, fmt.Errorf("%q ends before it starts", s)
	}
	return PortRange{Min: lo, Max: hi}, nil
}

// portNumber parses a decimal port within 1-65535, or returns -1.
func portNumber(s string) int {
	if s == "" || len(s) > 5 || strings.Trim(s, "0123456789") != "" {
		return -1
	}
	p, _ := strconv.Atoi(s)
	if p < 1 || p > 65535 {
		return -1
	}
	return p
}

// AllowsHostPort reports whether the tenant's pods may map node port p: it is within one of
// the tenant's ranges and not one of the node's own (ReservedPort).
func (t Tenant) AllowsHostPort(p int) bool {
	if _, reserved := ReservedPort(p); reserved {
		return false
	}
	return slices.ContainsFunc(t.NodeResources.HostPorts, func(r PortRange) bool { return r.Contains(p) })
}

// reservedPorts are the ports Loom and a Kubernetes node listen on by default. A tenant's
// pod never maps them, whatever its Tenant grants: a portmap DNAT rule on one of them takes
// the node's own service away (VXLAN 4789: every pod's cross-node traffic to the node).
var reservedPorts = map[int]string{
	22:    "SSH",
	53:    "DNS",
	179:   "BGP (Loom's bgp mode)",
	2379:  "etcd",
	2380:  "etcd peers",
	4789:  "VXLAN (Loom's vxlan mode)",
	6443:  "kube-apiserver",
	8472:  "VXLAN (the Linux default port)",
	9443:  "loom-controller's webhook",
	9465:  "loomd's health and metrics",
	9466:  "loom-controller's health and metrics",
	10249: "kube-proxy's metrics",
	10250: "the kubelet",
	10255: "the kubelet's read-only port",
	10256: "kube-proxy's health",
	10257: "kube-controller-manager",
	10259: "kube-scheduler",
}

// ReservedPort says whose port p is when it is one Loom or a Kubernetes node uses by
// default, such as 4789 (VXLAN) or 10250 (the kubelet).
func ReservedPort(p int) (owner string, ok bool) {
	owner, ok = reservedPorts[p]
	return owner, ok
}

// ReservedInterface says why a node interface can never be granted to a tenant: lo, cni0
// (the bridge every bridge NAD without a bridge name shares, the simulated cluster's pod
// bridge among them) and every name starting with "loom" (loom.vxlan, the pods' host-side
// veths). It returns "" for a name that can be granted.
func ReservedInterface(name string) string {
	switch {
	case name == "lo":
		return "lo is the node's loopback interface"
	case name == "cni0":
		return "cni0 is the bridge of every bridge NAD that names none, the platform's included"
	case strings.HasPrefix(name, "loom"):
		return name + " is Loom's own (loom.vxlan, the pods' host-side veths)"
	}
	return ""
}

// checkInterfaceName checks that name can be a Linux interface name (the kernel's
// dev_valid_name: 1 to 15 bytes, not "." or "..", no '/', ':' or white space).
func checkInterfaceName(name string) error {
	if name == "" || len(name) > 15 || name == "." || name == ".." ||
		strings.ContainsFunc(name, func(r rune) bool { return r == '/' || r == ':' || r == 0 || unicode.IsSpace(r) }) {
		return fmt.Errorf("%q is not an interface name (1 to 15 characters, no '/', ':' or spaces)", name)
	}
	return nil
}

// CheckPluginType checks that typ is a plain plugin name, the name of a file in the node's CNI
// bin directory: letters, digits, '.', '_' and '-', starting with a letter or digit, with no
// "..". A type with a path separator would run a program elsewhere on the node.
func CheckPluginType(typ string) error {
	if typ == "" || len(typ) > 255 || strings.Contains(typ, "..") {
		return fmt.Errorf("%q is not a plain plugin name", typ)
	}
	for i, r := range typ {
		ok := r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r) || (i > 0 && (r == '.' || r == '_' || r == '-')))
		if !ok {
			return fmt.Errorf("%q is not a plain plugin name (letters, digits, '.', '_' and '-')", typ)
		}
	}
	return nil
}

// The plugin types Loom knows, by what they do on the node. Every other type needs a grant in
// spec.nodeResources.plugins.
var (
	// podOnlyPlugins keep to the pod's network namespace, or take their device from an
	// SR-IOV pool the tenant's spec.sriov.pools already governs.
	podOnlyPlugins = []string{"loopback", "dummy", "tuning", "sbr", "vrf", "bandwidth", "static",
		"host-local", "dhcp", "loom-ipam", "sriov", "loom-sriov", "ib-sriov"}
	// masterPlugins create an interface on a node interface, their "master".
	masterPlugins = []string{"macvlan", "ipvlan", "vlan", "macvtap"}
	// bridgePlugins plug the pod into a node bridge.
	bridgePlugins = []string{"bridge", "ovs"}
)

// knownPlugin reports whether Loom knows what a plugin of type typ does on the node.
func knownPlugin(typ string) bool {
	return slices.Contains(podOnlyPlugins, typ) || slices.Contains(masterPlugins, typ) ||
		slices.Contains(bridgePlugins, typ) || typ == "host-device" || typ == "portmap"
}

func (p *parser) nodeResources(s *NodeResourcesSpec) NodeResources {
	var nr NodeResources
	if s == nil {
		return nr
	}
	nr.Masters = p.interfaces("spec.nodeResources.masters", s.Masters)
	nr.Bridges = p.interfaces("spec.nodeResources.bridges", s.Bridges)
	nr.HostDevices = p.interfaces("spec.nodeResources.hostDevices", s.HostDevices)
	var ports []PortRange
	for i, e := range s.HostPorts {
		r, err := ParsePortRange(e)
		if err != nil {
			p.add(index("spec.nodeResources.hostPorts", i), "%v", err)
			continue
		}
		ports = append(ports, r)
	}
	nr.HostPorts = mergePorts(ports)
	for i, typ := range s.Plugins {
		field := index("spec.nodeResources.plugins", i)
		switch err := CheckPluginType(typ); {
		case err != nil:
			p.add(field, "%v", err)
		case typ == "loom":
			p.add(field, "loom is Loom's own plugin, which a NAD cannot nest")
		case knownPlugin(typ):
			p.add(field, "%s is a plugin Loom knows: grant what it uses on the node (masters, bridges, hostDevices, hostPorts) instead", typ)
		case !slices.Contains(nr.Plugins, typ):
			nr.Plugins = append(nr.Plugins, typ)
		}
	}
	return nr
}

// interfaces validates a list of node interface names, leaving out those that are not
// interface names or are Loom's own.
func (p *parser) interfaces(field string, names []string) []string {
	var out []string
	for i, name := range names {
		if err := checkInterfaceName(name); err != nil {
			p.add(index(field, i), "%v", err)
			continue
		}
		if why := ReservedInterface(name); why != "" {
			p.add(index(field, i), "%s and is never granted to a tenant", why)
			continue
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}

// mergePorts sorts rs and merges ranges that overlap or touch.
func mergePorts(rs []PortRange) []PortRange {
	slices.SortFunc(rs, func(a, b PortRange) int { return a.Min - b.Min })
	var out []PortRange
	for _, r := range rs {
		if n := len(out); n > 0 && r.Min <= out[n-1].Max+1 {
			out[n-1].Max = max(out[n-1].Max, r.Max)
			continue
		}
		out = append(out, r)
	}
	return out
}
