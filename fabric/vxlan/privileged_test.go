package vxlan

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/loom-cni/loom/internal/netnstest"
)

// TestOverlay builds three nodes on one underlay subnet and checks that pods reach each other
// through the overlay, that the kernel holds exactly the expected routes and entries, and that
// removing a peer removes exactly its entries.
func TestOverlay(t *testing.T) {
	netnstest.RequireRoot(t)
	u := newUnderlay(t)
	u.subnet(t, "br0", "198.51.100.254/24")
	n1 := u.node(t, "br0", "198.51.100.1/24", "10.99.1.0/26", false, "")
	n2 := u.node(t, "br0", "198.51.100.2/24", "10.99.2.0/26", false, "")
	n3 := u.node(t, "br0", "198.51.100.3/24", "10.99.3.0/26", false, "")
	nodes := []*testNode{n1, n2, n3}
	if _, ok := n1.b.Status(); ok {
		t.Errorf("Status before the first Sync: ok")
	}
	for _, n := range nodes {
		must(t, n.b.Sync(peersOf(n, nodes...)), "sync %s", n.name)
	}
	if st, ok := n1.b.Status(); !ok || st != (Status{Peers: 2, Routes: 2}) {
		t.Errorf("Status of node 1: got %+v (ok %v), want 2 peers and 2 routes", st, ok)
	}
	for _, pair := range [][2]*testNode{{n1, n2}, {n1, n3}, {n2, n1}, {n3, n2}} {
		must(t, ping(pair[0], pair[1]), "overlay")
	}
	if got, want := dataplaneOf(t, n1.h), vxlanDataplane(n2, n3); !got.equal(want) {
		t.Fatalf("node 1 dataplane:\n%s\nwant:\n%s", got, want)
	}

	p := syncPlan(t, n1.b, peersOf(n1, n1, n2))
	if len(p.delRoutes) != 1 || len(p.delNeighs) != 1 || len(p.delFDB) != 1 || p.writes() != 3 {
		t.Errorf("removing node 3: got plan %+v, want one route, neighbour and fdb entry deleted", p)
	}
	if got, want := dataplaneOf(t, n1.h), vxlanDataplane(n2); !got.equal(want) {
		t.Errorf("node 1 dataplane without node 3:\n%s\nwant:\n%s", got, want)
	}
	must(t, ping(n1, n2), "overlay after removing node 3")
	if err := ping(n1, n3); err == nil {
		t.Errorf("node 1 still reaches node 3's pod after removing it")
	}
}

// TestSyncIdempotent checks that a second Sync of the same peers writes nothing, with the
// scale the brief sets: 1,000 peers of one block each.
func TestSyncIdempotent(t *testing.T) {
	netnstest.RequireRoot(t)
	_, _, b := loneNode(t, Config{})
	_, err := b.Ensure()
	must(t, err, "ensure")
	peers := manyPeers(1000)

	start := time.Now()
	first := syncPlan(t, b, peers)
	t.Logf("1000 peers from empty: %d writes in %v", first.writes(), time.Since(start))
	if first.writes() != 3000 {
		t.Errorf("from empty: got %d writes, want 3000", first.writes())
	}
	start = time.Now()
	if again := syncPlan(t, b, peers); again.writes() != 0 {
		t.Errorf("second sync: got %d writes, want none", again.writes())
	}
	t.Logf("1000 peers unchanged: %v", time.Since(start))
	if gone := syncPlan(t, b, nil); gone.writes() != 3000 {
		t.Errorf("no peers: got %d writes, want 3000 deletions", gone.writes())
	}
}

// TestSyncChanges covers the updates between two syncs that do not need traffic to check: a
// released block, a changed MAC, a changed underlay address, hand-made damage and routes that
// are not ours.
func TestSyncChanges(t *testing.T) {
	netnstest.RequireRoot(t)
	name, h, b := loneNode(t, Config{})
	_, err := b.Ensure()
	must(t, err, "ensure")
	peers := []Peer{peer("b", 2, "10.99.2.0/26", "10.99.12.0/26"), peer("c", 3, "10.99.3.0/26")}
	must(t, b.Sync(peers), "sync")
	netnstest.Run(t, name, "ip", "route", "add", "10.88.0.0/24", "dev", "eth0")

	steps := []struct {
		name   string
		change func()
		want   plan // only the lengths matter
	}{
		{"release a block", func() { peers[0].Blocks = peers[0].Blocks[:1] },
			plan{delRoutes: make([]netlink.Route, 1)}},
		{"new vtep mac", func() { peers[1].VTEPMAC = vtepMAC(ip("192.0.2.3")) },
			plan{setFDB: make([]netlink.Neigh, 1), setNeighs: make([]netlink.Neigh, 1), delFDB: make([]netlink.Neigh, 1)}},
		{"new underlay address", func() { peers[1].UnderlayIP = ip("198.51.100.33") },
			plan{setFDB: make([]netlink.Neigh, 1)}},
		{"hand-made damage", func() {
			netnstest.Run(t, name, "ip", "route", "del", "10.99.2.0/26")
			netnstest.Run(t, name, "ip", "neigh", "del", "10.99.3.0", "dev", "loom.vxlan")
			netnstest.Run(t, name, "bridge", "fdb", "del", peers[0].VTEPMAC.String(), "dev", "loom.vxlan",
				"dst", "198.51.100.2", "self")
			netnstest.Run(t, name, "ip", "route", "add", "10.77.0.0/24", "dev", "eth0", "proto", "108")
		}, plan{setFDB: make([]netlink.Neigh, 1), setNeighs: make([]netlink.Neigh, 1),
			setRoutes: make([]netlink.Route, 1), delRoutes: make([]netlink.Route, 1)}},
	}
	for _, s := range steps {
		s.change()
		p := syncPlan(t, b, peers)
		if len(p.setFDB) != len(s.want.setFDB) || len(p.setNeighs) != len(s.want.setNeighs) ||
			len(p.setRoutes) != len(s.want.setRoutes) || len(p.delRoutes) != len(s.want.delRoutes) ||
			len(p.delNeighs) != len(s.want.delNeighs) || len(p.delFDB) != len(s.want.delFDB) {
			t.Errorf("%s: got plan %+v", s.name, p)
		}
	}

	want := dataplane{
		routes: []string{
			"10.99.2.0/26 via 10.99.2.0 dev loom.vxlan onlink",
			"10.99.3.0/26 via 10.99.3.0 dev loom.vxlan onlink",
		},
		neighs: []string{"10.99.2.0 lladdr 0e:6c:c6:33:64:02", "10.99.3.0 lladdr 0e:6c:c0:00:02:03"},
		fdb:    []string{"0e:6c:c0:00:02:03 dst 198.51.100.33", "0e:6c:c6:33:64:02 dst 198.51.100.2"},
	}
	if got := dataplaneOf(t, h); !got.equal(want) {
		t.Errorf("dataplane:\n%s\nwant:\n%s", got, want)
	}
	if _, err := h.RouteGet(ip("10.88.0.1").AsSlice()); err != nil {
		t.Errorf("a route that is not ours was touched: %v", err)
	}
}

// TestEnsure checks that Ensure repairs a VTEP created with the wrong settings, keeps a good
// one (and its MAC), and corrects MTU and addresses in place.
func TestEnsure(t *testing.T) {
	netnstest.RequireRoot(t)
	name, h, b := loneNode(t, Config{})
	netnstest.Run(t, name, "ip", "link", "add", "loom.vxlan", "type", "vxlan", "id", "7", "dstport", "8472",
		"local", "198.51.100.1", "dev", "eth0", "learning")
	mac, err := b.Ensure()
	must(t, err, "ensure")
	if mac.String() != "0e:6c:c6:33:64:01" {
		t.Errorf("ensure: got mac %s, want 0e:6c:c6:33:64:01", mac)
	}
	link, err := h.LinkByName("loom.vxlan")
	must(t, err, "look up vtep")
	v := link.(*netlink.Vxlan)
	if v.VxlanId != 1 || v.Port != 4789 || v.Learning || v.MTU != 1450 || v.HardwareAddr.String() != mac.String() ||
		v.Flags&1 == 0 {
		t.Errorf("vtep: got vni %d port %d learning %v mtu %d mac %s flags %v",
			v.VxlanId, v.Port, v.Learning, v.MTU, v.HardwareAddr, v.Flags)
	}

	netnstest.Run(t, name, "ip", "link", "set", "loom.vxlan", "mtu", "1300", "address", "02:00:00:00:00:01")
	netnstest.Run(t, name, "ip", "addr", "add", "10.1.2.3/24", "dev", "loom.vxlan")
	again, err := b.Ensure()
	must(t, err, "ensure again")
	relink, err := h.LinkByName("loom.vxlan")
	must(t, err, "look up vtep")
	if relink.Attrs().Index != v.Index || again.String() != mac.String() ||
		relink.Attrs().HardwareAddr.String() != mac.String() || relink.Attrs().MTU != 1450 {
		t.Errorf("ensure again: got index %d mac %s mtu %d, want the same link %d with mac %s and mtu 1450",
			relink.Attrs().Index, relink.Attrs().HardwareAddr, relink.Attrs().MTU, v.Index, mac)
	}
	addrs, err := h.AddrList(relink, netlink.FAMILY_V4)
	must(t, err, "list vtep addresses")
	if len(addrs) != 1 || addrs[0].IPNet.String() != "10.99.1.0/32" {
		t.Errorf("vtep addresses: got %v, want only 10.99.1.0/32", addrs)
	}

	_, _, stranger := loneNode(t, Config{})
	stranger.cfg.LocalIP = ip("198.51.100.9")
	if _, err := stranger.Ensure(); err == nil {
		t.Errorf("ensure with a local address not on the underlay: no error")
	}
}

// TestRunRecreatesVTEP deletes the VTEP, then sets it down, and checks that Run alone (no
// periodic resync) brings back traffic each time, with the same MAC.
func TestRunRecreatesVTEP(t *testing.T) {
	netnstest.RequireRoot(t)
	u := newUnderlay(t)
	u.subnet(t, "br0", "198.51.100.254/24")
	n1 := u.node(t, "br0", "198.51.100.1/24", "10.99.1.0/26", false, "")
	n2 := u.node(t, "br0", "198.51.100.2/24", "10.99.2.0/26", false, "")
	must(t, n1.b.Sync(peersOf(n1, n2)), "sync node 1")
	must(t, n2.b.Sync(peersOf(n2, n1)), "sync node 2")
	must(t, ping(n1, n2), "overlay")
	run(t, n1.b, 0)

	for _, damage := range [][]string{
		{"ip", "link", "del", "loom.vxlan"},
		{"ip", "link", "set", "loom.vxlan", "down"},
	} {
		netnstest.Run(t, n1.name, damage...)
		eventually(t, 5*time.Second, func() error { return ping(n1, n2) })
		link, err := n1.h.LinkByName("loom.vxlan")
		must(t, err, "look up vtep")
		if link.Attrs().HardwareAddr.String() != n1.mac.String() {
			t.Errorf("after %v: vtep mac %s, want %s", damage, link.Attrs().HardwareAddr, n1.mac)
		}
		if got, want := dataplaneOf(t, n1.h), vxlanDataplane(n2); !got.equal(want) {
			t.Errorf("after %v: dataplane:\n%s\nwant:\n%s", damage, got, want)
		}
	}
}

// TestRunResync checks that the periodic resync restores what no link update reports.
func TestRunResync(t *testing.T) {
	netnstest.RequireRoot(t)
	name, h, b := loneNode(t, Config{})
	_, err := b.Ensure()
	must(t, err, "ensure")
	must(t, b.Sync([]Peer{peer("b", 2, "10.99.2.0/26")}), "sync")
	want := dataplaneOf(t, h)
	run(t, b, 100*time.Millisecond)
	netnstest.Run(t, name, "ip", "route", "del", "10.99.2.0/26")
	netnstest.Run(t, name, "ip", "neigh", "del", "10.99.2.0", "dev", "loom.vxlan")
	eventually(t, 5*time.Second, func() error {
		if got := dataplaneOf(t, h); !got.equal(want) {
			return fmt.Errorf("dataplane:\n%s\nwant:\n%s", got, want)
		}
		return nil
	})
}

// TestCrossSubnet builds two nodes on one subnet and a third behind a router, all in
// crosssubnet mode: same-subnet peers get direct routes and no VXLAN entries, the other gets
// VXLAN, and pods reach each other both ways.
func TestCrossSubnet(t *testing.T) {
	netnstest.RequireRoot(t)
	u := newUnderlay(t)
	u.subnet(t, "bra", "198.51.100.254/24")
	u.subnet(t, "brb", "203.0.113.254/24")
	n1 := u.node(t, "bra", "198.51.100.1/24", "10.99.1.0/26", true, "198.51.100.254", "203.0.113.0/24")
	n2 := u.node(t, "bra", "198.51.100.2/24", "10.99.2.0/26", true, "198.51.100.254", "203.0.113.0/24")
	n3 := u.node(t, "brb", "203.0.113.3/24", "10.99.3.0/26", true, "203.0.113.254", "198.51.100.0/24")
	nodes := []*testNode{n1, n2, n3}
	for _, n := range nodes {
		must(t, n.b.Sync(peersOf(n, nodes...)), "sync %s", n.name)
	}

	want := vxlanDataplane(n3)
	want.routes = append([]string{"10.99.2.0/26 via 198.51.100.2 dev eth0"}, want.routes...)
	if got := dataplaneOf(t, n1.h); !got.equal(want) {
		t.Errorf("node 1 dataplane:\n%s\nwant:\n%s", got, want)
	}

	for _, c := range []struct {
		from, to *testNode
		vxlan    bool
	}{{n1, n2, false}, {n2, n1, false}, {n1, n3, true}, {n3, n1, true}, {n3, n2, true}} {
		before := vtepRx(t, c.to)
		must(t, ping(c.from, c.to), "crosssubnet")
		if encapsulated := vtepRx(t, c.to) > before; encapsulated != c.vxlan {
			t.Errorf("ping %s from %s: encapsulated %v, want %v", c.to.pod(), c.from.pod(), encapsulated, c.vxlan)
		}
	}
}

// vtepRx is the number of packets n's VTEP has received.
func vtepRx(t testing.TB, n *testNode) uint64 {
	t.Helper()
	link, err := n.h.LinkByName(DefaultName)
	must(t, err, "look up vtep")
	return link.Attrs().Statistics.RxPackets
}

// run runs b.Run until the test ends.
func run(t testing.TB, b *Backend, resync time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { b.Run(ctx, resync) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}

// eventually retries check until it succeeds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// manyPeers returns n peers with one /26 block each, carved from 10.128.0.0/9, and underlay
// addresses from 172.16.0.0/12.
func manyPeers(n int) []Peer {
	peers := make([]Peer, n)
	for i := range peers {
		block := netip.PrefixFrom(addAddr(ip("10.128.0.0"), uint32(i)*64), 26)
		under := addAddr(ip("172.16.0.2"), uint32(i))
		peers[i] = Peer{
			Node:       "node-" + under.String(),
			UnderlayIP: under,
			VTEPMAC:    vtepMAC(under),
			VTEPAddr:   block.Addr(),
			Blocks:     []netip.Prefix{block},
		}
	}
	return peers
}

func addAddr(a netip.Addr, n uint32) netip.Addr {
	b := a.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) + n
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
