// Package vf owns the PF side of a VF: the settings a PF holds for each of its VFs (MAC, VLAN
// and QoS, spoof check, trust, link state, rate limits), read and written through a
// Configurator.
//
// # Design notes
//
// A Configurator is two methods on a whole State: read it, and make the PF hold it. Callers
// save a State before changing it and give it back to Set to restore it, so they never
// track which fields they touched. Set writes only the fields that differ from what the PF
// holds: some drivers refuse a setting they do not support (rate limits, trust) even when it
// would change nothing, and a pod asking for the defaults must not fail on them.
//
// Netlink writes through the kernel (RTM_SETLINK on the PF with IFLA_VF_* attributes), as
// `ip link set <pf> vf <n> ...` does. Nodes without SR-IOV hardware, the tests and the
// simulated cluster use a Recorder, which keeps the states in a JSON file that every process
// of the node sees: loomd writes it, a test reads it, a restarted loomd finds it again.
package vf

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net"
)

// Link states of a VF, as `ip link set <pf> vf <n> state` names them.
const (
	// LinkAuto makes the VF's link follow the PF's.
	LinkAuto = "auto"
	// LinkEnable keeps the VF's link up whatever the PF's.
	LinkEnable = "enable"
	// LinkDisable keeps the VF's link down.
	LinkDisable = "disable"
)

// MaxVLAN is the highest VLAN ID a VF can be given; 0 is no VLAN.
const MaxVLAN = 4094

// MaxQoS is the highest 802.1p priority of a VF's VLAN tag.
const MaxQoS = 7

// MaxRate is the highest rate limit in Mbps the kernel's interface can carry.
const MaxRate = math.MaxUint32

// State is what the PF holds for one VF.
type State struct {
	// MAC is the administrative MAC address in lower-case colon notation; "" is none (all
	// zeros), which leaves the VF's driver to choose one.
	MAC string `json:"mac,omitempty"`
	// VLAN is the VLAN ID the PF tags the VF's traffic with, 0 for none; QoS is the tag's
	// priority.
	VLAN int `json:"vlan"`
	QoS  int `json:"qos"`
	// SpoofChk makes the PF drop frames the VF sends from another source MAC.
	SpoofChk bool `json:"spoofchk"`
	// Trust lets the VF change its MAC and enter promiscuous or all-multicast mode.
	Trust bool `json:"trust"`
	// LinkState is LinkAuto, LinkEnable or LinkDisable.
	LinkState string `json:"linkState"`
	// MinTxRate and MaxTxRate bound the VF's transmit rate in Mbps; 0 is no bound.
	MinTxRate int `json:"minTxRate"`
	MaxTxRate int `json:"maxTxRate"`
}

// Default is the state of a VF nobody has configured: no MAC or VLAN, spoof checking on,
// no trust, the link following the PF's, no rate limits.
func Default() State {
	return State{SpoofChk: true, LinkState: LinkAuto}
}

// Validate reports the first field of s a PF would refuse, naming it.
func (s State) Validate() error {
	if s.MAC != "" {
		if _, err := ParseMAC(s.MAC); err != nil {
			return err
		}
	}
	switch {
	case s.VLAN < 0 || s.VLAN > MaxVLAN:
		return fmt.Errorf("vlan %d is not within 0..%d", s.VLAN, MaxVLAN)
	case s.QoS < 0 || s.QoS > MaxQoS:
		return fmt.Errorf("vlan qos %d is not within 0..%d", s.QoS, MaxQoS)
	case s.QoS != 0 && s.VLAN == 0:
		return fmt.Errorf("vlan qos %d needs a vlan", s.QoS)
	case s.LinkState != LinkAuto && s.LinkState != LinkEnable && s.LinkState != LinkDisable:
		return fmt.Errorf("link state %q is not %s, %s or %s", s.LinkState, LinkAuto, LinkEnable, LinkDisable)
	case s.MinTxRate < 0 || s.MaxTxRate < 0 || s.MinTxRate > MaxRate || s.MaxTxRate > MaxRate:
		return fmt.Errorf("tx rates %d..%d Mbps: a rate is within 0..%d", s.MinTxRate, s.MaxTxRate, MaxRate)
	case s.MaxTxRate != 0 && s.MinTxRate > s.MaxTxRate:
		return fmt.Errorf("min tx rate %d Mbps is above max tx rate %d Mbps", s.MinTxRate, s.MaxTxRate)
	}
	return nil
}

// ParseMAC parses a unicast Ethernet MAC address; the zero address, a multicast address and
// anything but six bytes are errors.
func ParseMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	switch {
	case err != nil:
		return nil, fmt.Errorf("mac %q: %w", s, err)
	case len(mac) != 6:
		return nil, fmt.Errorf("mac %q is not an Ethernet address of six bytes", s)
	case bytes.Equal(mac, make(net.HardwareAddr, 6)):
		return nil, fmt.Errorf("mac %q is the zero address", s)
	case mac[0]&1 == 1:
		return nil, fmt.Errorf("mac %q is a multicast address", s)
	}
	return mac, nil
}

// A Configurator reads and writes what PFs hold for their VFs. pf is the PF's netdev name and
// index the VF's number on it (N of the PF's virtfnN link).
type Configurator interface {
	// State returns what the PF holds for the VF.
	State(pf string, index int) (State, error)
	// Set makes the PF hold s for the VF, writing only the fields that differ.
	Set(pf string, index int, s State) error
}

// Key names one VF of one PF.
type Key struct {
	PF    string `json:"pf"`
	Index int    `json:"index"`
}

func (k Key) String() string { return fmt.Sprintf("vf %d of pf %s", k.Index, k.PF) }

// SetError reports a setting a PF refused for a VF.
type SetError struct {
	Key
	// Setting names the setting as `ip link set <pf> vf <n>` does: "mac", "vlan", "spoofchk",
	// "trust", "state" or "rate".
	Setting string
	Err     error
}

func (e *SetError) Error() string {
	return fmt.Sprintf("set %s of %s: %v", e.Setting, e.Key, e.Err)
}

func (e *SetError) Unwrap() error { return e.Err }

// ErrNoVF is wrapped by the error for a VF its PF does not have.
var ErrNoVF = errors.New("no such vf")
