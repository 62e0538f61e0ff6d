package policy

// Rendering a pod's link rules: the "netdev loom" table.
//
// Design notes
//
// The "inet loom" table sees IPv4 and IPv6 packets only, after the kernel has taken them
// from the link: ARP, frames of any other ethertype and IPv6 link-local traffic between
// pods that share a link layer (macvlan on one master, a bridge, the VFs of one PF) never
// meet its rules. So every interface of a pod also gets two base chains in a table of the
// netdev family, hooked on the interface itself, which see every frame the interface sends
// or receives, whatever it carries:
//
//   - l2eg_<ifname>, on egress, keeps the pod honest: a frame from another hardware address,
//     an ARP message whose sender is another hardware or IPv4 address, an IPv4 or IPv6
//     packet from an address the pod was not given, and a neighbour advertisement for a
//     target the pod was not given are dropped. Frames sent from a packet socket pass the
//     same hook. A DHCP client's request from 0.0.0.0, ARP probes from 0.0.0.0 and IPv6
//     duplicate address detection from :: pass. On the primary network, which the node
//     routes, nothing but IPv4, IPv6 and ARP is sent at all.
//   - on a secondary network, the tenant guard's sets hold the pods' hardware addresses
//     too (<S>_m): egress drops unicast frames to a pod the guard keeps out, and
//     l2in_<ifname>, on ingress, drops every frame from one, so that neither ARP, nor
//     neighbour discovery, nor a raw frame crosses a tenant boundary.
//
// The rules live in the pod's network namespace, where they die with it, and a pod without
// CAP_NET_ADMIN (Tenants refuse it unless allowNetAdmin) cannot change them. The frames of
// a pod whose hardware address is not known yet (its network-status is not written) are
// kept apart by the "inet loom" guard's network addresses alone until it is.
//
// nftables 1.0 has no name for a neighbour advertisement's target address: it is matched
// as the 128 bits at offset 8 of the ICMPv6 header. Link-layer fields are matched as raw
// payload (see llSource), and hardware addresses as 48-bit numbers.

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

const (
	nftLinkFamily   = "netdev"
	nftLinkTableRef = nftLinkFamily + " " + nftTableName
)

// RenderLinks renders the link rules of a pod's Table as the "netdev loom" table that
// enforces them on its interfaces. A Table without links renders to an empty table.
func RenderLinks(t Table) NftTable {
	out := NftTable{Family: nftLinkFamily}
	sets := map[string]bool{}
	for _, l := range t.Links {
		if !renderableIfname(l.Interface) {
			continue
		}
		eg, in := linkChainNames(l.Interface)
		egress := NftChain{Name: eg, Base: linkHook("egress", l.Interface), Rules: linkEgressRules(l)}
		ingress := NftChain{Name: in, Base: linkHook("ingress", l.Interface)}
		if g := l.Guard; g.Universe != "" {
			u, a := nftSetBase(g.Universe)+"_m", nftSetBase(g.Allowed)+"_m"
			sets[g.Universe], sets[g.Allowed] = true, true
			egress.Rules = append(egress.Rules, fmt.Sprintf("%s @%s %s != @%s drop", llDest, u, llDest, a))
			ingress.Rules = append(ingress.Rules, fmt.Sprintf("%s @%s %s != @%s drop", llSource, u, llSource, a))
		}
		out.Chains = append(out.Chains, egress)
		if len(ingress.Rules) > 0 {
			out.Chains = append(out.Chains, ingress) // an empty hook would cost every frame a call
		}
	}
	for name := range sets {
		s := t.Sets[name]
		elems := make([]string, len(s.MACs))
		for i, m := range s.MACs {
			elems[i] = nftMAC(m)
		}
		out.Sets = append(out.Sets, NftSet{Name: nftSetBase(name) + "_m", Type: nftMACSetType, Elements: elems})
	}
	slices.SortFunc(out.Sets, func(a, b NftSet) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(out.Chains, func(a, b NftChain) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// linkEgressRules are the anti-spoofing rules of one interface.
func linkEgressRules(l LinkRules) []string {
	var rules []string
	var v4, v6 []netip.Addr
	linkLocal := false
	for _, a := range l.Sources {
		switch a = a.Unmap(); {
		case a.Is4():
			v4 = append(v4, a)
		default:
			v6 = append(v6, a)
			linkLocal = linkLocal || a.IsLinkLocalUnicast()
		}
	}
	if !l.MAC.IsZero() {
		rules = append(rules, llSource+" != "+nftMAC(l.MAC)+" drop")
	}
	// The frame's own ethertype decides, never the protocol a packet socket claims for
	// it: a frame whose claim differs is dropped, so that the IPv4 and IPv6 rules below,
	// which nftables applies by the claim, see every IP packet.
	rules = append(rules,
		llType+" { 0x8100, 0x88a8 } drop",
		llType+" 0x0800 meta protocol != ip drop",
		llType+" 0x86dd meta protocol != ip6 drop")
	if l.Routed {
		rules = append(rules, llType+" != { 0x0800, 0x86dd, 0x0806 } drop")
	}
	if !l.MAC.IsZero() {
		rules = append(rules, llType+" 0x0806 @nh,64,48 != "+nftMAC(l.MAC)+" drop") // sender hardware address
	}
	// ARP probes and DHCP requests come from 0.0.0.0, duplicate address detection from ::.
	arpSenders := []string{"0x0"}
	for _, a := range v4 {
		b := a.As4()
		arpSenders = append(arpSenders, fmt.Sprintf("0x%x", b[:]))
	}
	rules = append(rules,
		llType+" 0x0806 @nh,112,32 != "+nftAnon(arpSenders)+" drop", // sender protocol address
		"meta protocol ip ip saddr 0.0.0.0 udp sport 68 udp dport 67 accept")
	if len(v4) == 0 {
		rules = append(rules, "meta protocol ip drop")
	} else {
		rules = append(rules, "meta protocol ip ip saddr != "+nftAnon(nftAddrs(v4))+" drop")
	}
	src6 := append([]string{"::"}, nftAddrs(v6)...)
	if !linkLocal {
		src6 = append(src6, "fe80::/10")
	}
	rules = append(rules, "meta protocol ip6 ip6 saddr != "+nftAnon(src6)+" drop")
	na := "meta protocol ip6 meta l4proto ipv6-icmp icmpv6 type nd-neighbor-advert"
	if !linkLocal {
		na += " @th,64,10 != 0x3fa" // any link-local target: fe80::/10
	}
	if len(v6) == 0 {
		rules = append(rules, na+" drop")
	} else {
		targets := make([]string, len(v6))
		for i, a := range v6 {
			b := a.As16()
			targets[i] = fmt.Sprintf("0x%x", b[:])
		}
		rules = append(rules, na+" @th,64,128 != "+nftAnon(targets)+" drop")
	}
	return rules
}

// Link-layer fields as raw payload: the "ether" expressions of nftables 1.0 depend on the
// input interface's type, which a frame on the egress hook has none of, and never match
// there.
const (
	llDest   = "@ll,0,48"
	llSource = "@ll,48,48"
	llType   = "@ll,96,16"
	// nftMACSetType declares a set of hardware addresses as llDest and llSource read them.
	nftMACSetType = "typeof " + llDest
)

// nftMAC writes a hardware address as the 48-bit number raw payload matches compare with.
func nftMAC(m MAC) string { return fmt.Sprintf("0x%x", m[:]) }

// nftAnon writes elements as an anonymous set.
func nftAnon(elems []string) string { return "{ " + strings.Join(elems, ", ") + " }" }

// linkHook is the hook declaration of an interface's link chain.
func linkHook(hook, ifname string) string {
	return fmt.Sprintf("type filter hook %s device %q priority filter; policy accept;", hook, ifname)
}

// linkChainNames names the egress and ingress link chains of an interface.
func linkChainNames(ifname string) (eg, in string) {
	n := nftIdentifier(ifname)
	return "l2eg_" + n, "l2in_" + n
}
