package npwg

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/types/create"

	"github.com/loom-cni/loom/delegate"
)

// Asked-for addresses and MACs
//
// A pod may ask for its interfaces' addresses ("ips") and MAC ("mac") in the networks
// annotation, or hand them to the plugin in "cni-args". An address or MAC that another
// interface on the same segment (see Segment) already has would make the two interfaces
// each receive the other's traffic, across tenants when they are of two tenants: such a
// request is refused before anything is attached. What the other interfaces have comes from
// the node's ledger (this node's attachments, also those still being added, which is what
// makes two ADDs at the same moment see each other) and from the network-status of the
// cluster's pods (every node's). loom-ipam refuses a taken address of its pools by itself,
// when it allocates.

// Claim is what one interface of a pod has, or asks for, on a segment.
type Claim struct {
	Pod     string          // namespace/name
	UID     delegate.PodUID // "" when not known
	Network string
	Ifname  string
	Node    string // the node the pod runs on; "" for this node
	Segment Segment
	IPs     []netip.Addr
	MAC     net.HardwareAddr
}

// where names the interface for errors: "pod acme/web (interface net1 of network acme/lan, on node n2)".
func (c Claim) where() string {
	node := "this node"
	if c.Node != "" {
		node = "node " + c.Node
	}
	return fmt.Sprintf("pod %s (interface %s of network %s, on %s)", c.Pod, c.Ifname, c.Network, node)
}

// Asked returns what the attachments in specs ask for: a Claim for each one whose
// runtimeConfig ("ips", "mac") or args.cni (the annotation's cni-args) names addresses or a
// MAC. defaultLink is as for SegmentOf.
func Asked(pod delegate.PodRef, specs []delegate.Spec, defaultLink string) []Claim {
	var out []Claim
	for _, s := range specs {
		if c := askedOf(pod, s, defaultLink); len(c.IPs) > 0 || c.MAC != nil {
			out = append(out, c)
		}
	}
	return out
}

func askedOf(pod delegate.PodRef, s delegate.Spec, defaultLink string) Claim {
	c := Claim{Pod: pod.String(), UID: pod.UID, Network: s.Network, Ifname: s.Ifname}
	var ips []string
	var mac string
	if b, err := json.Marshal(s.CapabilityArgs["ips"]); err == nil {
		_ = json.Unmarshal(b, &ips) // validated when the annotation was parsed
	}
	if m, ok := s.CapabilityArgs["mac"].(string); ok {
		mac = m
	}
	for _, args := range configArgs(s.Config) {
		ips = append(ips, args.IPs...)
		mac = cmpOr(mac, args.MAC)
	}
	for _, ip := range ips {
		if _, a, err := parseRequestedIP(strings.TrimSpace(ip)); err == nil {
			c.IPs = append(c.IPs, a.Unmap())
		}
	}
	if hw, err := net.ParseMAC(strings.TrimSpace(mac)); err == nil {
		c.MAC = hw
	}
	if len(c.IPs) > 0 || c.MAC != nil {
		c.Segment = SegmentOf(s, defaultLink)
	}
	return c
}

// cniArgs is what a plugin's args.cni may ask for, by CNI conventions.
type cniArgs struct {
	IPs []string `json:"ips"`
	MAC string   `json:"mac"`
}

// configArgs returns the args.cni objects of a configuration: its own and its plugins'.
func configArgs(config []byte) []cniArgs {
	type withArgs struct {
		Args struct {
			CNI cniArgs `json:"cni"`
		} `json:"args"`
	}
	var conf struct {
		withArgs
		Plugins []withArgs `json:"plugins"`
	}
	if json.Unmarshal(config, &conf) != nil {
		return nil
	}
	out := []cniArgs{conf.Args.CNI}
	for _, p := range conf.Plugins {
		out = append(out, p.Args.CNI)
	}
	return out
}

// Recorded returns what the attachments of a ledger record have or ask for: what they asked
// for, and the addresses and MAC of their own interface in their results.
func Recorded(rec delegate.Record, defaultLink string) []Claim {
	var out []Claim
	for _, e := range rec.Attachments {
		if e.State == delegate.StatePlanned {
			continue
		}
		c := askedOf(rec.Pod, e.Spec, defaultLink)
		ips, mac := resultHolds(e.Result, e.Ifname)
		c.IPs = append(c.IPs, ips...)
		if c.MAC == nil {
			c.MAC = mac
		}
		if len(c.IPs) > 0 || c.MAC != nil {
			c.Segment = SegmentOf(e.Spec, defaultLink)
			out = append(out, c)
		}
	}
	return out
}

// resultHolds returns the addresses and the MAC a recorded result gives the interface ifname
// in the pod.
func resultHolds(raw json.RawMessage, ifname string) ([]netip.Addr, net.HardwareAddr) {
	if len(raw) == 0 {
		return nil, nil
	}
	r, err := create.CreateFromBytes(raw)
	if err != nil {
		return nil, nil
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		return nil, nil
	}
	own := -1
	var mac net.HardwareAddr
	for i, intf := range res.Interfaces {
		if intf.Sandbox != "" && intf.Name == ifname {
			own = i
			mac, _ = net.ParseMAC(intf.Mac)
		}
	}
	var ips []netip.Addr
	for _, ip := range res.IPs {
		if ip.Interface != nil && *ip.Interface != own && own >= 0 {
			continue
		}
		if a, ok := netip.AddrFromSlice(ip.Address.IP); ok {
			ips = append(ips, a.Unmap())
		}
	}
	return ips, mac
}

// TakenError is an address or MAC a pod asks for that another interface has, or asks for,
// on the same segment.
type TakenError struct {
	Addr   netip.Addr       // the address; invalid when it is the MAC
	MAC    net.HardwareAddr // the MAC; nil when it is an address
	Asking Claim
	Holder Claim
}

func (e *TakenError) Error() string {
	return fmt.Sprintf("%s on %s is taken by %s", e.what(), e.Asking.Segment, e.Holder.where())
}

func (e *TakenError) what() string {
	if e.MAC != nil {
		return "MAC " + e.MAC.String()
	}
	return "address " + e.Addr.String()
}

// Taken returns, for the first address or MAC of asked that a claim of held on the same
// segment has (or that two claims of asked share), an *Error naming the pod, the network and
// what it asked for, wrapping a *TakenError naming the holder. Claims of the asking pod itself
// in held (an earlier sandbox of it) are not another's. nil: nothing asked for is taken.
func Taken(asked []Claim, held []Claim) error {
	type key struct {
		seg  Segment
		addr netip.Addr
		mac  string
	}
	want := map[key]Claim{}
	for _, a := range asked {
		keys := make([]key, 0, len(a.IPs)+1)
		for _, ip := range a.IPs {
			keys = append(keys, key{seg: a.Segment, addr: ip})
		}
		if a.MAC != nil {
			keys = append(keys, key{seg: a.Segment, mac: a.MAC.String()})
		}
		for _, k := range keys {
			if prev, dup := want[k]; dup && prev.Ifname != a.Ifname {
				var mac net.HardwareAddr
				if k.mac != "" {
					mac = a.MAC
				}
				return takenError(a, prev, k.addr, mac)
			}
			want[k] = a
		}
	}
	for _, h := range held {
		for _, ip := range h.IPs {
			if a, ok := want[key{seg: h.Segment, addr: ip}]; ok && !samePod(a, h) {
				return takenError(a, h, ip, nil)
			}
		}
		if h.MAC == nil {
			continue
		}
		if a, ok := want[key{seg: h.Segment, mac: h.MAC.String()}]; ok && !samePod(a, h) {
			return takenError(a, h, netip.Addr{}, h.MAC)
		}
	}
	return nil
}

func samePod(a, b Claim) bool {
	if a.UID != "" && b.UID != "" {
		return a.UID == b.UID
	}
	return a.Pod == b.Pod
}

func takenError(asking, holder Claim, addr netip.Addr, mac net.HardwareAddr) error {
	te := &TakenError{Asking: asking, Holder: holder, Addr: addr, MAC: mac}
	key, what := `"ips"`, "an address"
	if mac != nil {
		te.Addr, key, what = netip.Addr{}, `"mac"`, "a MAC"
	}
	return &Error{Pod: asking.Pod, Network: asking.Network, Err: te,
		Problem: fmt.Sprintf("%s asks for %s, which %s has on the same link layer (%s)", key, te.what(), holder.where(), asking.Segment),
		Fix:     fmt.Sprintf("ask for %s no interface on %s has, or leave %s out to let the network choose", what, asking.Segment, key)}
}
