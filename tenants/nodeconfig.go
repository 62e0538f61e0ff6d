package tenants

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// AskKind says what of the node a NAD's configuration asks for, and so which part of a
// Tenant's spec.nodeResources may grant it.
type AskKind int

const (
	// AskMaster is a node interface as the master of a macvlan, ipvlan, vlan or macvtap
	// interface; an empty Value is the node's default-route interface, which macvlan and
	// ipvlan take when the configuration names none.
	AskMaster AskKind = iota + 1
	// AskBridge is a node bridge to plug the pod into.
	AskBridge
	// AskHostDevice is a node interface to move into the pod.
	AskHostDevice
	// AskHostPort is a node port to map to the pod (portmap).
	AskHostPort
	// AskPlugin is a plugin type Loom does not know to keep to the pod.
	AskPlugin
	// AskType is a "type" that is not a plain plugin name: no Tenant grants it.
	AskType
	// AskFixed is a field that reaches into the node in a way no Tenant grants (a directory
	// or socket on the node, a device by PCI address, iptables match arguments, a literal
	// runtimeConfig): only a platform NAD shared with the tenant may carry it.
	AskFixed
)

// NodeAsk is one thing a NAD's configuration asks of the node.
type NodeAsk struct {
	Kind AskKind
	// Field is the configuration field as the configuration spells it: "master",
	// "plugins[1].bridge", "plugins[0].ipam.dataDir".
	Field string
	// Type is the type of the plugin that asks.
	Type string
	// Value is the interface name, the plugin type, or the field's value, as JSON when it is
	// not a string.
	Value string
	// Port and Protocol are the node port of an AskHostPort.
	Port     int
	Protocol string
	// Why says, for AskFixed, what the field would do on the node.
	Why string
}

// configPlugins calls visit for every plugin configuration in a network configuration, with
// its path: the top-level object (a single plugin, or a list, whose "type" if any is checked
// too), each entry of its "plugins", and, nested in any of these, "ipam", "delegate" and each
// entry of "delegates" (the forms meta plugins embed other plugins in). Keys are matched
// regardless of case, as Go plugins decoding into a struct match them.
func configPlugins(top map[string]any, visit func(path string, obj map[string]any) error) error {
	return walkPlugin("", top, true, visit)
}

func walkPlugin(path string, obj map[string]any, top bool, visit func(string, map[string]any) error) error {
	if err := visit(path, obj); err != nil {
		return err
	}
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		v := obj[k]
		switch {
		case top && strings.EqualFold(k, "plugins"), strings.EqualFold(k, "delegates"):
			if v == nil {
				continue
			}
			list, ok := v.([]any)
			if !ok {
				return fmt.Errorf("%q is not a list of plugin configurations", join(path, k))
			}
			for i, item := range list {
				p, ok := item.(map[string]any)
				if !ok {
					return fmt.Errorf("%s is not a JSON object", join(path, index(k, i)))
				}
				if err := walkPlugin(join(path, index(k, i)), p, false, visit); err != nil {
					return err
				}
			}
		case strings.EqualFold(k, "ipam"), strings.EqualFold(k, "delegate"):
			if p, ok := v.(map[string]any); ok {
				if err := walkPlugin(join(path, k), p, false, visit); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// fieldValues returns the keys of obj equal to key regardless of case, sorted, with their
// values: a Go plugin reads the last of them, so every one must pass.
func fieldValues(obj map[string]any, key string) []string {
	var out []string
	for k := range obj {
		if strings.EqualFold(k, key) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// text renders a configuration value: a string as it is, anything else as JSON.
func text(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return describe(v)
}

// nodeAsks reads what a configuration's plugins ask of the node.
func nodeAsks(top map[string]any) ([]NodeAsk, error) {
	var asks []NodeAsk
	err := configPlugins(top, func(path string, obj map[string]any) error {
		for _, k := range fieldValues(obj, "type") {
			typ, ok := obj[k].(string)
			if !ok || CheckPluginType(typ) != nil {
				asks = append(asks, NodeAsk{Kind: AskType, Field: join(path, k), Value: text(obj[k])})
				continue
			}
			asks = append(asks, pluginAsks(path, typ, obj)...)
		}
		return nil
	})
	return asks, err
}

// pluginAsks reads what one plugin of type typ asks of the node, from its own fields.
func pluginAsks(path, typ string, obj map[string]any) []NodeAsk {
	var asks []NodeAsk
	ask := func(kind AskKind, key string, value any, why string) {
		asks = append(asks, NodeAsk{Kind: kind, Field: join(path, key), Type: typ, Value: text(value), Why: why})
	}
	fixed := func(key, why string) {
		for _, k := range fieldValues(obj, key) {
			ask(AskFixed, k, obj[k], why)
		}
	}
	named := func(kind AskKind, key, dflt string) {
		keys := fieldValues(obj, key)
		if len(keys) == 0 {
			asks = append(asks, NodeAsk{Kind: kind, Field: join(path, key), Type: typ, Value: dflt})
		}
		for _, k := range keys {
			ask(kind, k, obj[k], "")
		}
	}
	switch {
	case slices.Contains(masterPlugins, typ):
		if !inContainer(obj) {
			named(AskMaster, "master", "")
		}
	case typ == "bridge":
		named(AskBridge, "bridge", "cni0") // the bridge plugin's default
	case typ == "ovs":
		named(AskBridge, "bridge", "")
	case typ == "host-device":
		for _, k := range fieldValues(obj, "device") {
			ask(AskHostDevice, k, obj[k], "")
		}
		fixed("hwaddr", "picks a node device by MAC address; name it in \"device\"")
		fixed("kernelpath", "picks a node device by sysfs path; name it in \"device\"")
		fixed("pciBusID", "picks a node device by PCI address; name it in \"device\"")
	case typ == "portmap":
		asks = append(asks, portMappings(path, obj)...)
		fixed("conditionsV4", "adds iptables match arguments to the node's rules")
		fixed("conditionsV6", "adds ip6tables match arguments to the node's rules")
		fixed("externalSetMarkChain", "jumps to a chain of the node's iptables")
	case typ == "host-local":
		fixed("dataDir", "stores addresses in a directory of the node")
		fixed("resolvConf", "reads a file of the node")
	case typ == "dhcp":
		fixed("daemonSocketPath", "connects to a socket of the node")
	case typ == "sriov" || typ == "loom-sriov" || typ == "ib-sriov":
		fixed("deviceID", "picks a VF by PCI address instead of from the NAD's SR-IOV pool")
		fixed("pciBusID", "picks a VF by PCI address instead of from the NAD's SR-IOV pool")
		for _, k := range fieldValues(obj, "spoofchk") {
			if strings.EqualFold(text(obj[k]), "off") {
				ask(AskFixed, k, obj[k], "turns the VF's spoof check off, so the pod can send as any MAC address")
			}
		}
		for _, k := range fieldValues(obj, "trust") {
			if strings.EqualFold(text(obj[k]), "on") {
				ask(AskFixed, k, obj[k], "trusts the VF, so the pod can change its MAC address and receive others' traffic")
			}
		}
	case !knownPlugin(typ):
		asks = append(asks, NodeAsk{Kind: AskPlugin, Field: join(path, "type"), Type: typ, Value: typ})
	}
	for _, k := range fieldValues(obj, "runtimeConfig") {
		rc, ok := obj[k].(map[string]any)
		if !ok {
			ask(AskFixed, k, obj[k], "is the container runtime's to set")
			continue
		}
		for _, rk := range slices.Sorted(maps.Keys(rc)) {
			if typ == "portmap" && strings.EqualFold(rk, "portMappings") {
				continue // read as host ports above
			}
			ask(AskFixed, k+"."+rk, rc[rk], "is the container runtime's to set, from the pod's networks annotation")
		}
	}
	return asks
}

// inContainer reports whether a master plugin's "linkInContainer" is true: its master is
// an interface of the pod, not of the node.
func inContainer(obj map[string]any) bool {
	keys := fieldValues(obj, "linkInContainer")
	if len(keys) == 0 {
		return false
	}
	for _, k := range keys {
		if b, ok := obj[k].(bool); !ok || !b {
			return false
		}
	}
	return true
}

// portMappings reads the host ports a portmap plugin's literal runtimeConfig maps. An entry
// that does not say which port is a fixed ask: the plugin would read it some other way.
func portMappings(path string, obj map[string]any) []NodeAsk {
	var asks []NodeAsk
	for _, k := range fieldValues(obj, "runtimeConfig") {
		rc, ok := obj[k].(map[string]any)
		if !ok {
			continue
		}
		for _, pk := range fieldValues(rc, "portMappings") {
			field := join(path, k+"."+pk)
			list, ok := rc[pk].([]any)
			if !ok {
				asks = append(asks, NodeAsk{Kind: AskFixed, Field: field, Type: "portmap", Value: text(rc[pk]), Why: "is not a list of port mappings"})
				continue
			}
			for i, item := range list {
				asks = append(asks, portMapping(index(field, i), item)...)
			}
		}
	}
	return asks
}

// portMapping reads one entry of portMappings: an ask for each hostPort key (a Go plugin
// reads the last), or a fixed ask when the entry has no valid one.
func portMapping(field string, item any) []NodeAsk {
	bad := []NodeAsk{{Kind: AskFixed, Field: field, Type: "portmap", Value: text(item), Why: "is not a port mapping with a hostPort from 1 to 65535"}}
	m, ok := item.(map[string]any)
	if !ok {
		return bad
	}
	proto := "tcp"
	for _, k := range fieldValues(m, "protocol") {
		if s, ok := m[k].(string); ok && s != "" {
			proto = strings.ToLower(s)
		}
	}
	var asks []NodeAsk
	for _, k := range fieldValues(m, "hostPort") {
		n, ok := m[k].(json.Number)
		if !ok {
			return bad
		}
		p, err := strconv.Atoi(n.String())
		if err != nil || p < 1 || p > 65535 {
			return bad
		}
		asks = append(asks, NodeAsk{Kind: AskHostPort, Field: field + "." + k, Type: "portmap", Value: strconv.Itoa(p), Port: p, Protocol: proto})
	}
	if len(asks) == 0 {
		return bad
	}
	return asks
}
