package attach

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/version"

	"github.com/loom-cni/loom/sriov/vf"
)

// network is a loom-sriov network configuration, parsed, defaulted and validated. It is a
// value: nothing changes it after parse returns it.
type network struct {
	name       string
	cniVersion string
	// deviceID is the VF's PCI address, "" when the configuration names none.
	deviceID string
	// pf is what the PF is to hold for the VF; its MAC is the configuration's, "" for none.
	pf  vf.State
	mtu int
	// ipamType is the IPAM plugin, "" for a network without IPAM.
	ipamType string
	// capabilities are the capabilities the plugin declares: the runtimeConfig it takes.
	capabilities map[string]bool
	// plugin is the plugin's configuration, with the network's name and cniVersion, as the
	// IPAM plugin is given it.
	plugin []byte
}

// FieldError reports a field of a network configuration that is wrong, and how.
type FieldError struct {
	// Field is the field as the configuration spells it: "vlan", "ipam.type".
	Field   string
	Problem string
	Err     error
}

func (e *FieldError) Error() string { return fmt.Sprintf("%q: %s", e.Field, e.Problem) }

func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Problem: fmt.Sprintf(format, args...)}
}

// pluginConf is the loom-sriov plugin configuration as written. Field names are sriov-cni's,
// so that its NetworkAttachmentDefinitions move over with "type" changed.
type pluginConf struct {
	Type         string          `json:"type"`
	DeviceID     string          `json:"deviceID"`
	VLAN         int             `json:"vlan"`
	VLANQoS      int             `json:"vlanQoS"`
	VLANProto    string          `json:"vlanProto"`
	SpoofChk     string          `json:"spoofchk"`
	Trust        string          `json:"trust"`
	LinkState    string          `json:"link_state"`
	MinTxRate    int64           `json:"min_tx_rate"`
	MaxTxRate    int64           `json:"max_tx_rate"`
	MAC          string          `json:"mac"`
	MTU          int             `json:"mtu"`
	IPAM         json.RawMessage `json:"ipam"`
	Capabilities map[string]bool `json:"capabilities"`
}

// minMTU is the smallest MTU IPv4 allows, maxMTU the largest Linux lets a netdev have.
const minMTU, maxMTU = 68, 65535

// pciAddress matches a VF's PCI address, as the kubelet hands it over.
var pciAddress = regexp.MustCompile(`^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$`)

// parse reads a loom-sriov network configuration: a configuration list whose only plugin
// has type loom-sriov (what loomd resolves a NetworkAttachmentDefinition to), or that single
// plugin configuration on its own. spoofchk defaults to on, trust to off and link_state to
// auto: a VF is locked down unless the network says otherwise.
func parse(raw []byte) (network, error) {
	plugin, name, cniVersion, err := locatePlugin(raw)
	if err != nil {
		return network{}, err
	}
	var pc pluginConf
	if err = json.Unmarshal(plugin, &pc); err != nil {
		return network{}, fieldError(err)
	}
	n := network{
		name: name, cniVersion: cniVersion, deviceID: pc.DeviceID, mtu: pc.MTU,
		capabilities: map[string]bool{}, plugin: plugin,
		pf: vf.State{VLAN: pc.VLAN, QoS: pc.VLANQoS, MAC: strings.ToLower(pc.MAC), LinkState: pc.LinkState,
			MinTxRate: int(pc.MinTxRate), MaxTxRate: int(pc.MaxTxRate)},
	}
	for k, v := range pc.Capabilities {
		if v {
			n.capabilities[k] = true
		}
	}
	if n.pf.SpoofChk, err = onOff("spoofchk", pc.SpoofChk, true); err != nil {
		return network{}, err
	}
	if n.pf.Trust, err = onOff("trust", pc.Trust, false); err != nil {
		return network{}, err
	}
	if n.pf.LinkState == "" {
		n.pf.LinkState = vf.LinkAuto
	}
	if n.ipamType, err = ipamType(pc.IPAM); err != nil {
		return network{}, err
	}
	if err = validate(n, pc); err != nil {
		return network{}, err
	}
	if n.pf.MAC != "" {
		mac, _ := vf.ParseMAC(n.pf.MAC) // validated
		n.pf.MAC = mac.String()
	}
	return n, nil
}

// ipamType reads the type of the "ipam" object; "" when there is none, or it is empty, as
// sriov-cni reads it.
func ipamType(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var ipam map[string]any
	if err := json.Unmarshal(raw, &ipam); err != nil || ipam == nil {
		return "", fieldErr("ipam", "must be an object")
	}
	t, ok := ipam["type"]
	if !ok && len(ipam) == 0 {
		return "", nil
	}
	typ, _ := t.(string)
	switch {
	case typ == "":
		return "", fieldErr("ipam.type", `name the IPAM plugin, or leave "ipam" out for a VF without addresses`)
	case strings.ContainsAny(typ, `/\`) || typ == "." || typ == "..":
		return "", fieldErr("ipam.type", `%q is a path; it must be the name of a plugin binary`, typ)
	}
	return typ, nil
}

// validate checks what parse read; every error names the field and what it may be.
func validate(n network, pc pluginConf) error {
	switch {
	case n.name == "":
		return fieldErr("name", `the network has no name`)
	case n.cniVersion == "":
		return fieldErr("cniVersion", `the network declares no CNI version`)
	case !slices.Contains(version.All.SupportedVersions(), n.cniVersion):
		return fieldErr("cniVersion", `%q is not one of %s`, n.cniVersion, strings.Join(version.All.SupportedVersions(), ", "))
	case n.deviceID != "" && !pciAddress.MatchString(n.deviceID):
		return fieldErr("deviceID", `%q is not a PCI address such as 0000:3b:02.0`, n.deviceID)
	case pc.VLAN < 0 || pc.VLAN > vf.MaxVLAN:
		return fieldErr("vlan", `%d is not within 0..%d (0 is no VLAN)`, pc.VLAN, vf.MaxVLAN)
	case pc.VLANQoS < 0 || pc.VLANQoS > vf.MaxQoS:
		return fieldErr("vlanQoS", `%d is not within 0..%d`, pc.VLANQoS, vf.MaxQoS)
	case pc.VLANQoS != 0 && pc.VLAN == 0:
		return fieldErr("vlanQoS", `%d needs a "vlan"`, pc.VLANQoS)
	case pc.VLANProto != "" && !strings.EqualFold(pc.VLANProto, "802.1q"):
		return fieldErr("vlanProto", `%q is not supported; only 802.1Q VLANs are`, pc.VLANProto)
	case n.pf.LinkState != vf.LinkAuto && n.pf.LinkState != vf.LinkEnable && n.pf.LinkState != vf.LinkDisable:
		return fieldErr("link_state", `%q is not auto, enable or disable`, n.pf.LinkState)
	case pc.MinTxRate < 0 || pc.MinTxRate > vf.MaxRate:
		return fieldErr("min_tx_rate", `%d is not within 0..%d Mbps`, pc.MinTxRate, vf.MaxRate)
	case pc.MaxTxRate < 0 || pc.MaxTxRate > vf.MaxRate:
		return fieldErr("max_tx_rate", `%d is not within 0..%d Mbps (0 is no limit)`, pc.MaxTxRate, vf.MaxRate)
	case pc.MaxTxRate != 0 && pc.MinTxRate > pc.MaxTxRate:
		return fieldErr("min_tx_rate", `%d Mbps is above "max_tx_rate" %d Mbps`, pc.MinTxRate, pc.MaxTxRate)
	case n.mtu != 0 && (n.mtu < minMTU || n.mtu > maxMTU):
		return fieldErr("mtu", `%d is not within %d..%d (0 keeps the VF's)`, n.mtu, minMTU, maxMTU)
	}
	if n.pf.MAC != "" {
		if _, err := vf.ParseMAC(n.pf.MAC); err != nil {
			return &FieldError{Field: "mac", Problem: err.Error(), Err: err}
		}
	}
	return n.pf.Validate()
}

// onOff reads spoofchk and trust, which sriov-cni spells "on" and "off".
func onOff(field, v string, dflt bool) (bool, error) {
	switch v {
	case "":
		return dflt, nil
	case "on":
		return true, nil
	case "off":
		return false, nil
	}
	return false, fieldErr(field, `%q is neither "on" nor "off"`, v)
}

// fieldError turns a decoding error into one that names the field, not a Go type.
func fieldError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fieldErr(te.Field, "a JSON %s cannot be a %s", te.Value, te.Type)
	}
	return fmt.Errorf("not a loom-sriov plugin configuration: %w", err)
}

// locatePlugin finds the loom-sriov plugin in raw and returns its configuration as the IPAM
// plugin is to see it: with the network's name and cniVersion, which a configuration list
// keeps at its top.
func locatePlugin(raw []byte) (plugin []byte, name, cniVersion string, err error) {
	top, err := decodeObject(raw)
	if err != nil {
		return nil, "", "", err
	}
	obj := top
	if p, isList := top["plugins"]; isList {
		list, ok := p.([]any)
		if !ok || len(list) == 0 {
			return nil, "", "", fieldErr("plugins", "must be a non-empty list of plugin configurations")
		}
		if len(list) != 1 {
			return nil, "", "", fieldErr("plugins", "has %d plugins: loom-sriov runs inside loomd and chains no other plugin; keep the loom-sriov plugin only", len(list))
		}
		if obj, ok = list[0].(map[string]any); !ok {
			return nil, "", "", fieldErr("plugins", `the plugin is not a JSON object`)
		}
	}
	if typ, _ := obj["type"].(string); typ != Kind {
		return nil, "", "", fieldErr("type", `%q is not %q`, typ, Kind)
	}
	if name, err = stringField(top, obj, "name"); err != nil {
		return nil, "", "", err
	}
	if cniVersion, err = stringField(top, obj, "cniVersion"); err != nil {
		return nil, "", "", err
	}
	obj["name"], obj["cniVersion"] = name, cniVersion
	delete(obj, "runtimeConfig") // the call's capability arguments replace it
	delete(obj, "prevResult")
	plugin, err = json.Marshal(obj)
	if err != nil {
		return nil, "", "", fmt.Errorf("encode plugin configuration: %w", err)
	}
	return plugin, name, cniVersion, nil
}

// stringField reads key from the list top, else from the plugin obj.
func stringField(top, obj map[string]any, key string) (string, error) {
	for _, m := range []map[string]any{top, obj} {
		switch v := m[key].(type) {
		case nil:
		case string:
			if v != "" {
				return v, nil
			}
		default:
			return "", fieldErr(key, "must be a string")
		}
	}
	return "", nil
}

// decodeObject decodes exactly one JSON object, keeping numbers as written so that the IPAM
// plugin gets the configuration as the network defines it.
func decodeObject(raw []byte) (map[string]any, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var obj map[string]any
	if err := d.Decode(&obj); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	if obj == nil {
		return nil, errors.New("not a JSON object")
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, errors.New("data after the configuration object")
	}
	return obj, nil
}

// deviceIDOf reads only the deviceID of a configuration, for DEL, which must release a VF
// even when the configuration no longer passes every check of parse.
func deviceIDOf(raw []byte) string {
	plugin, _, _, err := locatePlugin(raw)
	if err != nil {
		return ""
	}
	var pc struct {
		DeviceID string `json:"deviceID"`
	}
	if json.Unmarshal(plugin, &pc) != nil || !pciAddress.MatchString(pc.DeviceID) {
		return ""
	}
	return pc.DeviceID
}
