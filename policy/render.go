package policy

// Rendering turns one compiled Table into the nftables table that enforces it.
//
// Design notes
//
// One table, "inet loom", per enforcement point. On the node (HostTable) it holds the rules
// of the local pods' primary endpoints, matched on the host side of their veths in the
// forward hook; inside a pod's network namespace (PodTable) those of its secondary
// interfaces, in the input and output hooks. Each endpoint gets two chains, eg_<ifname> and
// in_<ifname>, reached through two verdict maps keyed by interface name, so the base chains
// never grow with the number of pods and a packet costs one map lookup to find its rules.
//
// Addresses are matched through named sets, never listed in rules: each AddrSet becomes a
// hash set of addresses (<S>_a) and an interval set of prefixes (<S>_n), both rendered even
// when empty, so a pod joining or leaving a tenant or a selector changes set elements only
// and never rewrites a chain. IPv6 members, if a set has any, go into two more sets
// (<S>_a6, <S>_n6) matched by ip6 rules of their own.
//
// On the node, a packet from a local pod passes the sender's egress chain, which ends in
// "goto to_pod", and then, if it is going to a local pod, the receiver's ingress chain: a
// pod-to-pod packet on one node is checked at both ends, as it would be across nodes. A pod
// veth ("loom" + 11 hex digits) with no rules yet is dropped in both directions, so a pod
// whose ADD has not written its rules sends and receives nothing. The VXLAN device,
// "loom.vxlan", is not a pod. Replies of established connections pass before any rule.
//
// Whatever the Table holds that nftables cannot express (an unknown protocol, a port range
// that ends before it starts, an interface name no link can have) is left out in the
// direction that allows less: a rule with no usable port or peer is dropped whole rather
// than widened to every port or peer, and a set a rule names but the Table lacks is
// rendered empty.

import (
	"fmt"
	"slices"
	"strings"
)

// TableKind says where a rendered table is enforced.
type TableKind int

const (
	// HostTable is the node's table: the primary endpoints of its pods, enforced in the
	// forward hook on the host side of their veths.
	HostTable TableKind = iota
	// PodTable is a pod's table: its secondary endpoints, enforced inside its network
	// namespace in the input and output hooks.
	PodTable
)

// NftTable is a rendered "inet loom" table, what an Applier writes. Sets, maps and chains
// are sorted by name, set elements by address and map elements by key, so two renderings of
// the same Table are equal element for element.
type NftTable struct {
	// Family is the table's address family: "" (inet) for the rules of network addresses,
	// "netdev" for the link rules of a pod's interfaces (RenderLinks).
	Family string
	Sets   []NftSet
	Maps   []NftMap
	Chains []NftChain
}

// ref is how nft commands name the table: "inet loom" or "netdev loom".
func (t NftTable) ref() string { return tableRef(t.Family) }

func tableRef(family string) string {
	if family == "" {
		family = nftFamily
	}
	return family + " " + nftTableName
}

// NftSet is a named set of addresses (Type ipv4_addr, ipv6_addr or ether_addr); an Interval set holds
// prefixes that never overlap.
type NftSet struct {
	Name     string
	Type     string
	Interval bool
	Elements []string
}

// NftMap is a verdict map from interface name to the chain that holds its rules.
type NftMap struct {
	Name     string
	Elements []NftMapElement
}

// NftMapElement maps one interface name (Key) to a verdict such as "goto eg_net1".
type NftMapElement struct {
	Key     string
	Verdict string
}

// NftChain is a chain and its rules in nft syntax. Base is the hook declaration of a base
// chain ("type filter hook forward priority filter; policy accept;"), empty for a regular
// chain.
type NftChain struct {
	Name  string
	Base  string
	Rules []string
}

// The table every enforcement point uses, and the names rendering gives its fixed parts.
const (
	nftFamily    = "inet"
	nftTableName = "loom"
	nftTableRef  = nftFamily + " " + nftTableName

	nftEgressMap  = "egress"
	nftIngressMap = "ingress"
	nftToPodChain = "to_pod"

	// nftPodVeths matches the host side of every pod's veth; nftVXLANDevice matches it too
	// but is the node's VTEP.
	nftPodVeths    = "loom*"
	nftVXLANDevice = "loom.vxlan"

	nftMaxComment = 128 // NFTNL_UDATA_COMMENT_MAXLEN
	nftMaxIfname  = 15  // IFNAMSIZ - 1
)

// Render renders a compiled Table as the nftables table that enforces it at kind's
// enforcement point. It is a pure function of its arguments.
func Render(t Table, kind TableKind) NftTable {
	return render(t, kind, nil)
}

// SetCache remembers the nftables elements of every set it rendered last time, so that
// rendering a table again after a small change formats only the sets that changed. The
// engine keeps one per enforcement point; rendering with it gives what Render gives.
type SetCache struct {
	sets map[string]cachedSet
}

type cachedSet struct {
	set                AddrSet
	v4a, v4n, v6a, v6n []string
}

// Render is Render with the cache.
func (c *SetCache) Render(t Table, kind TableKind) NftTable {
	return render(t, kind, c)
}

// split is splitAddrSet, answered from the cache when the set did not change.
func (c *SetCache) split(name string, s AddrSet, next map[string]cachedSet) (v4a, v4n, v6a, v6n []string) {
	if e, ok := c.sets[name]; ok && slices.Equal(e.set.Addrs, s.Addrs) && slices.Equal(e.set.Prefixes, s.Prefixes) {
		next[name] = e
		return e.v4a, e.v4n, e.v6a, e.v6n
	}
	v4a, v4n, v6a, v6n = splitAddrSet(s)
	next[name] = cachedSet{set: s, v4a: v4a, v4n: v4n, v6a: v6a, v6n: v6n}
	return v4a, v4n, v6a, v6n
}

func render(t Table, kind TableKind, cache *SetCache) NftTable {
	r := newRenderer(t, kind)
	out := NftTable{Sets: r.renderSets(t, cache)}

	eg := NftMap{Name: nftEgressMap}
	in := NftMap{Name: nftIngressMap}
	var chains []NftChain
	seen := map[string]bool{}
	for _, ep := range t.Endpoints {
		if !renderableIfname(ep.Interface) || seen[ep.Interface] {
			continue
		}
		seen[ep.Interface] = true
		egName, inName := endpointChainNames(ep.Interface)
		eg.Elements = append(eg.Elements, NftMapElement{Key: ep.Interface, Verdict: "goto " + egName})
		in.Elements = append(in.Elements, NftMapElement{Key: ep.Interface, Verdict: "goto " + inName})
		chains = append(chains,
			NftChain{Name: egName, Rules: r.direction(ep.Egress, "daddr", r.egressAllow)},
			NftChain{Name: inName, Rules: r.direction(ep.Ingress, "saddr", "accept")})
	}
	for _, m := range []*NftMap{&eg, &in} {
		slices.SortFunc(m.Elements, func(a, b NftMapElement) int { return strings.Compare(a.Key, b.Key) })
	}
	out.Maps = []NftMap{eg, in}
	out.Chains = append(nftBaseChains(kind, tracks(t)), chains...)
	slices.SortFunc(out.Chains, func(a, b NftChain) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// tracks reports whether any endpoint of t has rules that drop: only then do replies need
// connection tracking to get back.
func tracks(t Table) bool {
	for _, ep := range t.Endpoints {
		for _, d := range []Direction{ep.Ingress, ep.Egress} {
			if d.Guard.Universe != "" || d.Isolated {
				return true
			}
		}
	}
	return false
}

// nftBaseChains are the chains of kind that hooks call: they hand each packet to the chains of
// the endpoint it leaves or enters.
//
// Letting established traffic back needs connection tracking, which costs every packet of
// the namespace something once any rule asks for it. A table none of whose endpoints has a
// guard or a policy drops nothing that a reply could hit, so it leaves tracking off.
//
// Going further, such a table is not hooked at all: its chains wait, unattached, for the
// first endpoint with rules, so that a node without tenants or policies puts nothing in the
// way of its packets.
func nftBaseChains(kind TableKind, stateful bool) []NftChain {
	var established []string
	hook := func(string) string { return "" }
	if stateful {
		established = []string{"ct state established,related accept"}
		hook = func(h string) string { return "type filter hook " + h + " priority filter; policy accept;" }
	}
	if kind == PodTable {
		return []NftChain{
			{Name: "input", Base: hook("input"),
				Rules: append(slices.Clone(established), "iifname vmap @"+nftIngressMap)},
			{Name: "output", Base: hook("output"),
				Rules: append(slices.Clone(established), "oifname vmap @"+nftEgressMap)},
		}
	}
	return []NftChain{
		{Name: "forward", Base: hook("forward"),
			Rules: append(established,
				"iifname vmap @"+nftEgressMap,
				fmt.Sprintf("iifname %q iifname != %q drop", nftPodVeths, nftVXLANDevice),
				"goto "+nftToPodChain,
			)},
		{Name: nftToPodChain, Rules: []string{
			"oifname vmap @" + nftIngressMap,
			fmt.Sprintf("oifname %q oifname != %q drop", nftPodVeths, nftVXLANDevice),
		}},
	}
}

// renderer holds what rendering one Table needs across its endpoints: the nft name of each
// set the Table has or names, and whether it has IPv6 members.
type renderer struct {
	egressAllow string // what an allowed packet leaving an endpoint does
	sets        map[string]nftSetNames
}

type nftSetNames struct {
	base string
	v6   bool
}

func newRenderer(t Table, kind TableKind) *renderer {
	r := &renderer{egressAllow: "accept", sets: map[string]nftSetNames{}}
	if kind == HostTable {
		// On the node the packet must still pass the receiving pod's ingress chain.
		r.egressAllow = "goto " + nftToPodChain
	}
	add := func(name string) {
		if name == "" {
			return
		}
		if _, ok := r.sets[name]; ok {
			return
		}
		s := t.Sets[name]
		r.sets[name] = nftSetNames{base: nftSetBase(name), v6: setHasV6(s)}
	}
	for name := range t.Sets {
		add(name)
	}
	for _, ep := range t.Endpoints {
		for _, d := range []Direction{ep.Ingress, ep.Egress} {
			add(d.Guard.Universe)
			add(d.Guard.Allowed)
			for _, rule := range d.Rules {
				add(rule.Peer.Set)
			}
		}
	}
	return r
}

// renderSets renders every set the Table has or names, sorted by nft name.
func (r *renderer) renderSets(t Table, cache *SetCache) []NftSet {
	var out []NftSet
	next := map[string]cachedSet{}
	for name, n := range r.sets {
		s := t.Sets[name]
		var v4a, v4n, v6a, v6n []string
		if cache != nil {
			v4a, v4n, v6a, v6n = cache.split(name, s, next)
		} else {
			v4a, v4n, v6a, v6n = splitAddrSet(s)
		}
		out = append(out,
			NftSet{Name: n.base + "_a", Type: "ipv4_addr", Elements: v4a},
			NftSet{Name: n.base + "_n", Type: "ipv4_addr", Interval: true, Elements: v4n})
		if n.v6 {
			out = append(out,
				NftSet{Name: n.base + "_a6", Type: "ipv6_addr", Elements: v6a},
				NftSet{Name: n.base + "_n6", Type: "ipv6_addr", Interval: true, Elements: v6n})
		}
	}
	if cache != nil {
		cache.sets = next
	}
	slices.SortFunc(out, func(a, b NftSet) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// nftSetRef is one nft set of an AddrSet, with the address family its elements belong to.
type nftSetRef struct {
	family string // ip or ip6
	name   string
}

// parts lists the nft sets that hold the members of the AddrSet name.
func (r *renderer) parts(name string) []nftSetRef {
	n, ok := r.sets[name]
	if !ok {
		return nil
	}
	refs := []nftSetRef{{"ip", n.base + "_a"}, {"ip", n.base + "_n"}}
	if n.v6 {
		refs = append(refs, nftSetRef{"ip6", n.base + "_a6"}, nftSetRef{"ip6", n.base + "_n6"})
	}
	return refs
}
