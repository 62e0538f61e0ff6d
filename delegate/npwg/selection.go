package npwg

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
)

// DefaultNetworkAnnot is the pod annotation that replaces the cluster default network for one
// pod. It holds exactly one network in either annotation format.
const DefaultNetworkAnnot = "v1.multus-cni.io/default-network"

// ResourceNameAnnot is the NetworkAttachmentDefinition annotation naming the device plugin
// resource whose devices the network's interfaces are (NPWG device-info spec).
const ResourceNameAnnot = "k8s.v1.cni.cncf.io/resourceName"

// Selection is one network a pod selects, parsed and validated: an element of the JSON form of
// the networks annotation, or one item of its comma-separated form. Addresses are in canonical
// form. A Selection owns its slices and maps; nothing else refers to them.
type Selection struct {
	Namespace string
	Name      string
	// Interface is the requested interface name in the pod, empty for a generated one.
	Interface string
	// IPs are the requested addresses, each "address" or "address/prefix".
	IPs []string
	// MAC is the requested 48-bit MAC address.
	MAC string
	// InfinibandGUID is the requested 64-bit InfiniBand GUID.
	InfinibandGUID string
	// DefaultRoute lists the gateways, at most one per IP family, that the pod's default route
	// should use through this attachment.
	DefaultRoute []string
	PortMappings []PortMapping
	Bandwidth    *Bandwidth
	// CNIArgs are merged into the args.cni object of every plugin of the network.
	CNIArgs map[string]any
	// IPAMClaimReference names the IPAMClaim that holds this attachment's addresses.
	IPAMClaimReference string
}

// Ref returns "namespace/name", the network as network-status and errors name it.
func (s Selection) Ref() string { return s.Namespace + "/" + s.Name }

// PortMapping is one requested port mapping, in the CNI conventions' runtimeConfig format.
type PortMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

// Bandwidth is a requested traffic shaping, in the CNI conventions' runtimeConfig format: rates
// in bits per second, bursts in bits, zero for no limit.
type Bandwidth struct {
	IngressRate  uint64 `json:"ingressRate"`
	IngressBurst uint64 `json:"ingressBurst"`
	EgressRate   uint64 `json:"egressRate"`
	EgressBurst  uint64 `json:"egressBurst"`
}

// ParseNetworks parses the value of the k8s.v1.cni.cncf.io/networks annotation of a pod in
// podNamespace, in either format. Networks without a namespace are in podNamespace. A blank
// annotation selects no networks. Problems are reported as *Error (with an empty Pod).
func ParseNetworks(annotation, podNamespace string) ([]Selection, error) {
	return parser{key: nadv1.NetworkAttachmentAnnot}.parse(annotation, podNamespace)
}

// parser parses one annotation of one pod; it only serves to put both into its errors.
type parser struct {
	pod string
	key string
}

// fail turns a finding about item n (1-based; 0 for the annotation as a whole) into an *Error.
func (p parser) fail(n int, network string, err error) *Error {
	where := "annotation " + p.key
	if n > 0 {
		where += fmt.Sprintf(" item %d", n)
	}
	e := &Error{Pod: p.pod, Network: network, Problem: where + ": " + err.Error(), Err: err}
	var pr *problem
	if errors.As(err, &pr) {
		e.Fix, e.Err = pr.fix, nil
	}
	if e.Fix == "" {
		e.Fix = "correct the annotation; see the NPWG network selection annotation format"
	}
	return e
}

func (p parser) parse(value, defaultNamespace string) ([]Selection, error) {
	v := strings.TrimSpace(value)
	switch {
	case v == "":
		return nil, nil
	case v[0] == '[':
		return p.parseJSON(v, defaultNamespace)
	case v[0] == '{':
		return nil, p.fail(0, "", problemf(`wrap the object in [ ]`, "a JSON value must be a list of network selection elements, not a single object"))
	}
	var sels []Selection
	for i, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		s, err := parseShort(item)
		if err == nil {
			err = s.validate(defaultNamespace)
		}
		if err != nil {
			return nil, p.fail(i+1, item, err)
		}
		sels = append(sels, s)
	}
	return sels, nil
}

// parseShort parses one item of the comma form: name, namespace/name, name@ifname or
// namespace/name@ifname.
func parseShort(item string) (Selection, error) {
	if item == "" {
		return Selection{}, problemf("remove the extra comma", "empty item")
	}
	var s Selection
	rest := item
	if ns, name, ok := strings.Cut(item, "/"); ok {
		s.Namespace, rest = strings.TrimSpace(ns), name
		if s.Namespace == "" {
			return s, problemf("write namespace/name or just name", "empty namespace before /")
		}
	}
	if strings.Contains(rest, "/") {
		return s, problemf("write namespace/name@interface", "more than one / in %q", item)
	}
	name, ifname, hasIf := strings.Cut(rest, "@")
	s.Name = strings.TrimSpace(name)
	if hasIf {
		s.Interface = strings.TrimSpace(ifname)
		if s.Interface == "" {
			return s, problemf("write name@interface or just name", "empty interface name after @")
		}
		if strings.Contains(s.Interface, "@") {
			return s, problemf("write namespace/name@interface", "more than one @ in %q", item)
		}
	}
	return s, nil
}

func (p parser) parseJSON(v, defaultNamespace string) ([]Selection, error) {
	var items []json.RawMessage
	if err := json.Unmarshal([]byte(v), &items); err != nil {
		return nil, p.fail(0, "", problemf("make the annotation a JSON list of objects",
			"not a valid JSON list: %v", err))
	}
	sels := make([]Selection, 0, len(items))
	for i, raw := range items {
		s, err := parseElement(raw)
		if err == nil {
			err = s.validate(defaultNamespace)
		}
		if err != nil {
			return nil, p.fail(i+1, s.Name, err)
		}
		sels = append(sels, s)
	}
	return sels, nil
}

// elementKeys are the keys of a JSON selection element in NPWG v1.3.
var elementKeys = []string{"name", "namespace", "interface", "ips", "mac", "default-route",
	"portMappings", "bandwidth", "cni-args", "infiniband-guid", "ipam-claim-reference"}

// set decodes one key of a JSON selection element. Values are validated afterwards by
// Selection.validate, for both annotation formats alike.
func (s *Selection) set(key string, v json.RawMessage) error {
	switch key {
	case "name":
		return decodeString(v, key, &s.Name)
	case "namespace":
		return decodeString(v, key, &s.Namespace)
	case "interface":
		return decodeString(v, key, &s.Interface)
	case "mac":
		return decodeString(v, key, &s.MAC)
	case "infiniband-guid":
		return decodeString(v, key, &s.InfinibandGUID)
	case "ipam-claim-reference":
		return decodeString(v, key, &s.IPAMClaimReference)
	case "ips":
		return decodeStrings(v, key, &s.IPs)
	case "default-route":
		return decodeStrings(v, key, &s.DefaultRoute)
	case "portMappings":
		return decodePortMappings(s, v)
	case "bandwidth":
		return decodeBandwidth(s, v)
	case "cni-args":
		return decodeCNIArgs(s, v)
	}
	fix, legacy := legacyKeys[key]
	if !legacy {
		fix = "use only the keys " + strings.Join(elementKeys, ", ")
	}
	return problemf(fix, "unknown key %q", key)
}

// legacyKeys are keys other implementations accept that Loom refuses, with the reason.
var legacyKeys = map[string]string{
	"interfaceRequest": `use "interface"; "interfaceRequest" is Multus's pre-3.2 spelling`,
	"deviceID":         "remove it; a pod cannot choose its device, Loom takes it from the kubelet's allocation",
}

func parseElement(raw json.RawMessage) (Selection, error) {
	var s Selection
	keys, values, err := decodeObject(raw)
	var pr *problem
	if errors.As(err, &pr) {
		return s, err
	}
	if err != nil {
		return s, problemf("make each item a JSON object with at least \"name\"", "%v", err)
	}
	// Decode the name first so that errors about other keys can name the network.
	if v, ok := values["name"]; ok {
		if err := s.set("name", v); err != nil {
			return s, err
		}
	}
	for _, k := range keys {
		if err := s.set(k, values[k]); err != nil {
			return s, err
		}
	}
	return s, nil
}

// decodeObject decodes a JSON object into its keys, in order, and their raw values. Unlike
// json.Unmarshal into a map or struct it rejects repeated keys and keeps their exact case.
func decodeObject(raw json.RawMessage) ([]string, map[string]json.RawMessage, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := d.Token(); err != nil || tok != json.Delim('{') {
		return nil, nil, fmt.Errorf("not a JSON object: %s", abbreviate(raw))
	}
	var keys []string
	values := map[string]json.RawMessage{}
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			return nil, nil, err
		}
		k, _ := tok.(string) // inside an object the decoder only yields string keys
		var v json.RawMessage
		if err := d.Decode(&v); err != nil {
			return nil, nil, fmt.Errorf("key %q: %w", k, err)
		}
		if _, dup := values[k]; dup {
			return nil, nil, problemf("give each key once", "key %q appears twice", k)
		}
		keys = append(keys, k)
		values[k] = v
	}
	return keys, values, nil
}

func isNull(v json.RawMessage) bool { return string(bytes.TrimSpace(v)) == "null" }

func decodeString(v json.RawMessage, key string, dst *string) error {
	if isNull(v) {
		return nil
	}
	if err := json.Unmarshal(v, dst); err != nil {
		return problemf(fmt.Sprintf("make %q a JSON string", key), "%q must be a string, not %s", key, abbreviate(v))
	}
	return nil
}

func decodeStrings(v json.RawMessage, key string, dst *[]string) error {
	if isNull(v) {
		return nil
	}
	if err := json.Unmarshal(v, dst); err != nil {
		return problemf(fmt.Sprintf(`make %q a list of strings such as ["10.1.2.3/24"]`, key),
			"%q must be a list of strings, not %s", key, abbreviate(v))
	}
	return nil
}

// decodeNumber decodes a JSON integer without the float64 detour that would accept 1.5 or
// silently round large values.
func decodeNumber(v json.RawMessage, key string) (json.Number, error) {
	d := json.NewDecoder(bytes.NewReader(v))
	d.UseNumber()
	var x any
	err := d.Decode(&x)
	n, ok := x.(json.Number)
	if err != nil || !ok || strings.ContainsAny(string(n), ".eE") {
		return "", problemf(fmt.Sprintf("make %s a whole number", key), "%s must be an integer, not %s", key, abbreviate(v))
	}
	return n, nil
}

func decodePortMappings(s *Selection, v json.RawMessage) error {
	if isNull(v) {
		return nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(v, &items); err != nil {
		return problemf(`make "portMappings" a list of objects`, `"portMappings" must be a list, not %s`, abbreviate(v))
	}
	for i, raw := range items {
		keys, values, err := decodeObject(raw)
		if err != nil {
			return problemf(`write each port mapping as {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}`,
				`"portMappings"[%d]: %v`, i, err)
		}
		var pm PortMapping
		for _, k := range keys {
			field := fmt.Sprintf(`"portMappings"[%d].%s`, i, k)
			switch k {
			case "hostPort", "containerPort":
				n, err := decodeNumber(values[k], field)
				if err != nil {
					return err
				}
				port, err := n.Int64()
				if err != nil || port < 1 || port > 65535 {
					return problemf("use a port from 1 to 65535", "%s %s is not a port number", field, n)
				}
				if k == "hostPort" {
					pm.HostPort = int(port)
				} else {
					pm.ContainerPort = int(port)
				}
			case "protocol":
				if err := decodeString(values[k], field, &pm.Protocol); err != nil {
					return err
				}
			case "hostIP":
				if err := decodeString(values[k], field, &pm.HostIP); err != nil {
					return err
				}
			default:
				return problemf("use only hostPort, containerPort, protocol and hostIP", "unknown key %s", field)
			}
		}
		s.PortMappings = append(s.PortMappings, pm)
	}
	return nil
}

func decodeBandwidth(s *Selection, v json.RawMessage) error {
	if isNull(v) {
		return nil
	}
	keys, values, err := decodeObject(v)
	if err != nil {
		return problemf(`write "bandwidth" as {"ingressRate": ..., "ingressBurst": ..., "egressRate": ..., "egressBurst": ...}`,
			`"bandwidth": %v`, err)
	}
	var bw Bandwidth
	fields := map[string]*uint64{
		"ingressRate": &bw.IngressRate, "ingressBurst": &bw.IngressBurst,
		"egressRate": &bw.EgressRate, "egressBurst": &bw.EgressBurst,
	}
	for _, k := range keys {
		dst, ok := fields[k]
		if !ok {
			return problemf("use only ingressRate, ingressBurst, egressRate and egressBurst", `unknown key "bandwidth".%s`, k)
		}
		field := `"bandwidth".` + k
		n, err := decodeNumber(values[k], field)
		if err != nil {
			return err
		}
		x, err := strconv.ParseUint(string(n), 10, 64)
		if err != nil {
			return problemf("use a rate in bits per second or a burst in bits, 0 for no limit",
				"%s %s is not a non-negative integer", field, n)
		}
		*dst = x
	}
	s.Bandwidth = &bw
	return nil
}

func decodeCNIArgs(s *Selection, v json.RawMessage) error {
	if isNull(v) {
		return nil
	}
	d := json.NewDecoder(bytes.NewReader(v))
	d.UseNumber() // keep numbers as written when they are merged into the config
	var args map[string]any
	if err := d.Decode(&args); err != nil {
		return problemf(`make "cni-args" a JSON object`, `"cni-args" must be an object, not %s`, abbreviate(v))
	}
	s.CNIArgs = args
	return nil
}

// abbreviate shortens a value quoted in an error message, so a huge annotation does not
// become a huge event.
func abbreviate(v []byte) string {
	const max = 64
	s := strings.TrimSpace(string(v))
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}
