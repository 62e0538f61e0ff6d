package e2e

import (
	"net"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/loom-cni/loom/fabric"
)

// The escape suite on the primary network: routed veths, tenant rules on the node. Loom's
// primary network is IPv4 only (fabric refuses IPv6 pools), so IPv6 there is link-local
// between a pod and its node, which the probes below try to forge.

// testPrimary tries pod pairs over the primary network, across nodes too, and forged frames
// from a1's eth0 towards pods and onto the node.
func (x *escapeEnv) testPrimary(t *testing.T) {
	pairs := [][2]string{{"a1", "a2"}, {"a1", "a3"}, {"b1", "b2"}, {"a1", "b1"}, {"b1", "a1"}, {"a1", "b2"}, {"b2", "a1"},
		{"a1", "p1"}, {"p1", "a1"}, {"b2", "p1"}}
	var probes []probe
	for _, pr := range pairs {
		from, to := x.podNamed(pr[0]), x.podNamed(pr[1])
		allowed := allowedOn(true, from, to)
		add := func(kind string, run func() (bool, error)) {
			probes = append(probes, probe{what: kind + " " + from.name + " → " + to.name + " on eth0", control: allowed, run: run})
		}
		add("ICMPv4 echo", x.ping(from, to.primary))
		add("tcp over IPv4", x.socket("tcp", from, to, to.primary))
		add("udp over IPv4", x.socket("udp", from, to, to.primary))
	}
	a1, a2, a3, b1 := x.podNamed("a1"), x.podNamed("a2"), x.podNamed("a3"), x.podNamed("b1")
	gw := a1.hostVethMAC
	add := func(control bool, what string, run func() (bool, error)) {
		probes = append(probes, probe{what: what + " on eth0", control: control, run: run})
	}
	// Frames from a1's packet socket to pods, through the node.
	toPod := func(to *escPod, ethertype string, send ...string) func() (bool, error) {
		return x.frame(side{pod: a1}, side{pod: to}, "eth0", ethertype, append(send, "--if", "eth0", "--dst-mac", gw)...)
	}
	add(true, "honest raw IPv4 UDP a1 → a2", toPod(a2, etherIPv4, "udp", "--src", a1.primary, "--dst", a2.primary))
	add(false, "raw IPv4 UDP a1 → a2 from b1's address", toPod(a2, etherIPv4, "udp", "--src", b1.primary, "--dst", a2.primary))
	add(false, "raw IPv4 UDP a1 → a2 from b1's address, the socket claiming ethertype 0x88b5",
		toPod(a2, etherIPv4, "udp", "--src", b1.primary, "--dst", a2.primary, "--claim", etherExperimental))
	add(false, "raw IPv4 UDP a1 → a2 from made-up source MAC "+madeUpMAC, toPod(a2, etherIPv4, "udp", "--src", a1.primary, "--dst", a2.primary, "--src-mac", madeUpMAC))
	add(true, "honest raw IPv4 UDP a1 → a3 (node2)", toPod(a3, etherIPv4, "udp", "--src", a1.primary, "--dst", a3.primary))
	add(false, "raw IPv4 UDP a1 → a3 (node2) from a2's address", toPod(a3, etherIPv4, "udp", "--src", a2.primary, "--dst", a3.primary))
	add(false, "raw IPv4 UDP a1 → a3 (node2) from an address outside the cluster", toPod(a3, etherIPv4, "udp", "--src", "203.0.113.9", "--dst", a3.primary))
	add(false, "honest raw IPv4 UDP a1 → b1", toPod(b1, etherIPv4, "udp", "--src", a1.primary, "--dst", b1.primary))

	// Frames from a1 onto its node: heard on the node end of a1's veth.
	toNode := func(ethertype string, send ...string) func() (bool, error) {
		return x.frame(side{pod: a1}, side{node: a1.node}, a1.hostVeth, ethertype, append(send, "--if", "eth0", "--dst-mac", gw)...)
	}
	add(true, "honest ARP request a1 → node1", toNode(etherARP, "arp", "--op", "request", "--sender-ip", a1.primary, "--target-ip", a2.primary))
	add(false, "ARP request a1 → node1 claiming b1's address", toNode(etherARP, "arp", "--op", "request", "--sender-ip", b1.primary, "--target-ip", a2.primary))
	add(false, "ARP reply a1 → node1 with made-up sender MAC", toNode(etherARP, "arp", "--op", "reply", "--sender-ip", a1.primary, "--sender-mac", madeUpMAC, "--target-ip", a2.primary))
	add(false, "ethertype 0x88b5 frame a1 → node1", toNode(etherExperimental, "frame"))
	add(false, "ethertype 0x88b5 broadcast a1 → node1", x.frame(side{pod: a1}, side{node: a1.node}, a1.hostVeth, etherExperimental, "frame", "--if", "eth0"))
	add(true, "honest link-local IPv6 UDP a1 → node1", toNode(etherIPv6, "udp", "--src", a1.eth0.ll, "--dst", "ff02::1", "--dst-mac", "33:33:00:00:00:01"))
	add(false, "link-local IPv6 UDP a1 → node1 from b1's link-local address", toNode(etherIPv6, "udp", "--src", b1.eth0.ll, "--dst", "ff02::1", "--dst-mac", "33:33:00:00:00:01"))
	add(false, "IPv6 UDP a1 → node1 from a global address a1 was not given", toNode(etherIPv6, "udp", "--src", "fd00:99::11", "--dst", "ff02::1", "--dst-mac", "33:33:00:00:00:01"))
	add(false, "neighbour advertisement a1 → node1 for a global address a1 was not given",
		toNode(etherIPv6, "na", "--src", a1.eth0.ll, "--dst", "ff02::1", "--dst-mac", "33:33:00:00:00:01", "--target", "fd00:99::11"))
	x.runProbes(t, probes)
}

// testVXLAN: a pod sends its own node's, and another node's, VTEP a VXLAN packet whose inner
// frame goes to a pod of tenant a from another pod of tenant a; the same packet sent by the
// node that would send it arrives (so it is well-formed), from any pod it must not.
func (x *escapeEnv) testVXLAN(t *testing.T) {
	vtep := func(node string) string {
		n, err := x.c.Client().CoreV1().Nodes().Get(x.ctx, node, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		mac := n.Annotations[fabric.AnnotationVTEPMAC]
		if _, err = net.ParseMAC(mac); err != nil {
			t.Fatalf("node %s's VTEP MAC %q: %v", node, mac, err)
		}
		return mac
	}
	underlay := func(node string) string {
		n, err := x.c.Node(node)
		if err != nil {
			t.Fatal(err)
		}
		return n.UnderlayIP.String() + ":4789"
	}
	a1, a2, a3, b1 := x.podNamed("a1"), x.podNamed("a2"), x.podNamed("a3"), x.podNamed("b1")
	var probes []probe
	// packet is the VXLAN packet peer sends to node for the inner datagram src → dst.
	packet := func(from side, peer, node string, src, dst *escPod, control bool) {
		what := "VXLAN packet " + from.String() + " → " + node + "'s VTEP, inner " + src.name + " → " + dst.name
		probes = append(probes, probe{what: what, control: control, run: func() (bool, error) {
			port, m := x.nextPort(), x.nextMarker()
			return x.delivered(side{pod: dst}, []string{"serve", "--proto", "udp", "--port", port, "--expect", m, "--timeout", probeWait},
				from, []string{"vxlan", "--to", underlay(node), "--inner-src-mac", vtep(peer), "--inner-dst-mac", vtep(node),
					"--src", src.primary, "--dst", dst.primary, "--port", port, "--payload", m})
		}})
	}
	packet(side{node: "node2"}, "node2", "node1", a3, a2, true)
	packet(side{pod: a1}, "node2", "node1", a3, a2, false)
	packet(side{pod: b1}, "node2", "node1", a3, a2, false)
	packet(side{node: "node1"}, "node1", "node2", a1, a3, true)
	packet(side{pod: a1}, "node1", "node2", a1, a3, false)
	packet(side{pod: b1}, "node1", "node2", a1, a3, false)
	x.runProbes(t, probes)
}
