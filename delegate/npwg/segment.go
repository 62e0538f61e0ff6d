package npwg

import (
	"encoding/json"
	"strconv"
	"strings"

	"github.com/loom-cni/loom/delegate"
	"github.com/loom-cni/loom/tenants"
)

// Segment names the link layer a network's interfaces are on, as far as its configuration
// tells: two interfaces on one segment reach each other without a router, so an address or
// MAC must be unique on a segment, whatever NetworkAttachmentDefinitions the interfaces
// come from. Two NADs in different tenants' namespaces, both macvlan on the node's eth0, are
// one segment.
//
// The segment of a network is read from its main plugin (a list's first):
//   - macvlan, ipvlan, macvtap and vlan: the node link they sit on ("master", the node's
//     default-route interface when it names none, as those plugins do), and its VLANs;
//   - bridge and ovs: the bridge ("bridge"; cni0 for the bridge plugin when it names none),
//     and its VLANs;
//   - an SR-IOV network (its NAD names a device plugin resource): the resource, whose VFs
//     share their PFs' wire, and its VLANs;
//   - anything else, or a master inside the pod (linkInContainer): the network itself.
//
// A segment is cluster-wide: a node link or bridge of one name is taken to be the same wire
// on every node, as the simulated cluster's and most clusters' underlays are. Where it is
// not, two pods on different wires that ask for one address are refused although they would
// not clash: a refusal too many, never a clash let through.
type Segment string

// SegmentOf returns the segment of the network s attaches to. defaultLink is the node's
// default-route interface, where macvlan and ipvlan sit when the configuration names no
// master.
func SegmentOf(s delegate.Spec, defaultLink string) Segment {
	own := Segment("network " + s.Network)
	var list struct {
		Plugins []json.RawMessage `json:"plugins"`
	}
	main := []byte(s.Config)
	if json.Unmarshal(s.Config, &list) == nil && len(list.Plugins) > 0 {
		main = list.Plugins[0]
	}
	var p struct {
		Type            string `json:"type"`
		Master          string `json:"master"`
		Bridge          string `json:"bridge"`
		LinkInContainer bool   `json:"linkInContainer"`
	}
	if json.Unmarshal(main, &p) != nil {
		return own
	}
	var key string
	switch p.Type {
	case "macvlan", "ipvlan", "macvtap", "vlan":
		if p.LinkInContainer {
			return own
		}
		key = "link " + cmpOr(p.Master, defaultLink)
	case "bridge":
		key = "bridge " + cmpOr(p.Bridge, "cni0")
	case "ovs":
		if p.Bridge == "" {
			return own
		}
		key = "bridge " + p.Bridge
	default:
		if s.Resource == "" {
			return own
		}
		key = "resource " + s.Resource
	}
	if strings.HasSuffix(key, " ") {
		return own // a default link that is not known
	}
	// VLANs from wherever the configuration puts them: a trunk or unreadable VLANs keep the
	// segment of the link, which only makes the check wider.
	if vlans, err := tenants.ConfigVLANs(s.Config); err == nil && len(vlans) == 1 && vlans[0] != 0 {
		key += " vlan " + strconv.Itoa(vlans[0])
	}
	return Segment(key)
}

func cmpOr(s, dflt string) string {
	if s != "" {
		return s
	}
	return dflt
}
