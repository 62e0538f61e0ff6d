package e2e

import (
	"fmt"
	"testing"
)

// The escape suite on a secondary attachment whose pods share a link layer: every pair of
// pods tried with every kind of traffic, then forged frames from a packet socket.

const (
	etherExperimental = "0x88b5" // IEEE 802 local experimental ethertype 1
	etherIPv4         = "0x0800"
	etherARP          = "0x0806"
	etherIPv6         = "0x86dd"
	// madeUpMAC is a locally administered address no pod has.
	madeUpMAC = "0a:58:0e:5c:00:99"
)

// testL2 tries pod pairs on network n (same tenant: controls; two tenants, or a tenant and
// the platform: attempts), then forged sources.
func (x *escapeEnv) testL2(t *testing.T, n *l2net) {
	t.Logf("%s: %s", n.key, n.about)
	pairs := [][2]string{{"a1", "a2"}, {"a1", "a3"}, {"b1", "b2"}, {"a1", "b1"}, {"b1", "a1"}, {"a1", "p1"}, {"p1", "a1"}, {"a1", "b2"}, {"b2", "a1"}}
	var probes []probe
	for _, pr := range pairs {
		if _, ok := n.refs[pr[0]]; !ok {
			continue
		}
		if _, ok := n.refs[pr[1]]; !ok {
			continue
		}
		from, to := x.podNamed(pr[0]), x.podNamed(pr[1])
		probes = append(probes, x.pairProbes(n, from, to, allowedOn(false, from, to))...)
	}
	probes = append(probes, x.forgedProbes(n)...)
	x.runProbes(t, probes)
}

// pairProbes are IPv4 and IPv6 (global, link-local, multicast) ICMP, TCP and UDP, an ARP
// request and frames of another ethertype from one pod to another on n.
func (x *escapeEnv) pairProbes(n *l2net, from, to *escPod, allowed bool) []probe {
	fi, di := from.ifs[n.key], to.ifs[n.key]
	ll := di.ll + "%" + n.key
	tx, rx := side{pod: from}, side{pod: to}
	var out []probe
	add := func(kind string, run func() (bool, error)) {
		out = append(out, probe{what: fmt.Sprintf("%s %s → %s on %s", kind, from.name, to.name, n.key), control: allowed, run: run})
	}
	add("ICMPv4 echo", x.ping(from, di.v4))
	add("ICMPv6 echo", x.ping(from, di.v6))
	add("ICMPv6 echo to the link-local address", x.ping(from, ll))
	for _, proto := range []string{"tcp", "udp"} {
		add(proto+" over IPv4", x.socket(proto, from, to, di.v4))
		add(proto+" over IPv6", x.socket(proto, from, to, di.v6))
		add(proto+" over IPv6 link-local", x.socket(proto, from, to, ll))
	}
	add("udp to IPv6 multicast ff02::1 (the server listens on every interface of the receiver)", x.socket("udp", from, to, "ff02::1%"+n.key))
	add("ARP request", x.frame(tx, rx, n.key, etherARP, "arp", "--if", n.key, "--op", "request", "--sender-ip", fi.v4, "--target-ip", di.v4))
	add("ethertype 0x88b5 broadcast frame", x.frame(tx, rx, n.key, etherExperimental, "frame", "--if", n.key))
	add("ethertype 0x88b5 unicast frame", x.frame(tx, rx, n.key, etherExperimental, "frame", "--if", n.key, "--dst-mac", di.mac))
	return out
}

// forgedProbes send, from a packet socket in a1, frames with sources a1 was not given to a2
// of its own tenant (which takes a1's honest frames, the controls), and, where b1 and b2 are
// on n, datagrams and ARP replies "from" b1 to b2, the way issue 11 found them delivered.
func (x *escapeEnv) forgedProbes(n *l2net) []probe {
	a1, a2 := x.podNamed("a1"), x.podNamed("a2")
	f, d := a1.ifs[n.key], a2.ifs[n.key]
	// victim is whose addresses a1 claims: b1's where it is on n, else made-up ones.
	victim := &podIf{mac: madeUpMAC, v4: fmt.Sprintf("192.168.%d.99", n.n), v6: fmt.Sprintf("fd00:%d::99", n.n), ll: "fe80::858:eff:fe5c:99"}
	victimName := "an address no pod has"
	if _, ok := n.refs["b1"]; ok {
		victim, victimName = x.podNamed("b1").ifs[n.key], "b1's"
	}
	tx, rx := side{pod: a1}, side{pod: a2}
	var out []probe
	add := func(control bool, what string, run func() (bool, error)) {
		out = append(out, probe{what: what + " on " + n.key, control: control, run: run})
	}
	to := func(ethertype string, send ...string) func() (bool, error) {
		return x.frame(tx, rx, n.key, ethertype, append(send, "--if", n.key, "--dst-mac", d.mac)...)
	}
	add(true, "honest frame a1 → a2", to(etherExperimental, "frame"))
	add(false, "frame a1 → a2 from made-up source MAC "+madeUpMAC, to(etherExperimental, "frame", "--src-mac", madeUpMAC))
	add(false, "frame a1 → a2 from "+victimName+" source MAC", to(etherExperimental, "frame", "--src-mac", victim.mac))
	add(true, "honest raw IPv4 UDP a1 → a2", to(etherIPv4, "udp", "--src", f.v4, "--dst", d.v4))
	add(false, "raw IPv4 UDP a1 → a2 from "+victimName+" IPv4 address", to(etherIPv4, "udp", "--src", victim.v4, "--dst", d.v4))
	add(false, "raw IPv4 UDP a1 → a2 from "+victimName+" IPv4 address, the socket claiming ethertype 0x88b5",
		to(etherIPv4, "udp", "--src", victim.v4, "--dst", d.v4, "--claim", etherExperimental))
	add(true, "honest raw IPv6 UDP a1 → a2", to(etherIPv6, "udp", "--src", f.v6, "--dst", d.v6))
	add(false, "raw IPv6 UDP a1 → a2 from "+victimName+" IPv6 address", to(etherIPv6, "udp", "--src", victim.v6, "--dst", d.v6))
	add(true, "honest raw link-local IPv6 UDP a1 → a2", to(etherIPv6, "udp", "--src", f.ll, "--dst", d.ll))
	add(false, "raw link-local IPv6 UDP a1 → a2 from "+victimName+" link-local address", to(etherIPv6, "udp", "--src", victim.ll, "--dst", d.ll))
	add(true, "honest ARP reply a1 → a2", to(etherARP, "arp", "--op", "reply", "--sender-ip", f.v4, "--target-ip", d.v4, "--target-mac", d.mac))
	add(false, "ARP reply a1 → a2 claiming "+victimName+" IPv4 address", to(etherARP, "arp", "--op", "reply", "--sender-ip", victim.v4, "--target-ip", d.v4, "--target-mac", d.mac))
	add(false, "ARP reply a1 → a2 with "+victimName+" sender MAC", to(etherARP, "arp", "--op", "reply", "--sender-ip", f.v4, "--sender-mac", victim.mac, "--target-ip", d.v4, "--target-mac", d.mac))
	add(true, "honest neighbour advertisement a1 → a2", to(etherIPv6, "na", "--src", f.ll, "--dst", d.ll, "--target", f.v6))
	add(false, "neighbour advertisement a1 → a2 for "+victimName+" IPv6 address", to(etherIPv6, "na", "--src", f.ll, "--dst", d.ll, "--target", victim.v6))
	add(false, "neighbour advertisement a1 → all nodes for "+victimName+" IPv6 address",
		x.frame(tx, rx, n.key, etherIPv6, "na", "--if", n.key, "--dst-mac", "33:33:00:00:00:01", "--src", f.ll, "--dst", "ff02::1", "--target", victim.v6))

	// Issue 11's finding: a1 makes b2 take datagrams "from" b1, and b2 send b1's traffic to a1.
	_, hasB1 := n.refs["b1"]
	_, hasB2 := n.refs["b2"]
	if !hasB1 || !hasB2 {
		return out
	}
	b1, b2 := x.podNamed("b1"), x.podNamed("b2")
	bf, bd := b1.ifs[n.key], b2.ifs[n.key]
	toB2 := func(from *escPod, ethertype string, send ...string) func() (bool, error) {
		return x.frame(side{pod: from}, side{pod: b2}, n.key, ethertype, append(send, "--if", n.key, "--dst-mac", bd.mac)...)
	}
	add(true, "honest raw IPv4 UDP b1 → b2", toB2(b1, etherIPv4, "udp", "--src", bf.v4, "--dst", bd.v4))
	add(false, "raw IPv4 UDP a1 → b2 from b1's IPv4 address", toB2(a1, etherIPv4, "udp", "--src", bf.v4, "--dst", bd.v4))
	add(false, "raw IPv6 UDP a1 → b2 from b1's IPv6 address", toB2(a1, etherIPv6, "udp", "--src", bf.v6, "--dst", bd.v6))
	add(true, "honest gratuitous ARP reply b1 → b2", toB2(b1, etherARP, "arp", "--op", "reply", "--sender-ip", bf.v4, "--target-ip", bf.v4))
	add(false, "gratuitous ARP reply a1 → b2 claiming b1's IPv4 address", toB2(a1, etherARP, "arp", "--op", "reply", "--sender-ip", bf.v4, "--target-ip", bf.v4))
	return out
}
