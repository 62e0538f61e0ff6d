package attach

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/loom-cni/loom/sriov/vf"
)

func TestParseDefaultsToALockedDownVF(t *testing.T) {
	for _, raw := range []string{
		// What loomd resolves a NetworkAttachmentDefinition to: a list of one plugin.
		`{"cniVersion":"1.0.0","name":"sriov-a","plugins":[{"type":"loom-sriov","deviceID":"0000:3b:02.0"}]}`,
		// The plugin on its own, as sriov-cni's NetworkAttachmentDefinitions are written.
		`{"cniVersion":"1.0.0","name":"sriov-a","type":"loom-sriov","deviceID":"0000:3b:02.0"}`,
	} {
		n, err := parse([]byte(raw))
		if err != nil {
			t.Fatalf("parse %s: %v", raw, err)
		}
		want := vf.State{SpoofChk: true, LinkState: vf.LinkAuto}
		if n.pf != want || n.name != "sriov-a" || n.cniVersion != "1.0.0" || n.deviceID != "0000:3b:02.0" ||
			n.mtu != 0 || n.ipamType != "" {
			t.Errorf("parse %s: got %+v", raw, n)
		}
	}
}

func TestParseReadsSRIOVCNIFields(t *testing.T) {
	raw := `{"cniVersion":"0.4.0","name":"sriov-b","plugins":[{"type":"loom-sriov","deviceID":"0000:3b:02.1",
	  "vlan":100,"vlanQoS":3,"vlanProto":"802.1Q","spoofchk":"off","trust":"on","link_state":"enable",
	  "min_tx_rate":100,"max_tx_rate":1000,"mac":"02:AA:bb:00:00:01","mtu":9000,
	  "capabilities":{"mac":true,"ips":true,"bandwidth":false},
	  "ipam":{"type":"host-local","ranges":[[{"subnet":"10.1.0.0/24"}]],"big":12345678901234567890}}]}`
	n, err := parse([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	want := vf.State{MAC: "02:aa:bb:00:00:01", VLAN: 100, QoS: 3, SpoofChk: false, Trust: true,
		LinkState: vf.LinkEnable, MinTxRate: 100, MaxTxRate: 1000}
	if n.pf != want {
		t.Errorf("pf state %+v, want %+v", n.pf, want)
	}
	if n.mtu != 9000 || n.ipamType != "host-local" || n.cniVersion != "0.4.0" {
		t.Errorf("got %+v", n)
	}
	if !reflect.DeepEqual(n.capabilities, map[string]bool{"mac": true, "ips": true}) {
		t.Errorf("capabilities %v", n.capabilities)
	}
	// The IPAM plugin gets the plugin with the network's name and version, numbers as written.
	var plugin map[string]any
	d := json.NewDecoder(bytes.NewReader(n.plugin))
	d.UseNumber()
	if err := d.Decode(&plugin); err != nil {
		t.Fatal(err)
	}
	if plugin["name"] != "sriov-b" || plugin["cniVersion"] != "0.4.0" ||
		plugin["ipam"].(map[string]any)["big"].(json.Number) != "12345678901234567890" {
		t.Errorf("plugin configuration for ipam: %s", n.plugin)
	}
}

func TestParseEmptyIPAMIsNone(t *testing.T) {
	for _, ipam := range []string{`{}`, `null`} {
		n, err := parse([]byte(`{"cniVersion":"1.0.0","name":"n","type":"loom-sriov","ipam":` + ipam + `}`))
		if err != nil || n.ipamType != "" {
			t.Errorf("ipam %s: %+v, %v", ipam, n, err)
		}
	}
}

func TestParseErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct {
		field, plugin string
	}{
		{"type", `"type":"sriov"`},
		{"deviceID", `"type":"loom-sriov","deviceID":"3b:02.0"`},
		{"deviceID", `"type":"loom-sriov","deviceID":"../../etc"`},
		{"vlan", `"type":"loom-sriov","vlan":4095`},
		{"vlan", `"type":"loom-sriov","vlan":-1`},
		{"vlan", `"type":"loom-sriov","vlan":"100"`},
		{"vlanQoS", `"type":"loom-sriov","vlan":1,"vlanQoS":8`},
		{"vlanQoS", `"type":"loom-sriov","vlanQoS":1`},
		{"vlanProto", `"type":"loom-sriov","vlan":1,"vlanProto":"802.1ad"`},
		{"spoofchk", `"type":"loom-sriov","spoofchk":"true"`},
		{"trust", `"type":"loom-sriov","trust":"yes"`},
		{"link_state", `"type":"loom-sriov","link_state":"up"`},
		{"min_tx_rate", `"type":"loom-sriov","min_tx_rate":-1`},
		{"max_tx_rate", `"type":"loom-sriov","max_tx_rate":12345678901`},
		{"min_tx_rate", `"type":"loom-sriov","min_tx_rate":200,"max_tx_rate":100`},
		{"mac", `"type":"loom-sriov","mac":"01:00:5e:00:00:01"`},
		{"mac", `"type":"loom-sriov","mac":"nope"`},
		{"mtu", `"type":"loom-sriov","mtu":10`},
		{"ipam", `"type":"loom-sriov","ipam":"host-local"`},
		{"ipam.type", `"type":"loom-sriov","ipam":{"subnet":"10.0.0.0/24"}`},
		{"ipam.type", `"type":"loom-sriov","ipam":{"type":"../bin/sh"}`},
	} {
		raw := `{"cniVersion":"1.0.0","name":"n","plugins":[{` + tc.plugin + `}]}`
		_, err := parse([]byte(raw))
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("parse %s: got %v, want an error about %q", tc.plugin, err, tc.field)
		}
	}
	for _, tc := range []struct{ field, raw string }{
		{"name", `{"cniVersion":"1.0.0","type":"loom-sriov"}`},
		{"cniVersion", `{"name":"n","type":"loom-sriov"}`},
		{"cniVersion", `{"cniVersion":"9.9.9","name":"n","type":"loom-sriov"}`},
		{"plugins", `{"cniVersion":"1.0.0","name":"n","plugins":[]}`},
		{"plugins", `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"loom-sriov"},{"type":"tuning"}]}`},
	} {
		_, err := parse([]byte(tc.raw))
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("parse %s: got %v, want an error about %q", tc.raw, err, tc.field)
		}
	}
	for _, raw := range []string{``, `[]`, `null`, `{"type":"loom-sriov"} {}`} {
		if _, err := parse([]byte(raw)); err == nil {
			t.Errorf("parse %q: no error", raw)
		}
	}
}

func TestDeviceIDOfIsLenient(t *testing.T) {
	// A configuration that fails parse's checks still names its VF for DEL.
	raw := `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"loom-sriov","deviceID":"0000:3b:02.0","vlan":99999}]}`
	if got := deviceIDOf([]byte(raw)); got != "0000:3b:02.0" {
		t.Errorf("deviceIDOf = %q", got)
	}
	if got := deviceIDOf([]byte(`{"type":"loom-sriov","deviceID":"../x"}`)); got != "" {
		t.Errorf("deviceIDOf a path = %q", got)
	}
}

// FuzzParse checks that parse never panics and that what it accepts holds its invariants:
// the PF state is one a PF takes, and the plugin configuration handed to IPAM parses to the
// same network.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		`{"cniVersion":"1.0.0","name":"sriov-a","plugins":[{"type":"loom-sriov","deviceID":"0000:3b:02.0","vlan":100}]}`,
		`{"cniVersion":"0.3.1","name":"n","type":"loom-sriov","spoofchk":"off","trust":"on","link_state":"disable","mac":"02:00:00:00:00:01"}`,
		`{"cniVersion":"1.1.0","name":"n","type":"loom-sriov","min_tx_rate":1,"max_tx_rate":2,"mtu":1500,"ipam":{"type":"static"}}`,
		`{"cniVersion":"1.0.0","name":"n","type":"loom-sriov","capabilities":{"mac":true},"ipam":{}}`,
		`{"plugins":[{"type":"loom-sriov","vlanQoS":1}]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		n, err := parse(raw)
		if err != nil {
			return
		}
		if verr := n.pf.Validate(); verr != nil {
			t.Fatalf("accepted a PF state a PF refuses: %+v: %v", n.pf, verr)
		}
		if n.deviceID != "" && !pciAddress.MatchString(n.deviceID) {
			t.Fatalf("accepted deviceID %q", n.deviceID)
		}
		again, err := parse(n.plugin)
		if err != nil {
			t.Fatalf("the plugin configuration of %s does not parse: %v", raw, err)
		}
		if !reflect.DeepEqual(again.pf, n.pf) || again.name != n.name || again.cniVersion != n.cniVersion ||
			again.deviceID != n.deviceID || again.ipamType != n.ipamType || again.mtu != n.mtu {
			t.Fatalf("plugin configuration parses differently:\n%+v\n%+v", n, again)
		}
	})
}
