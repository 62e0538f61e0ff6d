package policy

import "net/netip"

// Packet is what a decision looks at: the other side's address, the protocol ("TCP", "UDP",
// "SCTP", or "ICMP" and anything else without ports) and the destination port.
type Packet struct {
	Peer     netip.Addr
	Protocol string
	Port     uint16
}

// Allows says what the compiled rules of one direction do with a new connection: the
// rendered nftables rules must decide the same, which is what `loomctl connectivity` and the
// end-to-end tests check with real packets.
func (t Table) Allows(d Direction, p Packet) bool {
	if d.Guard.Universe != "" && t.contains(d.Guard.Universe, p.Peer) && !t.contains(d.Guard.Allowed, p.Peer) {
		return false
	}
	if !d.Isolated {
		return true
	}
	for _, r := range d.Rules {
		if t.matches(r, p) {
			return true
		}
	}
	return false
}

func (t Table) matches(r Rule, p Packet) bool {
	switch {
	case r.Peer.Any:
	case r.Peer.Set != "":
		if !t.contains(r.Peer.Set, p.Peer) {
			return false
		}
	default:
		if !r.Peer.CIDR.Contains(p.Peer) {
			return false
		}
		for _, e := range r.Peer.Except {
			if e.Contains(p.Peer) {
				return false
			}
		}
	}
	if len(r.Ports) == 0 {
		return true
	}
	for _, port := range r.Ports {
		if port.Protocol != p.Protocol {
			continue
		}
		end := port.EndPort
		if end == 0 {
			end = port.Port
		}
		if port.Port == 0 || (p.Port >= port.Port && p.Port <= end) {
			return true
		}
	}
	return false
}

func (t Table) contains(set string, a netip.Addr) bool {
	s, ok := t.Sets[set]
	if !ok {
		return false
	}
	for _, x := range s.Addrs {
		if x == a {
			return true
		}
	}
	for _, pfx := range s.Prefixes {
		if pfx.Contains(a) {
			return true
		}
	}
	return false
}

// Endpoint returns the rules of the endpoint on interface iface, if the table has them.
func (t Table) Endpoint(iface string) (EndpointRules, bool) {
	for _, e := range t.Endpoints {
		if e.Interface == iface {
			return e, true
		}
	}
	return EndpointRules{}, false
}

// Oracle answers, for any two pods of a snapshot, whether the policy lets one open a
// connection to the other on a network: the sender's egress rules and the receiver's
// ingress rules, compiled for their nodes, must both allow it.
type Oracle struct {
	pods  map[PodKey]Pod
	rules map[string]Ruleset // by node
}

// NewOracle compiles s for every node that has pods. Primary endpoints without a host
// interface (pods seen from outside their node) get a stand-in name.
func NewOracle(s Snapshot) *Oracle {
	o := &Oracle{pods: map[PodKey]Pod{}, rules: map[string]Ruleset{}}
	pods := make([]Pod, len(s.Pods))
	for i, p := range s.Pods {
		p.Endpoints = append([]Endpoint(nil), p.Endpoints...)
		for j := range p.Endpoints {
			if p.Endpoints[j].Network == Primary && p.Endpoints[j].HostInterface == "" {
				p.Endpoints[j].HostInterface = "pod:" + p.PodKey.String()
			}
		}
		pods[i] = p
		o.pods[p.PodKey] = p
	}
	s.Pods = pods
	for _, p := range pods {
		if _, done := o.rules[p.Node]; !done && p.Node != "" {
			o.rules[p.Node] = Compile(s, p.Node)
		}
	}
	return o
}

// Allows says whether from may open a connection to to's address on network.
func (o *Oracle) Allows(from, to PodKey, network NetworkID, protocol string, port uint16) bool {
	src, ok1 := o.pods[from]
	dst, ok2 := o.pods[to]
	if !ok1 || !ok2 {
		return false
	}
	srcEP, ok1 := endpointOn(src, network)
	dstEP, ok2 := endpointOn(dst, network)
	if !ok1 || !ok2 || len(srcEP.IPs) == 0 || len(dstEP.IPs) == 0 {
		return false
	}
	egress, ok1 := o.rulesOf(src, srcEP)
	ingress, ok2 := o.rulesOf(dst, dstEP)
	out := Packet{Peer: dstEP.IPs[0], Protocol: protocol, Port: port}
	in := Packet{Peer: srcEP.IPs[0], Protocol: protocol, Port: port}
	return (!ok1 || egress.table.Allows(egress.rules.Egress, out)) && (!ok2 || ingress.table.Allows(ingress.rules.Ingress, in))
}

type compiled struct {
	table Table
	rules EndpointRules
}

func (o *Oracle) rulesOf(p Pod, ep Endpoint) (compiled, bool) {
	rs := o.rules[p.Node]
	t := rs.Host
	iface := ep.HostInterface
	if ep.Network != Primary {
		t = rs.Pods[p.PodKey]
		iface = ep.Interface
	}
	r, ok := t.Endpoint(iface)
	return compiled{t, r}, ok
}

func endpointOn(p Pod, network NetworkID) (Endpoint, bool) {
	for _, ep := range p.Endpoints {
		if ep.Network == network {
			return ep, true
		}
	}
	return Endpoint{}, false
}
