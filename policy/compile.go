package policy

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
)

// Compile computes what node enforces: for every endpoint of the pods whose Node is node, the
// tenant guard and the rules of the policies that select it, with the address sets they
// name. Compile is pure and deterministic: the same snapshot, in any order, gives a
// deep-equal Ruleset. An empty node has no pods. Tables may share the memory of a set they
// both hold: treat the Ruleset as read-only.
func Compile(s Snapshot, node string) Ruleset {
	c := newCompiler(&s, node)
	var host []EndpointRules
	type podPoint struct {
		eps   []EndpointRules
		links []LinkRules
	}
	pods := map[PodKey]*podPoint{}
	for _, p := range c.local {
		for _, ep := range p.Endpoints {
			if ep.Network == Primary && ep.HostInterface != "" {
				host = append(host, c.endpoint(p, ep.Network, ep.HostInterface))
			}
			if ep.Interface == "" {
				continue
			}
			// Inside the pod: every interface's link rules, and a secondary one's rules.
			pp := pods[p.PodKey]
			if pp == nil {
				pp = &podPoint{}
				pods[p.PodKey] = pp
			}
			pp.links = append(pp.links, c.link(p, ep))
			if ep.Network != Primary {
				pp.eps = append(pp.eps, c.endpoint(p, ep.Network, ep.Interface))
			}
		}
	}
	rs := Ruleset{Host: c.table(host, nil), Pods: make(map[PodKey]Table, len(pods))}
	for key, pp := range pods {
		rs.Pods[key] = c.table(pp.eps, pp.links)
	}
	return rs
}

// link compiles the link-layer rules of local pod p's interface of endpoint ep: where on a
// secondary network pods share a link layer, the tenant guard's sets keep hardware
// addresses apart as the endpoint's rules keep network addresses apart.
func (c *compiler) link(p *Pod, ep Endpoint) LinkRules {
	lr := LinkRules{Pod: p.PodKey, Network: ep.Network, Interface: ep.Interface, Routed: ep.Network == Primary, MAC: ep.MAC}
	var b setBuilder
	b.addAddrs(ep.IPs)
	b.addAddrs(ep.LinkLocal)
	lr.Sources = b.build().Addrs
	if !lr.Routed {
		lr.Guard = c.guard(p, ep.Network)
	}
	return lr
}

// table gathers endpoints and links into one enforcement point with the sets they name.
func (c *compiler) table(eps []EndpointRules, links []LinkRules) Table {
	slices.SortFunc(eps, func(a, b EndpointRules) int {
		return cmp.Or(strings.Compare(a.Interface, b.Interface), strings.Compare(string(a.Network), string(b.Network)),
			comparePodKey(a.Pod, b.Pod))
	})
	slices.SortFunc(links, func(a, b LinkRules) int {
		return cmp.Or(strings.Compare(a.Interface, b.Interface), strings.Compare(string(a.Network), string(b.Network)))
	})
	t := Table{Sets: map[string]AddrSet{}, Endpoints: eps, Links: links}
	use := func(name string) {
		if name != "" {
			t.Sets[name] = c.sets[name]
		}
	}
	for _, l := range links {
		use(l.Guard.Universe)
		use(l.Guard.Allowed)
	}
	for _, ep := range eps {
		for _, d := range []Direction{ep.Ingress, ep.Egress} {
			use(d.Guard.Universe)
			use(d.Guard.Allowed)
			for _, r := range d.Rules {
				use(r.Peer.Set)
			}
		}
	}
	return t
}

// endpoint compiles the rules of pod p's endpoint on network n, matched on ifname.
func (c *compiler) endpoint(p *Pod, n NetworkID, ifname string) EndpointRules {
	er := EndpointRules{Pod: p.PodKey, Network: n, Interface: ifname}
	g := c.guard(p, n)
	er.Ingress.Guard, er.Egress.Guard = g, g
	for _, pol := range c.policiesByNS[p.Namespace] {
		if !pol.appliesTo(n) || !pol.v.podSelector.Matches(labels.Set(p.Labels)) {
			continue
		}
		for d, dp := range []*Direction{ingress: &er.Ingress, egress: &er.Egress} {
			if !pol.v.isolates[d] {
				continue
			}
			dp.Isolated = true
			for _, r := range pol.v.rules[d] {
				dp.Rules = append(dp.Rules, c.rules(pol, dir(d), r, p, n)...)
			}
		}
	}
	return er
}

// guard is the tenant boundary of pod p on network n. On the primary network a tenant's pod
// reaches its own tenant, its mutual peers, the platform and the nodes, and a platform pod
// has no boundary. On a secondary network a pod reaches its own tenant and its mutual peers
// only; the platform's pods there reach only one another.
//
// Which secondary networks share a link layer Loom cannot know: two NADs may name one
// macvlan master, VFs of two pools may hang off one PF, host devices may be cabled to one
// switch. So the boundary on a secondary network is drawn over all of them at once: its
// universe is every pod's addresses and hardware addresses on any secondary network (and
// every secondary network's subnets), and what a tenant reaches is its and its mutual peers'
// pods on any of them. Between two pods of one network this decides as a per-network
// boundary would; a pod of another network that shares the link layer is kept out all the
// same. A platform pod has no boundary while no tenant's pod is on any secondary network:
// there is no one to keep out, and its peers need not be known before it can reach them.
func (c *compiler) guard(p *Pod, n NetworkID) Guard {
	if n == Primary {
		if p.Tenant == "" {
			return Guard{}
		}
		return Guard{Universe: c.universe(Primary), Allowed: c.reach(Primary, p.Tenant)}
	}
	if p.Tenant == "" && !c.tenantsOnSecondaries() {
		return Guard{}
	}
	return Guard{Universe: c.universe(secondaries), Allowed: c.reach(secondaries, p.Tenant)}
}

// secondaries stands for every secondary network at once in the guard's sets (see guard); no
// NAD can have this name.
const secondaries NetworkID = "*"

// universe is the set of addresses on the primary network, or on any secondary one, that
// belong to pods (or, on the primary network, to nodes): the addresses a guard decides about.
func (c *compiler) universe(n NetworkID) string {
	key := guardKey{kind: kindUniverse, network: n}
	if name, ok := c.guardNames[key]; ok {
		return name
	}
	var b setBuilder
	if n == Primary {
		b.addPrefixes(c.s.ClusterCIDRs)
	} else {
		for i := range c.s.Networks {
			b.addPrefixes(c.s.Networks[i].Subnets)
		}
		for i := range c.s.Pods {
			addSecondaryMembers(&b, &c.s.Pods[i])
		}
	}
	return c.newGuardSet(key, b.build())
}

// reach is the set of addresses tenant t's pods may exchange traffic with on the primary
// network, or on the secondary networks.
func (c *compiler) reach(n NetworkID, t string) string {
	key := guardKey{kind: kindReach, network: n, tenant: t}
	if name, ok := c.guardNames[key]; ok {
		return name
	}
	var b setBuilder
	tenants := c.mutualPeers(t)
	if n == Primary {
		for _, m := range tenants {
			if tt := c.tenants[m]; tt != nil {
				b.addPrefixes(tt.Blocks)
			}
			c.podsByTenant.each(m, func(p *Pod) { addIPs(&b, p, n) })
		}
		return c.newGuardSet(key, b.build().withSorted(c.platformAndHosts()))
	}
	for _, m := range tenants {
		c.podsByTenant.each(m, func(p *Pod) { addSecondaryMembers(&b, p) })
	}
	return c.newGuardSet(key, b.build())
}

func (c *compiler) newGuardSet(key guardKey, set AddrSet) string {
	name := setName(key.kind, string(key.network), key.tenant)
	c.guardNames[key] = name
	c.sets[name] = set
	return name
}

// platformAndHosts returns the primary addresses of the platform's pods and the nodes'
// addresses: what every tenant reaches on the primary network.
func (c *compiler) platformAndHosts() []netip.Addr {
	if c.platformIPs == nil {
		var b setBuilder
		c.podsByTenant.each("", func(p *Pod) { addIPs(&b, p, Primary) })
		b.addAddrs(c.s.Hosts)
		c.platformIPs = b.build().Addrs
		if c.platformIPs == nil {
			c.platformIPs = []netip.Addr{}
		}
	}
	return c.platformIPs
}

// addSecondaryMembers adds what a guard's set on the secondary networks holds of pod p: its
// addresses and its hardware addresses on every secondary network.
func addSecondaryMembers(b *setBuilder, p *Pod) {
	for _, ep := range p.Endpoints {
		if ep.Network != Primary {
			b.addAddrs(ep.IPs)
			b.addMAC(ep.MAC)
		}
	}
}

// addIPs adds the addresses of pod p on network n.
func addIPs(b *setBuilder, p *Pod, n NetworkID) {
	for _, ep := range p.Endpoints {
		if ep.Network == n {
			b.addAddrs(ep.IPs)
		}
	}
}

// rules compiles rule r of pol, direction d, for pod p's endpoint on network n: one Rule per
// peer, and for an egress rule with named ports, one more per peer and port number the name
// resolves to.
func (c *compiler) rules(pol compiledPolicy, d dir, r validRule, p *Pod, n NetworkID) []Rule {
	peers := r.peers
	if peers == nil {
		peers = []validPeer{{index: -1}} // every peer
	}
	var out []Rule
	for _, peer := range peers {
		pv := c.peer(pol, peer, n)
		if r.ports == nil {
			out = append(out, Rule{Peer: pv, Policy: pol.key})
			continue
		}
		var fixed []Port
		var named []validPort
		for _, vp := range r.ports {
			switch {
			case vp.name == "":
				fixed = append(fixed, Port{Protocol: vp.protocol, Port: vp.port, EndPort: vp.endPort})
			case d == ingress:
				// The port is the selected pod's own.
				if num, ok := resolvePort(p, vp); ok {
					fixed = append(fixed, Port{Protocol: vp.protocol, Port: num})
				}
			default:
				named = append(named, vp)
			}
		}
		if len(fixed) > 0 {
			out = append(out, Rule{Peer: pv, Ports: sortPorts(fixed), Policy: pol.key})
		}
		// A named port is "a named port on a pod": for an ipBlock peer, that of each pod
		// whose address lies in the block, outside its excepts.
		for _, vp := range named {
			out = append(out, c.namedEgress(pol, peer, n, vp)...)
		}
	}
	return out
}

// peer is a rule's peer as a Peer: everyone, a CIDR, or the set of the selected pods'
// addresses on network n.
func (c *compiler) peer(pol compiledPolicy, peer validPeer, n NetworkID) Peer {
	switch {
	case peer.index < 0:
		return Peer{Any: true}
	case peer.cidr.IsValid():
		return Peer{CIDR: peer.cidr, Except: slices.Clone(peer.except)}
	}
	key := selectionOf(pol, peer, n)
	if name, ok := c.peerNames[key]; ok {
		return Peer{Set: name}
	}
	var b setBuilder
	c.eachPeerPod(pol, peer, func(p *Pod) { addIPs(&b, p, n) })
	name := key.setName()
	c.peerNames[key] = name
	c.sets[name] = b.build()
	return Peer{Set: name}
}

// namedEgress compiles an egress rule's named port for one peer: the destination pods are
// split by the number the name has in each of them, one set and one Rule per number, so that
// each pod is reached on its own port only. Pods without the name are not reached.
func (c *compiler) namedEgress(pol compiledPolicy, peer validPeer, n NetworkID, vp validPort) []Rule {
	key := selectionOf(pol, peer, n)
	key.port = vp
	split, ok := c.namedSplits[key]
	if !ok {
		byPort := map[uint16]*setBuilder{}
		add := func(p *Pod) {
			if num, ok := resolvePort(p, vp); ok {
				if byPort[num] == nil {
					byPort[num] = &setBuilder{}
				}
				addIPs(byPort[num], p, n)
			}
		}
		switch {
		case peer.cidr.IsValid():
			for _, p := range c.podsWithPort(vp.name) {
				if num, ok := resolvePort(p, vp); ok {
					for _, ep := range p.Endpoints {
						if ep.Network != n {
							continue
						}
						for _, a := range ep.IPs {
							if inBlock(a, peer) {
								if byPort[num] == nil {
									byPort[num] = &setBuilder{}
								}
								byPort[num].addAddrs([]netip.Addr{a})
							}
						}
					}
				}
			}
		case peer.index < 0:
			for _, p := range c.podsWithPort(vp.name) {
				add(p)
			}
		default:
			c.eachPeerPod(pol, peer, add)
		}
		for _, num := range slices.Sorted(maps.Keys(byPort)) {
			name := key.setName(strconv.Itoa(int(num)))
			c.sets[name] = byPort[num].build()
			split = append(split, portSet{port: num, set: name})
		}
		c.namedSplits[key] = split
	}
	rules := make([]Rule, 0, len(split))
	for _, ps := range split {
		rules = append(rules, Rule{Peer: Peer{Set: ps.set}, Ports: []Port{{Protocol: vp.protocol, Port: ps.port}}, Policy: pol.key})
	}
	return rules
}

// inBlock reports whether a lies in an ipBlock peer's CIDR and outside its excepts.
func inBlock(a netip.Addr, peer validPeer) bool {
	a = a.Unmap()
	if !peer.cidr.Contains(a) {
		return false
	}
	for _, e := range peer.except {
		if e.Contains(a) {
			return false
		}
	}
	return true
}

// portSet is the set of the destinations where a named port has one number.
type portSet struct {
	port uint16
	set  string
}

// resolvePort returns the number a named port has in pod p, for the port's protocol. Port
// names are unique in a pod; should a pod list one twice, the first counts.
func resolvePort(p *Pod, vp validPort) (uint16, bool) {
	for _, np := range p.Ports {
		proto := np.Protocol
		if proto == "" {
			proto = "TCP"
		}
		if np.Name == vp.name && proto == vp.protocol && np.Port != 0 {
			return np.Port, true
		}
	}
	return 0, false
}

// sortPorts sorts ports and drops repeats.
func sortPorts(ps []Port) []Port {
	slices.SortFunc(ps, func(a, b Port) int {
		return cmp.Or(strings.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Port, b.Port), cmp.Compare(a.EndPort, b.EndPort))
	})
	return slices.Compact(ps)
}

// tenantsOnSecondaries reports whether a tenant's pod has an endpoint on a secondary network.
func (c *compiler) tenantsOnSecondaries() bool {
	if c.tenantSecondary == nil {
		found := false
		for i := range c.s.Pods {
			p := &c.s.Pods[i]
			found = found || (p.Tenant != "" && slices.ContainsFunc(p.Endpoints, func(ep Endpoint) bool { return ep.Network != Primary }))
		}
		c.tenantSecondary = &found
	}
	return *c.tenantSecondary
}
