package npwg

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/utils"
	"github.com/containernetworking/cni/pkg/version"
)

// netConfig is a network configuration ready for one attachment: always a configuration list,
// with its name and cniVersion filled in and the pod's cni-args merged into every plugin.
type netConfig struct {
	name  string
	bytes []byte
	// caps holds the capabilities that at least one plugin declares.
	caps map[string]bool
	// types lists the plugins' types in order.
	types []string
}

// plugin is the type of the first plugin, the one that makes the interface.
func (c netConfig) plugin() string {
	if len(c.types) == 0 {
		return ""
	}
	return c.types[0]
}

// loadNetConfig turns the text of a NAD's spec.config or of a configuration file into a
// netConfig. raw may be a single plugin configuration ("type") or a list ("plugins"); name is
// injected when the configuration has none, cniVersion when it declares no version at all.
//
// It works on a generic JSON tree decoded with UseNumber rather than going through
// libcni.ConfListFromConf, which round-trips numbers through float64 and would rewrite a large
// integer in a plugin's configuration. libcni still has the last word: the result must parse
// with libcni.NetworkConfFromBytes.
func loadNetConfig(raw []byte, name, cniVersion string, cniArgs map[string]any) (netConfig, error) {
	top, err := decodeConfigObject(raw)
	if err != nil {
		return netConfig{}, err
	}
	_, single := top["type"]
	_, isList := top["plugins"]
	list := top
	switch {
	case single && isList:
		return netConfig{}, errors.New(`has both "type" (a single plugin) and "plugins" (a list); keep one`)
	case single:
		// Lift the network-level keys; the plugin keeps its copy, as libcni's own conversion does.
		list = map[string]any{"plugins": []any{top}}
		for _, k := range []string{"name", "cniVersion", "cniVersions"} {
			if v, ok := top[k]; ok {
				list[k] = v
			}
		}
	case !isList:
		return netConfig{}, errors.New(`has neither "type" nor "plugins"; it is not a CNI network configuration`)
	}

	netName, err := stringField(list, "name")
	if err != nil {
		return netConfig{}, err
	}
	if netName == "" {
		netName = name
		list["name"] = name
		if single {
			top["name"] = name
		}
	}
	if e := utils.ValidateNetworkName(netName); e != nil {
		return netConfig{}, fmt.Errorf("network name %q is not valid: %s", netName, e.Msg)
	}

	v, err := stringField(list, "cniVersion")
	if err != nil {
		return netConfig{}, err
	}
	if _, hasVersions := list["cniVersions"]; v == "" && !hasVersions {
		list["cniVersion"] = cniVersion
		if single {
			top["cniVersion"] = cniVersion
		}
	} else if v != "" && !slices.Contains(version.All.SupportedVersions(), v) {
		return netConfig{}, fmt.Errorf("cniVersion %q is not one of %s", v, strings.Join(version.All.SupportedVersions(), ", "))
	}

	plugins, ok := list["plugins"].([]any)
	if !ok || len(plugins) == 0 {
		return netConfig{}, errors.New(`"plugins" must be a non-empty list of plugin configurations`)
	}
	caps := map[string]bool{}
	var types []string
	for i, p := range plugins {
		plugin, ok := p.(map[string]any)
		if !ok {
			return netConfig{}, fmt.Errorf("plugin %d is not a JSON object", i)
		}
		if perr := preparePlugin(plugin, caps, cniArgs); perr != nil {
			return netConfig{}, fmt.Errorf("plugin %d: %w", i, perr)
		}
		types = append(types, plugin["type"].(string))
	}

	out, err := json.Marshal(list)
	if err != nil {
		return netConfig{}, fmt.Errorf("encode configuration list: %w", err)
	}
	if _, err = libcni.NetworkConfFromBytes(out); err != nil {
		return netConfig{}, fmt.Errorf("rejected by libcni: %w", err)
	}
	return netConfig{name: netName, bytes: out, caps: caps, types: types}, nil
}

// preparePlugin checks one plugin's type, records its capabilities and merges cniArgs into
// its args.cni object (CNI conventions: "args" carry what the runtime adds to a configuration).
func preparePlugin(plugin map[string]any, caps map[string]bool, cniArgs map[string]any) error {
	typ, err := stringField(plugin, "type")
	switch {
	case err != nil:
		return err
	case typ == "":
		return errors.New(`no "type"`)
	case strings.ContainsRune(typ, '/'):
		return fmt.Errorf("type %q is a path; it must be the name of a plugin binary", typ)
	}
	if c, ok := plugin["capabilities"]; ok {
		declared, ok := c.(map[string]any)
		if !ok {
			return errors.New(`"capabilities" must be an object`)
		}
		for k, v := range declared {
			if v == true {
				caps[k] = true
			}
		}
	}
	if len(cniArgs) == 0 {
		return nil
	}
	args := map[string]any{}
	if a, ok := plugin["args"]; ok {
		if args, ok = a.(map[string]any); !ok {
			return errors.New(`"args" must be an object to take the pod's cni-args`)
		}
	}
	merged := map[string]any{}
	if c, ok := args["cni"]; ok {
		if merged, ok = c.(map[string]any); !ok {
			return errors.New(`"args"."cni" must be an object to take the pod's cni-args`)
		}
	}
	for k, v := range cniArgs {
		merged[k] = v
	}
	args["cni"] = merged
	plugin["args"] = args
	return nil
}

// decodeConfigObject decodes exactly one JSON object, keeping numbers as written.
func decodeConfigObject(raw []byte) (map[string]any, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, fmt.Errorf("not valid JSON: %w", err)
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, errors.New("not valid JSON: data after the configuration object")
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("not a JSON object")
	}
	return obj, nil
}

// stringField returns obj[key] if it is a string, "" if it is absent or null.
func stringField(obj map[string]any, key string) (string, error) {
	switch v := obj[key].(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	default:
		return "", fmt.Errorf("%q must be a string", key)
	}
}

// confExtensions are the file name extensions loomd reads in its configuration directory, the
// same set Multus and the NPWG client library read.
var confExtensions = []string{".conf", ".conflist", ".json"}

// confFile finds a configuration file in dir: one whose base name without extension is name
// (when byFileName is set), else the first whose "name" field is name, in lexical order.
// Unreadable files are skipped unless their base name is the one asked for; when nothing
// matches, the error lists them, since one of them may well be the file meant.
func confFile(dir fs.FS, name string, byFileName bool) (file string, raw []byte, err error) {
	if dir == nil {
		return "", nil, errors.New("no CNI configuration directory is configured")
	}
	entries, err := fs.ReadDir(dir, ".")
	if err != nil {
		return "", nil, fmt.Errorf("read CNI configuration directory: %w", err)
	}
	var byName string
	var byNameRaw []byte
	var broken []string
	for _, e := range entries {
		ext := path.Ext(e.Name())
		if e.IsDir() || !slices.Contains(confExtensions, ext) {
			continue
		}
		data, readErr := fs.ReadFile(dir, e.Name())
		var head struct {
			Name string `json:"name"`
		}
		if readErr == nil {
			readErr = json.Unmarshal(data, &head)
		}
		if byFileName && strings.TrimSuffix(e.Name(), ext) == name {
			if readErr != nil {
				return e.Name(), nil, fmt.Errorf("configuration file %s: %w", e.Name(), readErr)
			}
			return e.Name(), data, nil
		}
		switch {
		case readErr != nil:
			broken = append(broken, fmt.Sprintf("%s (%v)", e.Name(), readErr))
		case head.Name == name && byName == "":
			byName, byNameRaw = e.Name(), data
		}
	}
	if byName != "" {
		return byName, byNameRaw, nil
	}
	msg := fmt.Sprintf("no configuration file in the CNI configuration directory has network name %q", name)
	if byFileName {
		msg = fmt.Sprintf("no configuration file in the CNI configuration directory is named %s{%s} or has network name %q",
			name, strings.Join(confExtensions, ","), name)
	}
	if len(broken) > 0 {
		msg += "; these files could not be read: " + strings.Join(broken, ", ")
	}
	return "", nil, errors.New(msg)
}

// WithDeviceID returns the configuration list config with "deviceID" set to id in every
// plugin, as device-aware plugins (sriov-cni, host-device, Loom's loom-sriov) read it. Numbers
// in the configuration are kept as they were written.
func WithDeviceID(config []byte, id string) ([]byte, error) {
	list, err := decodeConfigObject(config)
	if err != nil {
		return nil, err
	}
	plugins, ok := list["plugins"].([]any)
	if !ok {
		return nil, errors.New(`set deviceID: not a configuration list`)
	}
	for i, p := range plugins {
		plugin, ok := p.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("set deviceID: plugin %d is not a JSON object", i)
		}
		plugin["deviceID"] = id
	}
	return json.Marshal(list)
}
