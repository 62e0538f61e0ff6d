package fabric

import (
	"maps"
	"net/netip"
	"testing"
)

// kernelFake records what blockRoutes installs.
type kernelFake struct{ routes map[netip.Prefix]netip.Addr }

func (k *kernelFake) Replace(dst netip.Prefix, nh netip.Addr) error { k.routes[dst] = nh; return nil }
func (k *kernelFake) Delete(dst netip.Prefix) error                 { delete(k.routes, dst); return nil }
func (k *kernelFake) Sweep([]netip.Prefix) error                    { return nil }

func TestBlockRoutes(t *testing.T) {
	p, a := netip.MustParsePrefix, netip.MustParseAddr
	k := &kernelFake{routes: map[netip.Prefix]netip.Addr{}}
	b := newBlockRoutes(k, p("10.244.0.0/16"))
	node2, node3, tor := a("198.18.1.12"), a("198.19.1.13"), a("198.18.1.254")
	check := func(step string, want map[netip.Prefix]netip.Addr) {
		t.Helper()
		if !maps.Equal(k.routes, want) {
			t.Errorf("%s: kernel = %v, want %v", step, k.routes, want)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}

	// Before the owners are known nothing inside the cluster CIDR is installed; outside it,
	// everything is.
	must(b.Replace(p("10.244.1.0/26"), node2))
	must(b.Replace(p("192.0.2.0/24"), tor))
	check("no owners", map[netip.Prefix]netip.Addr{p("192.0.2.0/24"): tor})

	must(b.setOwners(map[netip.Prefix]netip.Addr{p("10.244.1.0/26"): node2, p("10.244.2.0/26"): node3}))
	check("owners known", map[netip.Prefix]netip.Addr{p("10.244.1.0/26"): node2, p("192.0.2.0/24"): tor})

	// A path for node3's block with someone else as next hop (a hijack, or a stale path of
	// a previous owner) is not installed; node3's own is.
	must(b.Replace(p("10.244.2.0/26"), tor))
	check("wrong next hop", map[netip.Prefix]netip.Addr{p("10.244.1.0/26"): node2, p("192.0.2.0/24"): tor})
	must(b.Replace(p("10.244.2.0/26"), node3))
	check("right next hop", map[netip.Prefix]netip.Addr{p("10.244.1.0/26"): node2, p("10.244.2.0/26"): node3, p("192.0.2.0/24"): tor})

	// node3 is gone: its block loses its owner and its route goes, although a route
	// reflector still announces the stale path.
	must(b.setOwners(map[netip.Prefix]netip.Addr{p("10.244.1.0/26"): node2}))
	check("node3 gone", map[netip.Prefix]netip.Addr{p("10.244.1.0/26"): node2, p("192.0.2.0/24"): tor})

	must(b.Delete(p("10.244.1.0/26")))
	must(b.Delete(p("192.0.2.0/24")))
	check("withdrawn", map[netip.Prefix]netip.Addr{})
}
