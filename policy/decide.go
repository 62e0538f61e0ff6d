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
// rendered nftables rules must decide the same. The property tests compare it with the
// reference evaluator policy/oracle; `loomctl connectivity` and the end-to-end tests compare
// real packets with that evaluator.
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
