package bgp

import (
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/loom-cni/loom/internal/netnstest"
	api "github.com/osrg/gobgp/v3/api"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// underlay creates a namespace with a veth pair whose end "ul0" has 192.0.2.1/24, and a
// static route to 198.51.100.0/24 via the router 192.0.2.254, and returns a netlink handle
// bound to it.
func underlay(t testing.TB) *netlink.Handle {
	t.Helper()
	_, nsh := netnstest.New(t)
	h, err := netlink.NewHandleAt(netns.NsHandle(nsh.Fd()))
	if err != nil {
		t.Fatalf("netlink handle in test netns: %v", err)
	}
	t.Cleanup(h.Close)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ul0"}, PeerName: "ul1"}
	if err := h.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	for _, name := range []string{"lo", "ul0", "ul1"} {
		link, err := h.LinkByName(name)
		if err != nil {
			t.Fatalf("find %s: %v", name, err)
		}
		if err := h.LinkSetUp(link); err != nil {
			t.Fatalf("set %s up: %v", name, err)
		}
		if name == "ul0" {
			addr, _ := netlink.ParseAddr("192.0.2.1/24")
			if err := h.AddrAdd(link, addr); err != nil {
				t.Fatalf("add address: %v", err)
			}
			veth.Index = link.Attrs().Index
		}
	}
	static := &netlink.Route{
		Dst:       prefixNet(mustPrefix("198.51.100.0/24")),
		Gw:        net.ParseIP("192.0.2.254"),
		LinkIndex: veth.Index,
		Protocol:  unix.RTPROT_STATIC,
	}
	if err := h.RouteAdd(static); err != nil {
		t.Fatalf("add underlay route: %v", err)
	}
	return h
}

// routeVia returns the gateway of the main-table route for dst with the given protocol,
// or an invalid address when there is none.
func routeVia(t *testing.T, h *netlink.Handle, dst string, proto netlink.RouteProtocol) netip.Addr {
	t.Helper()
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{Dst: prefixNet(mustPrefix(dst)), Table: unix.RT_TABLE_MAIN, Protocol: proto},
		netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatalf("list routes to %s: %v", dst, err)
	}
	switch len(routes) {
	case 0:
		return netip.Addr{}
	case 1:
		gw, _ := netip.AddrFromSlice(routes[0].Gw)
		return gw.Unmap()
	default:
		t.Fatalf("routes to %s: got %d, want one", dst, len(routes))
		return netip.Addr{}
	}
}

func TestKernelRoutesReplace(t *testing.T) {
	h := underlay(t)
	k := NewKernelRoutes(h, slog.New(slog.DiscardHandler))
	tests := []struct {
		name    string
		dst     string
		nextHop string
		wantGw  string // empty when Replace must fail
	}{
		{"connected next hop", "10.244.1.0/26", "192.0.2.2", "192.0.2.2"},
		{"replaced next hop", "10.244.1.0/26", "192.0.2.3", "192.0.2.3"},
		{"next hop behind a router", "10.244.2.0/26", "198.51.100.7", "192.0.2.254"},
		{"unreachable next hop", "10.244.3.0/26", "203.0.113.5", ""},
		{"next hop is this node", "10.244.4.0/26", "192.0.2.1", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := k.Replace(mustPrefix(tt.dst), netip.MustParseAddr(tt.nextHop))
			if tt.wantGw == "" {
				if err == nil {
					t.Fatalf("Replace: got no error")
				}
				if gw := routeVia(t, h, tt.dst, RouteProtocol); gw.IsValid() {
					t.Errorf("route %s installed via %s despite the error", tt.dst, gw)
				}
				return
			}
			if err != nil {
				t.Fatalf("Replace: %v", err)
			}
			if gw := routeVia(t, h, tt.dst, RouteProtocol); gw != netip.MustParseAddr(tt.wantGw) {
				t.Errorf("route %s: got proto bgp via %v, want via %s", tt.dst, gw, tt.wantGw)
			}
		})
	}
}

func TestKernelRoutesDelete(t *testing.T) {
	h := underlay(t)
	k := NewKernelRoutes(h, slog.New(slog.DiscardHandler))
	dst := mustPrefix("10.244.1.0/26")
	if err := k.Replace(dst, netip.MustParseAddr("192.0.2.2")); err != nil {
		t.Fatalf("Replace: %v", err)
	}
	for i := range 2 {
		if err := k.Delete(dst); err != nil {
			t.Fatalf("Delete #%d: %v", i+1, err)
		}
	}
	if gw := routeVia(t, h, dst.String(), RouteProtocol); gw.IsValid() {
		t.Errorf("route %s still via %s after Delete", dst, gw)
	}

	// A route of another protocol for the same destination is not the sink's to delete.
	static := &netlink.Route{Dst: prefixNet(dst), Gw: net.ParseIP("192.0.2.9"), Protocol: unix.RTPROT_STATIC}
	if err := h.RouteAdd(static); err != nil {
		t.Fatalf("add static route: %v", err)
	}
	if err := k.Delete(dst); err != nil {
		t.Fatalf("Delete over a static route: %v", err)
	}
	if gw := routeVia(t, h, dst.String(), unix.RTPROT_STATIC); gw != netip.MustParseAddr("192.0.2.9") {
		t.Errorf("static route to %s: got via %v, want it kept", dst, gw)
	}
}

func TestKernelRoutesSweep(t *testing.T) {
	h := underlay(t)
	k := NewKernelRoutes(h, slog.New(slog.DiscardHandler))
	nh := netip.MustParseAddr("192.0.2.2")
	// What a previous run left behind.
	for _, p := range []string{"10.244.1.0/26", "10.244.2.0/26", "10.244.3.0/26"} {
		if err := k.Replace(mustPrefix(p), nh); err != nil {
			t.Fatalf("Replace %s: %v", p, err)
		}
	}
	keep := []netip.Prefix{mustPrefix("10.244.1.0/26"), mustPrefix("10.244.3.0/26"), mustPrefix("10.244.9.0/26")}
	if err := k.Sweep(keep); err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	routes, err := k.list()
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	var got []string
	for _, r := range routes {
		got = append(got, netPrefix(r.Dst).String())
	}
	slices.Sort(got)
	if want := []string{"10.244.1.0/26", "10.244.3.0/26"}; !slices.Equal(got, want) {
		t.Errorf("bgp routes after Sweep: got %v, want %v", got, want)
	}
	if gw := routeVia(t, h, "198.51.100.0/24", unix.RTPROT_STATIC); !gw.IsValid() {
		t.Errorf("Sweep removed the static underlay route")
	}
}

// TestKernelRoutesSink drives the kernel sink from a route table, as the speaker does:
// a stale route of a previous run survives until the resync and is then removed, while
// re-learned routes are never deleted.
func TestKernelRoutesSink(t *testing.T) {
	h := underlay(t)
	k := NewKernelRoutes(h, slog.New(slog.DiscardHandler))
	for _, p := range []string{"10.244.1.0/26", "10.244.2.0/26"} {
		if err := k.Replace(mustPrefix(p), netip.MustParseAddr("192.0.2.2")); err != nil {
			t.Fatalf("Replace %s: %v", p, err)
		}
	}
	rt := newRouteTable(k, netip.MustParseAddr("192.0.2.1"), slog.New(slog.DiscardHandler))
	rt.setPeers([]netip.Addr{netip.MustParseAddr("192.0.2.2")})
	rt.apply(nil)
	if gw := routeVia(t, h, "10.244.2.0/26", RouteProtocol); !gw.IsValid() {
		t.Fatalf("stale route removed before the resync")
	}
	rt.apply([]*api.Path{peerPath(t, "10.244.1.0/26", "192.0.2.2", "192.0.2.2"), eor("192.0.2.2")})
	if gw := routeVia(t, h, "10.244.1.0/26", RouteProtocol); gw != netip.MustParseAddr("192.0.2.2") {
		t.Errorf("re-learned route: got via %v, want via 192.0.2.2", gw)
	}
	if gw := routeVia(t, h, "10.244.2.0/26", RouteProtocol); gw.IsValid() {
		t.Errorf("stale route still via %s after the resync", gw)
	}
}

// BenchmarkKernelRoutes1000 installs 1,000 remote /26 blocks, what loomd does when it
// starts on a node of a large cluster; one op is the whole batch.
func BenchmarkKernelRoutes1000(b *testing.B) {
	h := underlay(b)
	k := NewKernelRoutes(h, slog.New(slog.DiscardHandler))
	type entry struct {
		dst     netip.Prefix
		nextHop netip.Addr
	}
	var routes []entry
	for i := range 1000 {
		dst := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i / 4), byte(i % 4 * 64)}), 26)
		nh := netip.AddrFrom4([4]byte{192, 0, 2, byte(2 + i%50)})
		routes = append(routes, entry{dst, nh})
	}
	b.ResetTimer()
	for range b.N {
		for _, r := range routes {
			if err := k.Replace(r.dst, r.nextHop); err != nil {
				b.Fatalf("Replace: %v", err)
			}
		}
		b.StopTimer()
		if err := k.Sweep(nil); err != nil {
			b.Fatalf("Sweep: %v", err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(routes)), "ns/route")
}
