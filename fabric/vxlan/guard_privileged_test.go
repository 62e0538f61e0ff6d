package vxlan

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/loom-cni/loom/internal/netnstest"
)

// Waits of the guard's tests: how long a packet that should arrive may take, and how long to
// wait before concluding that one that should not did not.
const (
	arriveWait  = 2 * time.Second
	dropWait    = 300 * time.Millisecond
	guardedPort = DefaultPort
)

// podVeth is the host end of the test pod's veth, named as Loom names them ("loom" and 11 hex
// digits).
const podVeth = "loom5eed0000001"

// TestGuard attacks a node's VTEP the ways a pod, or a host on the underlay that is not a node,
// could: VXLAN packets carrying an IPv4 and an IPv6 inner frame from another node's pod to the
// node's pod, sent from a pod of the node to the node's underlay and VTEP addresses, forged
// with another node's source address, sent through the node to another node, and sent from a
// stranger on the underlay. None may arrive; the same packets from a real peer must, as must
// the overlay's own traffic. Removing the table by hand lets the attacks through (so it was
// the guard that stopped them) and a repair brings it back; a node taken out of the peers is
// no longer admitted.
func TestGuard(t *testing.T) {
	netnstest.RequireRoot(t)
	u := newUnderlay(t)
	u.subnet(t, "br0", "198.51.100.254/24")
	n1 := u.node(t, "br0", "198.51.100.1/24", "10.99.1.0/26", false, "")
	n2 := u.node(t, "br0", "198.51.100.2/24", "10.99.2.0/26", false, "")
	n3 := u.node(t, "br0", "198.51.100.3/24", "10.99.3.0/26", false, "")
	nodes := []*testNode{n1, n2, n3}
	for _, n := range nodes {
		must(t, n.b.Sync(peersOf(n, nodes...)), "sync %s", n.name)
	}
	stranger, _, _ := u.host(t, "br0", "198.51.100.9/24")
	netnstest.Run(t, n1.name, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	pod := podOn(t, n1, "10.99.1.5", "fd00:99:1::5")
	rx := newReceivers(t, n1, n2)

	blocked := []attempt{
		{"pod to its node's underlay address", n1, n2, func(p []byte) error { return sendUDP(pod, n1.ip, guardedPort, p) }},
		{"pod to its node's VTEP address", n1, n2, func(p []byte) error { return sendUDP(pod, n1.block.Addr(), guardedPort, p) }},
		{"pod forging node 2's address", n1, n2, func(p []byte) error {
			return sendForged(pod, n2.ip, n1.ip, guardedPort, p)
		}},
		{"pod through its node to node 2, forging node 3's address", n2, n3, func(p []byte) error {
			return sendForged(pod, n3.ip, n2.ip, guardedPort, p)
		}},
		{"host on the underlay that is no node", n1, n2, func(p []byte) error { return sendUDP(stranger, n1.ip, guardedPort, p) }},
	}
	fromNode2 := attempt{"node 2", n1, n2, func(p []byte) error { return sendUDP(n2.name, n1.ip, guardedPort, p) }}
	fromNode3 := attempt{"node 3", n1, n3, func(p []byte) error { return sendUDP(n3.name, n1.ip, guardedPort, p) }}

	for _, a := range blocked {
		rx.expect(t, a, false)
	}
	rx.expect(t, fromNode2, true)
	rx.expect(t, fromNode3, true)
	for _, pair := range [][2]*testNode{{n1, n2}, {n2, n1}, {n1, n3}, {n3, n2}} {
		must(t, ping(pair[0], pair[1]), "overlay with the guard in place")
	}

	// Node 3 leaves node 1's peers: node 1 drops its VXLAN, and admits it again when it is back.
	must(t, n1.b.Sync(peersOf(n1, n1, n2)), "sync node 1 without node 3")
	rx.expect(t, fromNode3, false)
	must(t, n1.b.Sync(peersOf(n1, nodes...)), "sync node 1 with node 3")
	rx.expect(t, fromNode3, true)

	// A guard set up again over an existing table (loomd restarted) keeps admitting the
	// peers until its first Sync.
	n1.b.mu.Lock()
	restarted := newGuard(n1.b.cfg)
	must(t, restarted.ensure(), "ensure the guard over an existing table")
	n1.b.mu.Unlock()
	rx.expect(t, fromNode2, true)

	// Without node 1's table the same packets get through: it was the guard that stopped them.
	netnstest.Run(t, n1.name, "nft", "delete", "table", "inet", GuardTable)
	rx.expect(t, blocked[0], true)
	rx.expect(t, blocked[3], true)
	n1.b.repair("test")
	rx.expect(t, blocked[0], false)
	rx.expect(t, blocked[3], false)
	must(t, ping(n1, n2), "overlay after the repair")
}

// TestGuardIPv6Underlay checks that the guard is family-aware: over an IPv6 underlay it admits
// VXLAN from a peer's IPv6 address only, never from a pod or a stranger. The VTEPs here speak
// IPv4, so what reaches the port is seen by a socket of the test's on node 1's IPv6 address.
func TestGuardIPv6Underlay(t *testing.T) {
	netnstest.RequireRoot(t)
	u := newUnderlay(t)
	u.subnet(t, "br0", "198.51.100.254/24")
	n1 := u.node(t, "br0", "198.51.100.1/24", "10.99.1.0/26", false, "")
	n2 := u.node(t, "br0", "198.51.100.2/24", "10.99.2.0/26", false, "")
	v6 := map[*testNode]netip.Addr{n1: ip("2001:db8:100::1"), n2: ip("2001:db8:100::2")}
	for n, a := range v6 {
		netnstest.Run(t, n.name, "ip", "-6", "addr", "add", a.String()+"/64", "dev", "eth0", "nodad")
	}
	stranger, _, _ := u.host(t, "br0", "198.51.100.9/24", "2001:db8:100::9/64")
	pod := podOn(t, n1, "10.99.1.5", "fd00:99:1::5")

	// Node 2 as the peer it would be over an IPv6 underlay. Sync leaves it out of the VXLAN
	// dataplane (the VTEPs are IPv4), but it is a node, and the guard admits it.
	must(t, n2.b.Sync(peersOf(n2, n1)), "sync node 2")
	peers := append(peersOf(n1, n2), Peer{Node: n2.name + "-v6", UnderlayIP: v6[n2]})
	var pe *PeerError
	if err := n1.b.Sync(peers); !errors.As(err, &pe) {
		t.Fatalf("sync with an IPv6 peer: got %v, want a *PeerError for it", err)
	}
	if st, _ := n1.b.Status(); st.Rejected != 1 || st.Peers != 1 {
		t.Fatalf("status after sync: %+v, want 1 peer and 1 rejected", st)
	}
	port := listen(t, n1.name, v6[n1], guardedPort)

	cases := []struct {
		name   string
		send   func(payload []byte) error
		arrive bool
	}{
		{"peer's IPv6 address", func(p []byte) error { return sendUDP(n2.name, v6[n1], guardedPort, p) }, true},
		{"stranger", func(p []byte) error { return sendUDP(stranger, v6[n1], guardedPort, p) }, false},
		{"pod", func(p []byte) error { return sendUDP(pod, v6[n1], guardedPort, p) }, false},
		{"pod forging the peer's address", func(p []byte) error {
			return sendForged(pod, v6[n2], v6[n1], guardedPort, p)
		}, false},
	}
	check := func(stage string, override *bool) {
		t.Helper()
		for _, c := range cases {
			want := c.arrive
			if override != nil {
				want = *override
			}
			msg := stage + ": " + c.name
			must(t, c.send([]byte(msg)), "send from %s", c.name)
			if got := receive(port, msg, want); got != want {
				t.Errorf("%s: arrived %v, want %v", msg, got, want)
			}
		}
	}
	check("guarded", nil)
	must(t, ping(n1, n2), "overlay with the guard in place")

	netnstest.Run(t, n1.name, "nft", "delete", "table", "inet", GuardTable)
	all := true
	check("unguarded", &all)
}

// attempt is one way of sending a VXLAN packet to node to, whose inner frame claims to come
// from the VTEP and a pod of node as.
type attempt struct {
	name   string
	to, as *testNode
	send   func(payload []byte) error
}

// receivers are UDP sockets on the pod addresses of nodes, both families, where inner
// datagrams end up if the VTEP takes them.
type receivers map[*testNode][2]*listener

func newReceivers(t testing.TB, nodes ...*testNode) receivers {
	t.Helper()
	r := receivers{}
	for _, n := range nodes {
		lo, err := n.h.LinkByName("lo")
		must(t, err, "look up lo")
		a := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(pod6(n), 128)), Flags: unix.IFA_F_NODAD}
		must(t, n.h.AddrAdd(lo, a), "address lo of %s", n.name)
		r[n] = [2]*listener{listen(t, n.name, n.pod(), innerPort), listen(t, n.name, pod6(n), innerPort)}
	}
	return r
}

// expect sends a's packets, one with an IPv4 and one with an IPv6 inner frame, and checks
// whether they arrive at the pod addresses of a.to, and whether a.to's VTEP received them.
func (r receivers) expect(t testing.TB, a attempt, arrive bool) {
	t.Helper()
	for i, dst := range []netip.Addr{a.to.pod(), pod6(a.to)} {
		src := a.as.pod()
		if dst.Is6() {
			src = pod6(a.as)
		}
		msg := fmt.Sprintf("%s: inner %s → %s", a.name, src, dst)
		before := vtepRx(t, a.to)
		must(t, a.send(vxlanPayload(DefaultVNI, a.as.mac, a.to.mac, src, dst, msg)), "send %s", msg)
		got := receive(r[a.to][i], msg, arrive)
		if got != arrive {
			t.Errorf("%s: arrived %v, want %v", msg, got, arrive)
		}
		if counted := vtepRx(t, a.to) > before; counted != arrive {
			t.Errorf("%s: vtep of %s received it: %v, want %v", msg, a.to.name, counted, arrive)
		}
	}
}

// receive reports whether msg arrives at l: it waits arriveWait when it should, dropWait when
// it should not. Other datagrams (late ones of earlier attempts) are skipped.
func receive(l *listener, msg string, want bool) bool {
	wait := dropWait
	if want {
		wait = arriveWait
	}
	deadline := time.Now().Add(wait)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		got := l.next(left)
		if got == msg {
			return true
		}
		if got == "" {
			return false
		}
	}
}

// pod6 is the IPv6 pod address of n: fd00:99:<third byte of its block>::1.
func pod6(n *testNode) netip.Addr {
	b := n.block.Addr().As4()
	return netip.AddrFrom16([16]byte{0xfd, 0, 0, 0x99, 0, b[2], 15: 1})
}

// podOn adds a pod to node n as Loom plumbs one: a namespace whose eth0 carries addr4/32 and
// addr6/128 and routes everything to the node's end of the veth (podVeth), which holds
// 169.254.1.1 and fe80::1; the node routes the pod's addresses to it.
func podOn(t testing.TB, n *testNode, addr4, addr6 string) string {
	t.Helper()
	name, nsh := netnstest.New(t)
	netnstest.Run(t, name, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0")
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: podVeth},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(int(nsh.Fd())),
	}
	must(t, n.h.LinkAdd(veth), "add veth %s", podVeth)
	for _, argv := range [][]string{
		{"ip", "addr", "add", "169.254.1.1/32", "dev", podVeth},
		{"ip", "-6", "addr", "add", "fe80::1/64", "dev", podVeth, "nodad"},
		{"ip", "link", "set", podVeth, "up"},
		{"ip", "route", "add", addr4 + "/32", "dev", podVeth},
		{"ip", "-6", "route", "add", addr6 + "/128", "dev", podVeth},
	} {
		netnstest.Run(t, n.name, argv...)
	}
	for _, argv := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "link", "set", "eth0", "up"},
		{"ip", "addr", "add", addr4 + "/32", "dev", "eth0"},
		{"ip", "-6", "addr", "add", addr6 + "/128", "dev", "eth0", "nodad"},
		{"ip", "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link"},
		{"ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0"},
		{"ip", "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0"},
	} {
		netnstest.Run(t, name, argv...)
	}
	waitOperUp(t, n.h, podVeth)
	return name
}
