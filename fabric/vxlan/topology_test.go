package vxlan

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/loom-cni/loom/internal/netnstest"
)

// underlay is the physical network of a privileged test: one namespace holding a Linux bridge
// per subnet, each bridge carrying the subnet's router address, with forwarding on so that
// nodes on different subnets reach each other through it. Nothing the tests create lives in
// the root namespace.
type underlay struct {
	name  string
	h     *netlink.Handle
	ports int
}

func newUnderlay(t testing.TB) *underlay {
	name, nsh := netnstest.New(t)
	netnstest.Run(t, name, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	return &underlay{name: name, h: handleAt(t, nsh)}
}

// subnet adds a bridge named br whose address, router (e.g. 198.51.100.254/24), is the
// subnet's gateway to the others.
func (u *underlay) subnet(t testing.TB, br, router string) {
	t.Helper()
	link := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: br}}
	must(t, u.h.LinkAdd(link), "add bridge %s", br)
	must(t, u.h.AddrAdd(link, mustAddr(t, router)), "address bridge %s", br)
	must(t, u.h.LinkSetUp(link), "set bridge %s up", br)
}

// testNode is a simulated node: a namespace with eth0 on one of the underlay's bridges, a pod
// address (the second of its block) on lo standing in for a pod, and a Backend.
type testNode struct {
	name  string // namespace
	h     *netlink.Handle
	ip    netip.Addr   // underlay address
	block netip.Prefix // the node's pod block; its first address is the VTEP address
	b     *Backend
	mac   net.HardwareAddr // VTEP MAC returned by Ensure
}

// node adds a node on bridge br with underlay address addr (CIDR) and pod block block, routes
// to the other subnets via router, and a Backend on which Ensure has run.
func (u *underlay) node(t testing.TB, br, addr, block string, cross bool, router string, others ...string) *testNode {
	t.Helper()
	name, nsh, h := u.host(t, br, addr)
	n := &testNode{name: name, h: h, block: netip.MustParsePrefix(block), ip: addrOf(mustAddr(t, addr).IP)}
	lo := upLink(t, n.h, "lo")
	pod := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(n.pod(), 32))}
	must(t, n.h.AddrAdd(lo, pod), "address lo")
	for _, o := range others {
		r := &netlink.Route{Dst: ipNet(netip.MustParsePrefix(o)), Gw: net.ParseIP(router)}
		must(t, n.h.RouteAdd(r), "route %s via %s", o, router)
	}
	n.b = newBackend(t, n.h, nsh, Config{Underlay: "eth0", LocalIP: n.ip, Addr: n.block.Addr(), CrossSubnet: cross})
	var err error
	n.mac, err = n.b.Ensure()
	must(t, err, "ensure vtep on %s", name)
	return n
}

// host adds a namespace with eth0 on bridge br, carrying the addresses addrs (CIDRs), and
// returns its name, handle and a netlink handle in it.
func (u *underlay) host(t testing.TB, br string, addrs ...string) (string, ns.NetNS, *netlink.Handle) {
	t.Helper()
	name, nsh := netnstest.New(t)
	h := handleAt(t, nsh)
	u.ports++
	port := fmt.Sprintf("p%d", u.ports)
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: port},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(int(nsh.Fd())),
	}
	must(t, u.h.LinkAdd(veth), "add veth %s", port)
	bridge, err := u.h.LinkByName(br)
	must(t, err, "look up bridge %s", br)
	must(t, u.h.LinkSetMaster(veth, bridge), "attach %s to %s", port, br)
	must(t, u.h.LinkSetUp(veth), "set %s up", port)
	eth0 := upLink(t, h, "eth0")
	for _, addr := range addrs {
		a := mustAddr(t, addr)
		if a.IP.To4() == nil {
			a.Flags |= unix.IFA_F_NODAD
		}
		must(t, h.AddrAdd(eth0, a), "address eth0")
	}
	// Until the kernel has processed the carrier of both veth ends (linkwatch), the links
	// drop what they are given: wait, so that the first packet does not race it.
	waitOperUp(t, h, "eth0")
	waitOperUp(t, u.h, port)
	return name, nsh, h
}

// pod is the pod address of n, on its lo.
func (n *testNode) pod() netip.Addr { return n.block.Addr().Next() }

// peer is n as the other nodes see it.
func (n *testNode) peer() Peer {
	return Peer{Node: n.name, UnderlayIP: n.ip, VTEPMAC: n.mac, VTEPAddr: n.block.Addr(), Blocks: []netip.Prefix{n.block}}
}

// peersOf returns every node of nodes other than self as a peer.
func peersOf(self *testNode, nodes ...*testNode) []Peer {
	var peers []Peer
	for _, n := range nodes {
		if n != self {
			peers = append(peers, n.peer())
		}
	}
	return peers
}

// ping sends one ping from from's pod address to to's pod address.
func ping(from, to *testNode) error {
	out, err := exec.Command("ip", "netns", "exec", from.name,
		"ping", "-c1", "-W1", "-I", from.pod().String(), to.pod().String()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ping %s from %s: %w: %s", to.pod(), from.pod(), err, out)
	}
	return nil
}

// dataplane is what a node's kernel holds for its peers, in iproute2's words, sorted.
type dataplane struct {
	routes, neighs, fdb []string
}

// dataplaneOf reads the routes of RouteProtocol and the VTEP's permanent neighbours and FDB
// entries in h's namespace, independently of the code under test.
func dataplaneOf(t testing.TB, h *netlink.Handle) dataplane {
	t.Helper()
	var d dataplane
	filter := &netlink.Route{Protocol: RouteProtocol}
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_PROTOCOL)
	must(t, err, "list routes")
	for _, r := range routes {
		dev, lerr := h.LinkByIndex(r.LinkIndex)
		must(t, lerr, "look up link %d", r.LinkIndex)
		s := fmt.Sprintf("%s via %s dev %s", r.Dst, r.Gw, dev.Attrs().Name)
		if r.Flags&int(netlink.FLAG_ONLINK) != 0 {
			s += " onlink"
		}
		d.routes = append(d.routes, s)
	}
	vtep, err := h.LinkByName(DefaultName)
	must(t, err, "look up vtep")
	neighs, err := h.NeighList(vtep.Attrs().Index, netlink.FAMILY_V4)
	must(t, err, "list neighbours")
	for _, nb := range neighs {
		if nb.State == netlink.NUD_PERMANENT {
			d.neighs = append(d.neighs, fmt.Sprintf("%s lladdr %s", nb.IP, nb.HardwareAddr))
		}
	}
	fdb, err := h.NeighList(vtep.Attrs().Index, unix.AF_BRIDGE)
	must(t, err, "list fdb")
	for _, e := range fdb {
		if e.State == netlink.NUD_PERMANENT {
			d.fdb = append(d.fdb, fmt.Sprintf("%s dst %s", e.HardwareAddr, e.IP))
		}
	}
	slices.Sort(d.routes)
	slices.Sort(d.neighs)
	slices.Sort(d.fdb)
	return d
}

// vxlanDataplane is what a node wants for peers reached over VXLAN.
func vxlanDataplane(peers ...*testNode) dataplane {
	var d dataplane
	for _, p := range peers {
		d.routes = append(d.routes, fmt.Sprintf("%s via %s dev loom.vxlan onlink", p.block, p.block.Addr()))
		d.neighs = append(d.neighs, fmt.Sprintf("%s lladdr %s", p.block.Addr(), p.mac))
		d.fdb = append(d.fdb, fmt.Sprintf("%s dst %s", p.mac, p.ip))
	}
	slices.Sort(d.routes)
	slices.Sort(d.neighs)
	slices.Sort(d.fdb)
	return d
}

func (d dataplane) String() string {
	return fmt.Sprintf("routes:\n\t%s\nneighbours:\n\t%s\nfdb:\n\t%s",
		strings.Join(d.routes, "\n\t"), strings.Join(d.neighs, "\n\t"), strings.Join(d.fdb, "\n\t"))
}

func (d dataplane) equal(o dataplane) bool {
	return slices.Equal(d.routes, o.routes) && slices.Equal(d.neighs, o.neighs) && slices.Equal(d.fdb, o.fdb)
}

// syncPlan runs a sync and returns the writes it made, failing the test on any error.
func syncPlan(t testing.TB, b *Backend, peers []Peer) plan {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	p, err := b.sync(peers)
	must(t, err, "sync")
	return p
}

// loneNode is a namespace with an underlay link (eth0, one end of a veth pair whose other end
// stays in the same namespace) and a Backend, for tests that need no traffic.
func loneNode(t testing.TB, cfg Config) (string, *netlink.Handle, *Backend) {
	t.Helper()
	name, nsh := netnstest.New(t)
	h := handleAt(t, nsh)
	must(t, h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0p"}), "add veth")
	eth0 := upLink(t, h, "eth0")
	upLink(t, h, "eth0p")
	must(t, h.AddrAdd(eth0, mustAddr(t, "198.51.100.1/24")), "address eth0")
	cfg.Underlay, cfg.LocalIP = "eth0", ip("198.51.100.1")
	if !cfg.Addr.IsValid() {
		cfg.Addr = ip("10.99.1.0")
	}
	return name, h, newBackend(t, h, nsh, cfg)
}

func newBackend(t testing.TB, h *netlink.Handle, nsh ns.NetNS, cfg Config) *Backend {
	t.Helper()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	target := netns.NsHandle(nsh.Fd())
	cfg.Netns = &target
	b, err := New(h, cfg, log)
	must(t, err, "new backend")
	return b
}

// handleAt returns a netlink handle in the namespace nsh, closed when the test ends.
func handleAt(t testing.TB, nsh ns.NetNS) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(netns.NsHandle(nsh.Fd()))
	must(t, err, "netlink handle in %s", nsh.Path())
	t.Cleanup(h.Close)
	return h
}

func upLink(t testing.TB, h *netlink.Handle, name string) netlink.Link {
	t.Helper()
	link, err := h.LinkByName(name)
	must(t, err, "look up %s", name)
	must(t, h.LinkSetUp(link), "set %s up", name)
	return link
}

// waitOperUp waits until the link name reports operational state up.
func waitOperUp(t testing.TB, h *netlink.Handle, name string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		link, err := h.LinkByName(name)
		must(t, err, "look up %s", name)
		if link.Attrs().OperState == netlink.OperUp {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("link %s: operational state %s after 5s, want up", name, link.Attrs().OperState)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func mustAddr(t testing.TB, cidr string) *netlink.Addr {
	t.Helper()
	a, err := netlink.ParseAddr(cidr)
	must(t, err, "parse %s", cidr)
	return a
}

func must(t testing.TB, err error, format string, args ...any) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", fmt.Sprintf(format, args...), err)
	}
}
