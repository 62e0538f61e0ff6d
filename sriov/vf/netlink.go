package vf

import (
	"bytes"
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
)

// netlinkConfigurator writes VF settings through the kernel.
type netlinkConfigurator struct {
	h *netlink.Handle
}

var _ Configurator = netlinkConfigurator{}

// Netlink returns a Configurator that reads and writes VF settings through the kernel, on
// PFs in the network namespace of the calling thread.
func Netlink() Configurator {
	return netlinkConfigurator{h: &netlink.Handle{}} // a zero Handle opens a socket per request
}

// NetlinkAt returns a Configurator that works on the PFs in the network namespace of h.
func NetlinkAt(h *netlink.Handle) Configurator {
	return netlinkConfigurator{h: h}
}

// State reads the VF from the PF's IFLA_VFINFO_LIST.
func (c netlinkConfigurator) State(pf string, index int) (State, error) {
	key := Key{PF: pf, Index: index}
	link, err := c.h.LinkByName(pf)
	if err != nil {
		return State{}, fmt.Errorf("read %s: find pf: %w", key, err)
	}
	info, ok := vfInfo(link, index)
	if !ok {
		return State{}, fmt.Errorf("read %s: the pf lists %d vfs: %w", key, len(link.Attrs().Vfs), ErrNoVF)
	}
	return stateOf(info), nil
}

// Set writes the fields of s that differ from what the PF reports. A PF that does not report
// the VF (some drivers report none, and a kernel whose link message would grow too large
// drops the list) gets every field written, and its own errors say whether the VF exists.
// It keeps going past a refused setting and returns every refusal as a *SetError.
func (c netlinkConfigurator) Set(pf string, index int, s State) error {
	key := Key{PF: pf, Index: index}
	if err := s.Validate(); err != nil {
		return fmt.Errorf("set %s: %w", key, err)
	}
	link, err := c.h.LinkByName(pf)
	if err != nil {
		return fmt.Errorf("set %s: find pf: %w", key, err)
	}
	info, known := vfInfo(link, index)
	cur := stateOf(info)
	differs := func(changed bool) bool { return !known || changed }

	var errs []error
	set := func(setting string, err error) {
		if err != nil {
			errs = append(errs, &SetError{Key: key, Setting: setting, Err: err})
		}
	}
	if differs(cur.MAC != s.MAC) {
		mac := make(net.HardwareAddr, 6) // "" is the zero address
		if s.MAC != "" {
			mac, _ = ParseMAC(s.MAC) // validated above
		}
		set("mac", c.h.LinkSetVfHardwareAddr(link, index, mac))
	}
	if differs(cur.VLAN != s.VLAN || cur.QoS != s.QoS) {
		set("vlan", c.h.LinkSetVfVlanQos(link, index, s.VLAN, s.QoS))
	}
	if differs(cur.SpoofChk != s.SpoofChk) {
		set("spoofchk", c.h.LinkSetVfSpoofchk(link, index, s.SpoofChk))
	}
	if differs(cur.Trust != s.Trust) {
		set("trust", c.h.LinkSetVfTrust(link, index, s.Trust))
	}
	if differs(cur.LinkState != s.LinkState) {
		set("state", c.h.LinkSetVfState(link, index, linkStates[s.LinkState]))
	}
	if differs(cur.MinTxRate != s.MinTxRate || cur.MaxTxRate != s.MaxTxRate) {
		set("rate", c.h.LinkSetVfRate(link, index, s.MinTxRate, s.MaxTxRate))
	}
	return errors.Join(errs...)
}

// vfInfo finds VF index in the PF's list, which is in index order on every driver seen but
// is not promised to be.
func vfInfo(link netlink.Link, index int) (netlink.VfInfo, bool) {
	for _, info := range link.Attrs().Vfs {
		if info.ID == index {
			return info, true
		}
	}
	return netlink.VfInfo{}, false
}

var linkStates = map[string]uint32{
	LinkAuto:    nl.IFLA_VF_LINK_STATE_AUTO,
	LinkEnable:  nl.IFLA_VF_LINK_STATE_ENABLE,
	LinkDisable: nl.IFLA_VF_LINK_STATE_DISABLE,
}

func stateOf(info netlink.VfInfo) State {
	s := State{
		VLAN: info.Vlan, QoS: info.Qos, SpoofChk: info.Spoofchk, Trust: info.Trust != 0,
		MinTxRate: int(info.MinTxRate), MaxTxRate: int(info.MaxTxRate),
	}
	if s.MaxTxRate == 0 {
		s.MaxTxRate = info.TxRate // kernels before IFLA_VF_RATE report only this
	}
	if len(info.Mac) >= 6 && !bytes.Equal(info.Mac[:6], make([]byte, 6)) {
		s.MAC = info.Mac[:6].String()
	}
	for name, v := range linkStates {
		if v == info.LinkState {
			s.LinkState = name
		}
	}
	if s.LinkState == "" {
		s.LinkState = fmt.Sprintf("unknown(%d)", info.LinkState)
	}
	return s
}
