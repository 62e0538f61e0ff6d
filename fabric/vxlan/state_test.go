package vxlan

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestConfigDefaults(t *testing.T) {
	base := Config{Underlay: "eth0", LocalIP: ip("198.51.100.1"), Addr: ip("10.99.1.0")}
	got, err := base.withDefaults()
	if err != nil {
		t.Fatalf("withDefaults: %v", err)
	}
	if got.Name != "loom.vxlan" || got.VNI != 1 || got.Port != 4789 || got.MTU != 0 {
		t.Errorf("defaults: got %+v", got)
	}
	bad := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"long name", func(c *Config) { c.Name = "loom.vxlan.too.long" }, "longer than 15"},
		{"vni", func(c *Config) { c.VNI = 1 << 24 }, "vni"},
		{"port", func(c *Config) { c.Port = 70000 }, "udp port"},
		{"mtu", func(c *Config) { c.MTU = 60 }, "mtu"},
		{"underlay", func(c *Config) { c.Underlay = "" }, "underlay"},
		{"local ipv6", func(c *Config) { c.LocalIP = ip("2001:db8::1") }, "local underlay address"},
		{"no vtep address", func(c *Config) { c.Addr = netip.Addr{} }, "vtep address"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.edit(&c)
			if _, err := c.withDefaults(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("withDefaults: got %v, want an error about %q", err, tc.want)
			}
		})
	}
}

func TestVTEPMAC(t *testing.T) {
	got := vtepMAC(ip("198.51.100.7"))
	if got.String() != "0e:6c:c6:33:64:07" {
		t.Errorf("vtepMAC: got %s", got)
	}
	if got[0]&2 == 0 || got[0]&1 != 0 {
		t.Errorf("vtepMAC %s: want a locally administered unicast address", got)
	}
}

// testLocal is the local node of the unit tests: VTEP link 10, underlay link 2.
var testLocal = local{vtep: 10, underlay: 2, addr: ip("10.99.1.0"), ip: ip("198.51.100.1")}

func TestDesired(t *testing.T) {
	cross := testLocal
	cross.subnet = netip.MustParsePrefix("198.51.100.0/24")
	tests := []struct {
		name    string
		local   local
		peers   []Peer
		routes  map[string]route // block → route
		neighs  int
		skipped []string // Reason substrings of the expected PeerErrors
	}{{
		name:   "vxlan peer with two blocks",
		local:  testLocal,
		peers:  []Peer{peer("b", 2, "10.99.2.0/26", "10.99.9.0/26")},
		routes: map[string]route{"10.99.2.0/26": viaVTEP(2), "10.99.9.0/26": viaVTEP(2)},
		neighs: 1,
	}, {
		name:   "peer without blocks gets nothing",
		local:  testLocal,
		peers:  []Peer{peer("b", 2)},
		routes: map[string]route{},
	}, {
		name:  "crosssubnet: same subnet is direct, needs no vtep",
		local: cross,
		peers: []Peer{
			{Node: "b", UnderlayIP: ip("198.51.100.2"), Blocks: pfx("10.99.2.0/26")},
			{Node: "c", UnderlayIP: ip("203.0.113.3"), VTEPMAC: vtepMAC(ip("203.0.113.3")),
				VTEPAddr: ip("10.99.3.0"), Blocks: pfx("10.99.3.0/26")},
		},
		routes: map[string]route{
			"10.99.2.0/26": {gw: ip("198.51.100.2"), dev: 2},
			"10.99.3.0/26": {gw: ip("10.99.3.0"), dev: 10, onlink: true},
		},
		neighs: 1,
	}, {
		name:  "unusable peers and blocks",
		local: testLocal,
		peers: []Peer{
			peer("b", 2, "10.99.2.0/26", "10.99.2.1/26", "10.99.1.0/24", "2001:db8::/64"),
			{Node: "c", UnderlayIP: ip("198.51.100.3"), VTEPMAC: net.HardwareAddr{1, 2, 3, 4, 5, 6},
				VTEPAddr: ip("10.99.3.0"), Blocks: pfx("10.99.3.0/26")},
			{Node: "d", UnderlayIP: ip("198.51.100.4"), VTEPMAC: net.HardwareAddr{2, 2},
				VTEPAddr: ip("10.99.4.0"), Blocks: pfx("10.99.4.0/26")},
			{Node: "e", UnderlayIP: ip("198.51.100.1"), Blocks: pfx("10.99.5.0/26")},
			{Node: "f", UnderlayIP: ip("198.51.100.6"), VTEPMAC: vtepMAC(ip("198.51.100.6")),
				VTEPAddr: ip("10.99.1.0"), Blocks: pfx("10.99.6.0/26")},
			{Node: "", UnderlayIP: ip("198.51.100.7")},
		},
		routes: map[string]route{"10.99.2.0/26": viaVTEP(2)},
		neighs: 1,
		skipped: []string{"host bits", "contains this node's vtep address", "not an IPv4 prefix",
			"not unicast", "not an Ethernet address", "is this node's", "is this node's", "no node name"},
	}, {
		name:  "conflicts: the first node by name wins",
		local: testLocal,
		peers: []Peer{
			peer("z", 9, "10.99.2.0/26"),
			peer("b", 2, "10.99.2.0/26"),
			peer("b", 2, "10.99.7.0/26"),
			{Node: "c", UnderlayIP: ip("198.51.100.3"), VTEPMAC: vtepMAC(ip("198.51.100.3")),
				VTEPAddr: ip("10.99.2.0"), Blocks: pfx("10.99.3.0/26")},
			{Node: "d", UnderlayIP: ip("198.51.100.4"), VTEPMAC: vtepMAC(ip("198.51.100.2")),
				VTEPAddr: ip("10.99.4.0"), Blocks: pfx("10.99.4.0/26")},
		},
		routes: map[string]route{"10.99.2.0/26": viaVTEP(2)},
		neighs: 1,
		skipped: []string{"listed twice", "vtep address 10.99.2.0 also claimed", "vtep mac",
			`block 10.99.2.0/26 also claimed by node "b"`},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, errs := desired(tc.peers, tc.local)
			if len(s.routes) != len(tc.routes) {
				t.Errorf("routes: got %v, want %v", s.routes, tc.routes)
			}
			for blk, want := range tc.routes {
				if got, ok := s.routes[netip.MustParsePrefix(blk)]; !ok || got != want {
					t.Errorf("route %s: got %+v (present %v), want %+v", blk, got, ok, want)
				}
			}
			if len(s.neighs) != tc.neighs || len(s.fdb) != tc.neighs {
				t.Errorf("got %d neighbours and %d fdb entries, want %d each", len(s.neighs), len(s.fdb), tc.neighs)
			}
			if len(errs) != len(tc.skipped) {
				t.Fatalf("errors: got %v, want %d about %q", errs, len(tc.skipped), tc.skipped)
			}
			for _, want := range tc.skipped {
				if !slices.ContainsFunc(errs, func(err error) bool {
					var pe *PeerError
					return errors.As(err, &pe) && strings.Contains(pe.Reason, want)
				}) {
					t.Errorf("no PeerError about %q in %v", want, errs)
				}
			}
		})
	}
}

// peer is a VXLAN peer numbered n: underlay 198.51.100.n, VTEP address 10.99.n.0.
func peer(node string, n byte, blocks ...string) Peer {
	u := netip.AddrFrom4([4]byte{198, 51, 100, n})
	return Peer{
		Node:       node,
		UnderlayIP: u,
		VTEPMAC:    vtepMAC(u),
		VTEPAddr:   netip.AddrFrom4([4]byte{10, 99, n, 0}),
		Blocks:     pfx(blocks...),
	}
}

// viaVTEP is the route testLocal wants to the blocks of peer number n.
func viaVTEP(n byte) route {
	return route{gw: netip.AddrFrom4([4]byte{10, 99, n, 0}), dev: 10, onlink: true}
}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func pfx(ss ...string) []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range ss {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			// Keep unparsable test input as the invalid prefix it would be in a real Peer.
			p = netip.Prefix{}
		}
		ps = append(ps, p)
	}
	return ps
}

func TestStatus(t *testing.T) {
	cross := testLocal
	cross.subnet = netip.MustParsePrefix("198.51.100.0/24")
	tests := []struct {
		name  string
		local local
		peers []Peer
		want  Status
	}{{
		name:  "vxlan peers",
		local: testLocal,
		peers: []Peer{peer("b", 2, "10.99.2.0/26", "10.99.9.0/26"), peer("c", 3, "10.99.3.0/26"), peer("d", 4)},
		want:  Status{Peers: 2, Routes: 3},
	}, {
		name:  "crosssubnet",
		local: cross,
		peers: []Peer{
			{Node: "b", UnderlayIP: ip("198.51.100.2"), Blocks: pfx("10.99.2.0/26", "10.99.8.0/26")},
			{Node: "c", UnderlayIP: ip("203.0.113.3"), VTEPMAC: vtepMAC(ip("203.0.113.3")),
				VTEPAddr: ip("10.99.3.0"), Blocks: pfx("10.99.3.0/26")},
		},
		want: Status{Peers: 1, DirectPeers: 1, Routes: 1, DirectRoutes: 2},
	}, {
		name:  "rejected claims",
		local: testLocal,
		peers: []Peer{peer("b", 2, "10.99.2.0/26", "10.99.2.1/26"), peer("c", 2, "10.99.3.0/26")},
		want:  Status{Peers: 1, Routes: 1, Rejected: 2},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, errs := desired(tc.peers, tc.local)
			if got := s.status(tc.local, len(errs)); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
