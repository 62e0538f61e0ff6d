package vxlan

import (
	"net/netip"
	"slices"
	"testing"
)

// TestGuardAddrs checks which peer addresses the guard admits: every usable unicast address
// of either family, once, never this node's own.
func TestGuardAddrs(t *testing.T) {
	g := newGuard(Config{LocalIP: ip("198.51.100.1")})
	peers := []Peer{
		{Node: "b", UnderlayIP: ip("198.51.100.2")},
		{Node: "b-again", UnderlayIP: ip("198.51.100.2")},
		{Node: "self", UnderlayIP: ip("198.51.100.1")},
		{Node: "mapped", UnderlayIP: ip("::ffff:198.51.100.3")},
		{Node: "v6", UnderlayIP: ip("2001:db8::2")},
		{Node: "none"},
		{Node: "any", UnderlayIP: ip("0.0.0.0")},
		{Node: "group", UnderlayIP: ip("239.1.1.1")},
		{Node: "zoned", UnderlayIP: ip("fe80::2%eth0")},
	}
	want := []netip.Addr{ip("198.51.100.2"), ip("198.51.100.3"), ip("2001:db8::2")}
	if got := g.addrs(peers); !slices.Equal(got, want) {
		t.Errorf("addrs: got %v, want %v", got, want)
	}
}
