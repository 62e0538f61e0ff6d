package vf_test

import (
	"testing"

	"github.com/loom-cni/loom/sriov/vf"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    vf.State
		ok   bool
	}{
		{"default", vf.Default(), true},
		{"everything", vf.State{MAC: "02:00:00:00:00:01", VLAN: 4094, QoS: 7, Trust: true, LinkState: vf.LinkDisable, MinTxRate: 10, MaxTxRate: 100}, true},
		{"min rate without max", vf.State{LinkState: vf.LinkAuto, MinTxRate: 10}, true},
		{"vlan too high", vf.State{LinkState: vf.LinkAuto, VLAN: 4095}, false},
		{"negative vlan", vf.State{LinkState: vf.LinkAuto, VLAN: -1}, false},
		{"qos too high", vf.State{LinkState: vf.LinkAuto, VLAN: 1, QoS: 8}, false},
		{"qos without vlan", vf.State{LinkState: vf.LinkAuto, QoS: 1}, false},
		{"no link state", vf.State{}, false},
		{"bad link state", vf.State{LinkState: "up"}, false},
		{"negative rate", vf.State{LinkState: vf.LinkAuto, MaxTxRate: -1}, false},
		{"min above max", vf.State{LinkState: vf.LinkAuto, MinTxRate: 20, MaxTxRate: 10}, false},
		{"multicast mac", vf.State{LinkState: vf.LinkAuto, MAC: "01:00:5e:00:00:01"}, false},
		{"zero mac", vf.State{LinkState: vf.LinkAuto, MAC: "00:00:00:00:00:00"}, false},
		{"long mac", vf.State{LinkState: vf.LinkAuto, MAC: "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01"}, false},
		{"not a mac", vf.State{LinkState: vf.LinkAuto, MAC: "nope"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.s.Validate()
			if (err == nil) != tc.ok {
				t.Errorf("Validate(%+v) = %v, want ok=%v", tc.s, err, tc.ok)
			}
		})
	}
}
