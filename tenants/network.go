package tenants

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
)

// ResourceNameAnnotation is the NAD annotation naming the device plugin resource (the SR-IOV
// pool) its attachments draw a device from.
const ResourceNameAnnotation = "k8s.v1.cni.cncf.io/resourceName"

// Network is what an access decision needs to know about a NetworkAttachmentDefinition.
type Network struct {
	Ref NetworkRef
	// VLANs are the VLAN IDs its configuration asks for, sorted, without duplicates: see
	// ConfigVLANs.
	VLANs []int
	// ResourceName is its SR-IOV pool (annotation k8s.v1.cni.cncf.io/resourceName), or "".
	ResourceName string
	// NodeConfig is true when the NAD has no spec.config: its configuration is a file on every
	// node, unknown here, and VLANs and Asks are empty whatever that file says.
	NodeConfig bool
	// Asks are what its plugins ask of the node, in the order the configuration lists them.
	Asks []NodeAsk
}

// NetworkOf describes nad for an access decision. It fails when spec.config is not a JSON
// object, lists plugins in something other than a list of objects, or sets a VLAN key to
// something other than a VLAN ID.
func NetworkOf(nad *nadv1.NetworkAttachmentDefinition) (Network, error) {
	n := Network{
		Ref:          NetworkRef{Namespace: nad.Namespace, Name: nad.Name},
		ResourceName: nad.Annotations[ResourceNameAnnotation],
	}
	if strings.TrimSpace(nad.Spec.Config) == "" {
		n.NodeConfig = true
		return n, nil
	}
	top, err := parseConfig([]byte(nad.Spec.Config))
	if err == nil {
		n.VLANs, err = configVLANs(top)
	}
	if err == nil {
		n.Asks, err = nodeAsks(top)
	}
	if err != nil {
		return Network{}, fmt.Errorf("read configuration of NetworkAttachmentDefinition %s: %w", n.Ref, err)
	}
	return n, nil
}

// ConfigVLANs returns the VLAN IDs a CNI configuration (a single plugin's or a list's) asks
// for, sorted and without duplicates. It reads, in the top-level object, every plugin of
// "plugins" and the plugins nested in them ("ipam", "delegate", "delegates"): "vlan"
// (bridge, macvlan-like, sriov, ovs) and "vlanId" (vlan), whose 0 means untagged and is left
// out, and "vlanTrunk" (bridge) and "trunk" (ovs), lists of {"id"} or {"minID", "maxID"}.
// Keys are matched regardless of case, as Go plugins decoding into a struct match them. A
// value that is not a VLAN ID is an error rather than ignored: a plugin might still read it.
func ConfigVLANs(config []byte) ([]int, error) {
	top, err := parseConfig(config)
	if err != nil {
		return nil, err
	}
	return configVLANs(top)
}

// parseConfig parses a configuration: one JSON object, numbers kept as written.
func parseConfig(config []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(config))
	dec.UseNumber()
	var top any
	if err := dec.Decode(&top); err != nil {
		return nil, fmt.Errorf("parse configuration: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("parse configuration: data after the JSON object")
	}
	obj, ok := top.(map[string]any)
	if !ok {
		return nil, errors.New("parse configuration: not a JSON object")
	}
	return obj, nil
}

func configVLANs(top map[string]any) ([]int, error) {
	var seen [MaxVLAN + 1]bool
	err := configPlugins(top, func(path string, obj map[string]any) error {
		if err := objectVLANs(obj, &seen); err != nil {
			if path == "" {
				return err
			}
			return fmt.Errorf("%s: %w", path, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []int
	for v, ok := range seen {
		if ok {
			out = append(out, v)
		}
	}
	return out, nil
}

// objectVLANs marks the VLANs one configuration object asks for.
func objectVLANs(obj map[string]any, seen *[MaxVLAN + 1]bool) error {
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		v := obj[k]
		switch {
		case strings.EqualFold(k, "vlan") || strings.EqualFold(k, "vlanId"):
			id, err := vlanValue(v, 0)
			if err != nil {
				return fmt.Errorf("%q: %w", k, err)
			}
			if id != 0 {
				seen[id] = true
			}
		case strings.EqualFold(k, "vlanTrunk") || strings.EqualFold(k, "trunk"):
			if err := trunkVLANs(v, seen); err != nil {
				return fmt.Errorf("%q: %w", k, err)
			}
		}
	}
	return nil
}

// trunkVLANs marks the VLANs of a trunk list: [{"id": 5}, {"minID": 10, "maxID": 20}].
func trunkVLANs(v any, seen *[MaxVLAN + 1]bool) error {
	if v == nil {
		return nil
	}
	items, ok := v.([]any)
	if !ok {
		return errors.New("not a list of trunk entries")
	}
	for i, it := range items {
		entry, ok := it.(map[string]any)
		if !ok {
			return fmt.Errorf("entry %d is not an object", i)
		}
		lo, hi := -1, -1
		for _, k := range slices.Sorted(maps.Keys(entry)) {
			var err error
			switch {
			case strings.EqualFold(k, "id"):
				if lo, err = vlanValue(entry[k], MinVLAN); err == nil {
					hi = lo
				}
			case strings.EqualFold(k, "minID"):
				lo, err = vlanValue(entry[k], MinVLAN)
			case strings.EqualFold(k, "maxID"):
				hi, err = vlanValue(entry[k], MinVLAN)
			}
			if err != nil {
				return fmt.Errorf("entry %d: %q: %w", i, k, err)
			}
		}
		switch {
		case lo < 0 && hi < 0:
			continue // nothing set: the plugin ignores the entry
		case lo < 0 || hi < 0 || lo > hi:
			return fmt.Errorf("entry %d is not an id or a minID-maxID range", i)
		}
		for id := lo; id <= hi; id++ {
			seen[id] = true
		}
	}
	return nil
}

// vlanValue reads a VLAN ID from a JSON number: an integer from lowest (0 where 0 means
// untagged) to MaxVLAN. JSON null reads as 0, as Go decodes it.
func vlanValue(v any, lowest int) (int, error) {
	if v == nil {
		return 0, nil
	}
	num, ok := v.(json.Number)
	if !ok {
		return 0, fmt.Errorf("%s is not a VLAN ID", describe(v))
	}
	// A float, so that 1e3 and 100.0 read as a plugin written in another language might.
	f, err := strconv.ParseFloat(num.String(), 64)
	if err != nil || f != math.Trunc(f) || f < float64(lowest) || f > MaxVLAN {
		return 0, fmt.Errorf("%s is not a VLAN ID (%d-%d)", num, lowest, MaxVLAN)
	}
	return int(f), nil
}

func describe(v any) string {
	b, err := json.Marshal(v)
	if err != nil || len(b) > 40 {
		return fmt.Sprintf("a %T", v)
	}
	return string(b)
}

// PodRequest is what a pod asks of the networks: what CheckPod decides on.
type PodRequest struct {
	Namespace, Name string
	// Networks are every NAD its networks annotation names, resolved, namespace filled in.
	Networks []Network
	// NetAdmin says why the pod could change its own network, as NetAdminReason returns it;
	// "" if it cannot.
	NetAdmin string
	// HostPorts are the node ports the pod asks to map: its containers' hostPorts
	// (ContainerHostPorts) and the portMappings of its networks annotation.
	HostPorts []HostPort
	// VFs are the SR-IOV VFs the pod requests, by pool, as DeviceRequests counts them.
	VFs map[string]int
	// HeldVFs are the VFs the tenant's other pods hold (HeldVFs), which its quota counts
	// with the pod's. Ignored when the pod requests no VFs.
	HeldVFs int
}

// HostPort is a node port a pod asks to map, and where it asks.
type HostPort struct {
	// Field is where the pod asks: "spec.containers[app].ports[0].hostPort", or
	// "k8s.v1.cni.cncf.io/networks[1].portMappings[0].hostPort".
	Field    string
	Port     int
	Protocol string
}

// ContainerHostPorts returns the hostPorts of a pod's containers (init containers with
// ports included): with a delegate default network that chains portmap, the kubelet maps
// them on the node.
func ContainerHostPorts(spec *corev1.PodSpec) []HostPort {
	if spec == nil {
		return nil
	}
	var out []HostPort
	add := func(kind string, cs []corev1.Container) {
		for _, c := range cs {
			for i, p := range c.Ports {
				if p.HostPort != 0 {
					out = append(out, HostPort{Field: fmt.Sprintf("spec.%s[%s].ports[%d].hostPort", kind, c.Name, i),
						Port: int(p.HostPort), Protocol: strings.ToLower(cmpOr(string(p.Protocol), "TCP"))})
				}
			}
		}
	}
	add("initContainers", spec.InitContainers)
	add("containers", spec.Containers)
	return out
}

func cmpOr(s, dflt string) string {
	if s == "" {
		return dflt
	}
	return s
}

// NetAdminReason says why a pod with spec could change its own network and so lift the rules
// on it: "hostNetwork", a container "is privileged", or a container "adds" NET_ADMIN,
// SYS_ADMIN, NET_RAW (raw sockets send frames past the pod's IP rules, and not every runtime
// grants it by default) or ALL (with or without CAP_, in any case) to its capabilities. It
// returns "" if none of these holds. Init and ephemeral containers count: an ephemeral one
// added to a running pod (kubectl debug) as much as any other.
func NetAdminReason(spec *corev1.PodSpec) string {
	if spec == nil {
		return ""
	}
	if spec.HostNetwork {
		return "hostNetwork"
	}
	check := func(kind, name string, sc *corev1.SecurityContext) string {
		if sc == nil {
			return ""
		}
		if sc.Privileged != nil && *sc.Privileged {
			return fmt.Sprintf("%s %s is privileged", kind, name)
		}
		if sc.Capabilities == nil {
			return ""
		}
		for _, c := range sc.Capabilities.Add {
			switch strings.TrimPrefix(strings.ToUpper(string(c)), "CAP_") {
			case "NET_ADMIN", "SYS_ADMIN", "NET_RAW", "ALL":
				return fmt.Sprintf("%s %s adds %s", kind, name, c)
			}
		}
		return ""
	}
	for _, c := range spec.InitContainers {
		if r := check("init container", c.Name, c.SecurityContext); r != "" {
			return r
		}
	}
	for _, c := range spec.Containers {
		if r := check("container", c.Name, c.SecurityContext); r != "" {
			return r
		}
	}
	for _, c := range spec.EphemeralContainers {
		if r := check("ephemeral container", c.Name, c.SecurityContext); r != "" {
			return r
		}
	}
	return ""
}

// DeviceRequests returns how many units of each extended resource that isVF reports as an
// SR-IOV pool a pod with spec holds: per container the larger of its request and limit,
// summed over the containers and restartable (sidecar) init containers, or the largest of
// any other init container if that is more, as the scheduler counts. A pool the pod does not
// request is left out.
func DeviceRequests(spec *corev1.PodSpec, isVF func(resource string) bool) map[string]int {
	out := map[string]int{}
	if spec == nil {
		return out
	}
	count := func(r corev1.ResourceRequirements) map[string]int64 {
		m := map[string]int64{}
		for _, list := range []corev1.ResourceList{r.Requests, r.Limits} {
			for name, q := range list {
				if isVF(string(name)) {
					m[string(name)] = max(m[string(name)], q.Value())
				}
			}
		}
		return m
	}
	sum, initMax := map[string]int64{}, map[string]int64{}
	for _, c := range spec.Containers {
		for name, n := range count(c.Resources) {
			sum[name] += n
		}
	}
	for _, c := range spec.InitContainers {
		for name, n := range count(c.Resources) {
			if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
				sum[name] += n // a sidecar keeps its devices while the containers run
				continue
			}
			initMax[name] = max(initMax[name], n)
		}
	}
	for _, m := range []map[string]int64{sum, initMax} {
		for name := range m {
			if v := max(sum[name], initMax[name]); v > 0 {
				out[name] = int(v)
			}
		}
	}
	return out
}

// HeldVFs counts the SR-IOV VFs that pods hold, as DeviceRequests counts them: the pods
// that have not finished (a pod being deleted keeps its VFs until its containers stop).
func HeldVFs(pods []*corev1.Pod, isVF func(resource string) bool) int {
	n := 0
	for _, p := range pods {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		for _, v := range DeviceRequests(&p.Spec, isVF) {
			n += v
		}
	}
	return n
}

// DeviceContainers keeps of containers what DeviceRequests and HeldVFs read: names, restart
// policies and extended resources (those with a domain, such as loom.dev/sriov_net_a). Pod
// caches that count VFs keep this much of every pod.
func DeviceContainers(cs []corev1.Container) []corev1.Container {
	var out []corev1.Container
	for _, c := range cs {
		out = append(out, corev1.Container{Name: c.Name, RestartPolicy: c.RestartPolicy, Resources: corev1.ResourceRequirements{
			Requests: extendedResources(c.Resources.Requests), Limits: extendedResources(c.Resources.Limits)}})
	}
	return out
}

// extendedResources keeps the resources with a domain.
func extendedResources(l corev1.ResourceList) corev1.ResourceList {
	var out corev1.ResourceList
	for name, q := range l {
		if strings.Contains(string(name), "/") {
			if out == nil {
				out = corev1.ResourceList{}
			}
			out[name] = q
		}
	}
	return out
}
