package vxlan

import (
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
)

func TestDiffNothingToDo(t *testing.T) {
	want, _ := desired([]Peer{peer("b", 2, "10.99.2.0/26"), peer("c", 3, "10.99.3.0/26")}, testLocal)
	from := diff(want, observed{}, testLocal.vtep)
	if got := from.writes(); got != 6 {
		t.Fatalf("from empty: got %d writes, want 6", got)
	}
	// The kernel reports what was written; nothing is left to do.
	have := observed{routes: from.setRoutes, neighs: from.setNeighs, fdb: from.setFDB}
	if p := diff(want, have, testLocal.vtep); p.writes() != 0 {
		t.Errorf("in sync: got plan %+v, want no writes", p)
	}
}

func TestDiffRoutes(t *testing.T) {
	want := map[netip.Prefix]route{
		mustPrefix("10.99.2.0/26"): viaVTEP(2),
		mustPrefix("10.99.3.0/26"): viaVTEP(3),
		mustPrefix("10.99.4.0/26"): viaVTEP(4),
	}
	moved := viaVTEP(9).netlink(mustPrefix("10.99.3.0/26"))
	otherPriority := viaVTEP(4).netlink(mustPrefix("10.99.4.0/26"))
	otherPriority.Priority = 100
	have := []netlink.Route{
		viaVTEP(2).netlink(mustPrefix("10.99.2.0/26")), // as wanted
		moved,         // wrong next hop: replaced in place
		otherPriority, // not in the slot: deleted, and the slot set
		viaVTEP(5).netlink(mustPrefix("10.99.5.0/26")), // released block: deleted
	}
	var p plan
	p.routes(want, have)
	if got := dsts(p.setRoutes); !slices.Equal(got, []string{"10.99.3.0/26", "10.99.4.0/26"}) {
		t.Errorf("set routes: got %v", got)
	}
	if got := dsts(p.delRoutes); !slices.Equal(got, []string{"10.99.4.0/26", "10.99.5.0/26"}) {
		t.Errorf("deleted routes: got %v", got)
	}
}

func TestDiffNeighs(t *testing.T) {
	b, c := peer("b", 2), peer("c", 3)
	want := map[netip.Addr]mac{b.VTEPAddr: mac(b.VTEPMAC), c.VTEPAddr: mac(c.VTEPMAC)}
	have := []netlink.Neigh{
		{IP: b.VTEPAddr.AsSlice(), HardwareAddr: b.VTEPMAC, State: netlink.NUD_PERMANENT},
		{IP: c.VTEPAddr.AsSlice(), HardwareAddr: b.VTEPMAC, State: netlink.NUD_PERMANENT}, // MAC changed
		{IP: ip("10.99.7.0").AsSlice(), HardwareAddr: b.VTEPMAC, State: netlink.NUD_PERMANENT},
		{IP: ip("10.99.8.0").AsSlice(), State: netlink.NUD_FAILED}, // the kernel's: left alone
	}
	var p plan
	p.neighs(want, have, testLocal.vtep)
	if len(p.setNeighs) != 1 || addrOf(p.setNeighs[0].IP) != c.VTEPAddr ||
		p.setNeighs[0].HardwareAddr.String() != c.VTEPMAC.String() {
		t.Errorf("set neighbours: got %v, want only %s", p.setNeighs, c.VTEPAddr)
	}
	if len(p.delNeighs) != 1 || addrOf(p.delNeighs[0].IP) != ip("10.99.7.0") {
		t.Errorf("deleted neighbours: got %v, want only 10.99.7.0", p.delNeighs)
	}
}

func TestDiffFDB(t *testing.T) {
	m1, m2, m3, m4 := mac{2, 0, 0, 0, 0, 1}, mac{2, 0, 0, 0, 0, 2}, mac{2, 0, 0, 0, 0, 3}, mac{2, 0, 0, 0, 0, 4}
	want := map[mac]netip.Addr{
		m1: ip("198.51.100.1"), // present as wanted
		m2: ip("198.51.100.2"), // one remote with an old address: replaced in place
		m3: ip("198.51.100.3"), // wanted remote and a stray one: the stray is deleted
		m4: ip("198.51.100.4"), // two wrong remotes: the first replaced, the second deleted
	}
	have := []netlink.Neigh{
		fdbEntry(10, m1, ip("198.51.100.1")),
		fdbEntry(10, m2, ip("198.51.100.22")),
		fdbEntry(10, m3, ip("198.51.100.33")),
		fdbEntry(10, m3, ip("198.51.100.3")),
		fdbEntry(10, m4, ip("198.51.100.44")),
		fdbEntry(10, m4, ip("198.51.100.45")),
		fdbEntry(10, mac{2, 0, 0, 0, 0, 9}, ip("198.51.100.9")), // gone peer
		fdbEntry(10, mac{}, ip("198.51.100.9")),                 // flooding default: never ours
	}
	var p plan
	p.fdb(want, have, 10)
	set := entries(p.setFDB)
	slices.Sort(set)
	if want := []string{"02:00:00:00:00:02 198.51.100.2", "02:00:00:00:00:04 198.51.100.4"}; !slices.Equal(set, want) {
		t.Errorf("set fdb entries: got %v, want %v", set, want)
	}
	del := entries(p.delFDB)
	slices.Sort(del)
	if want := []string{
		"00:00:00:00:00:00 198.51.100.9", "02:00:00:00:00:03 198.51.100.33",
		"02:00:00:00:00:04 198.51.100.45", "02:00:00:00:00:09 198.51.100.9",
	}; !slices.Equal(del, want) {
		t.Errorf("deleted fdb entries: got %v, want %v", del, want)
	}
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func dsts(rs []netlink.Route) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Dst.String())
	}
	slices.Sort(out)
	return out
}

func entries(ns []netlink.Neigh) []string {
	var out []string
	for _, n := range ns {
		out = append(out, net.HardwareAddr(n.HardwareAddr).String()+" "+addrOf(n.IP).String())
	}
	return out
}
