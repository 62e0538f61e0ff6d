// Package vxlan is the dataplane of Loom's primary network in the vxlan and vxlan-crosssubnet
// modes: it owns the node's VTEP (loom.vxlan) and the routes, neighbour entries and FDB entries
// that carry traffic for the pod blocks of every other node. It does not learn where peers are:
// the caller tells it (Sync), and it makes the kernel match.
package vxlan

// Design notes.
//
// The model is flannel's VXLAN backend (pkg/backend/vxlan), adapted to nodes that own several
// address blocks. Each node has one VXLAN device, the VTEP, with learning off and no multicast
// group: nothing is flooded and nothing is learned from the wire. The VTEP carries a single /32,
// the node's VTEP address, which the caller takes from the node's first pod block. For every
// remote block three kernel objects make the overlay work:
//
//	route   block via <peer VTEP addr> dev loom.vxlan onlink     (our own route protocol)
//	neigh   <peer VTEP addr> lladdr <peer VTEP MAC> dev loom.vxlan permanent
//	fdb     <peer VTEP MAC> dst <peer underlay IP> dev loom.vxlan self permanent
//
// The route sends the packet into the VTEP with the peer's VTEP address as next hop; the
// neighbour entry resolves that next hop to the peer's VTEP MAC without ARP; the FDB entry tells
// the VTEP which underlay address to encapsulate towards. A peer with several blocks needs one
// neighbour and one FDB entry, and one route per block.
//
// Flannel writes these per event (add when a lease appears, delete when it expires; its first
// versions answered the kernel's L2/L3 miss notifications instead). Loom reconciles:
// Sync takes the complete list of peers, reads the kernel state once (our routes, the
// neighbours and FDB entries of the VTEP), computes the difference and writes only that. A Sync
// that changes nothing writes nothing, and the same code repairs routes or entries deleted by
// hand. Routes carry RouteProtocol so that stale ones are recognised without any state kept on
// disk; the VTEP's neighbour and FDB tables belong to this package entirely.
//
// In vxlan-crosssubnet mode (Calico's "CrossSubnet"), a peer whose underlay address is on the
// same subnet as ours is reached without encapsulation: its blocks get a route via its underlay
// address on the underlay link, and it gets no neighbour or FDB entry. The subnet is the prefix
// of the local underlay address on the underlay link, read from the kernel on every Sync.
// Flannel's DirectRouting asks the kernel for a route to each peer instead; a prefix test costs
// no request per peer and agrees with it on a flat underlay. A peer reachable on-link through
// some other prefix is taken as remote and gets VXLAN, which still works. Pods keep the VXLAN
// MTU in this mode, so that their packets fit either path.
//
// The VTEP's MAC is derived from the node's underlay address (0e:6c followed by the four bytes
// of the IPv4 address: locally administered, unicast), not left to the kernel's random choice.
// The caller publishes it on the Node object and every other node programs it, so it must not
// change when the VTEP is recreated (deleted by hand, or found with a wrong VNI, port or local
// address) or when loomd restarts; deriving it makes that true without persisting anything. It changes only if the node's underlay address changes, and then
// Ensure returns the new one for the caller to republish.
//
// Run repairs what others break: it watches link updates in the VTEP's namespace and, when the
// VTEP is deleted, goes down or changes, recreates it and replays the last Sync (the kernel
// removes a device's routes and entries with it). A periodic full resync catches what no link
// event reports, such as a route deleted by hand.
//
// The VTEP accepts every VXLAN packet that reaches its UDP port with the right VNI, from
// anyone: learning off only stops it from learning where senders are. A pod could therefore
// send UDP to its node's port 4789 with a VXLAN header and any inner frame (from a pod of
// another tenant, to any pod of the node) and have it delivered as if it came from a peer.
// The guard, "table inet loom_underlay", keeps that to the other nodes:
//
//	set peers4, peers6                  the peers' underlay addresses (both families)
//	input:   udp dport 4789 → iifname "loom*" drop      pods' veths, and the VTEP itself
//	                          ip saddr != @peers4 drop
//	                          ip6 saddr != @peers6 drop
//	forward: udp dport 4789 iifname "loom*" drop        a pod's VXLAN to other nodes
//
// The UDP stack hands a datagram to the VTEP's encapsulation socket after netfilter's input
// hook (and IPv4 reassembles fragments before it), so a drop there is final whatever other
// tables accept. The pod rule comes first, so a pod that forges a node's source address does
// not pass either; the VTEP's name matches it too, so that no packet decapsulated from one
// VXLAN packet can carry another into the VTEP. The forward rule keeps a pod from sending, through
// its node, VXLAN that another node would take for a peer's (Calico drops VXLAN from workloads
// in the same way, unless allowVXLANPacketsFromWorkloads). Every packet costs the jump's port
// test, VXLAN packets one set lookup more. The set holds every peer Sync is given, of any
// family, also those it leaves out for what they claim (they are nodes all the same).
//
// Sync rewrites the table, in one nft transaction that replaces it whole, when the set of
// addresses changed; Run's repairs rewrite it every time. Ensure installs it, admitting no one,
// before it creates the VTEP, unless the table is there already: after a restart the table of
// the last run keeps admitting the peers until the first Sync. Like the VTEP and its routes,
// the table stays when loomd stops: stopping must not interrupt traffic, or open the port.
// nft runs as policy's Applier runs it: as a child of an OS thread switched into the
// backend's namespace.
//
// Only IPv4 is supported for the underlay, the VTEP addresses and the blocks; the guard
// already takes IPv6 underlay addresses, and drops VXLAN over IPv6 from anyone else.

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Defaults for the fields of Config left at zero.
const (
	DefaultName = "loom.vxlan"
	DefaultVNI  = 1
	DefaultPort = 4789
)

// RouteProtocol marks the routes this package installs (rtm_protocol), so that Sync can tell
// its own routes from everyone else's and delete those that no longer belong. No other part of
// Loom may install routes with it.
const RouteProtocol netlink.RouteProtocol = 108

// overhead is what VXLAN over IPv4 adds to each packet: outer IPv4 (20), UDP (8), VXLAN (8)
// and inner Ethernet (14) headers.
const overhead = 50

// Overhead is the number of bytes VXLAN encapsulation over IPv4 adds to every packet; the pod
// MTU is the underlay MTU minus Overhead.
func Overhead() int { return overhead }

// Config describes the local node's VTEP. Zero values of Name, VNI, Port and MTU mean the
// defaults.
type Config struct {
	// Name is the VTEP's link name; DefaultName when empty.
	Name string
	// VNI is the VXLAN network identifier; DefaultVNI when zero.
	VNI int
	// Port is the UDP destination port; DefaultPort when zero.
	Port int
	// MTU is the VTEP's MTU; the underlay link's MTU minus Overhead when zero.
	MTU int
	// Underlay is the name of the link that carries encapsulated traffic, e.g. eth0.
	Underlay string
	// LocalIP is the node's underlay address: the VTEP's source address, and what peers send to.
	LocalIP netip.Addr
	// Addr is this node's VTEP address, configured as a /32 on the VTEP.
	Addr netip.Addr
	// CrossSubnet selects vxlan-crosssubnet mode: peers on the underlay subnet of LocalIP are
	// reached by direct routes, without encapsulation.
	CrossSubnet bool
	// Netns is the network namespace the backend's netlink handle talks to, where Run
	// subscribes to link updates; nil means the current namespace. The handle it points to
	// must stay open while Run runs.
	Netns *netns.NsHandle
	// Nft is the nft binary that writes the GuardTable; "nft" from $PATH when empty.
	Nft string
}

// withDefaults returns c with zero fields defaulted, or an error naming the first invalid one.
func (c Config) withDefaults() (Config, error) {
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.VNI == 0 {
		c.VNI = DefaultVNI
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.Nft == "" {
		c.Nft = "nft"
	}
	switch {
	case len(c.Name) > 15:
		return c, fmt.Errorf("vtep name %q: longer than 15 bytes", c.Name)
	case c.VNI < 1 || c.VNI > 1<<24-1:
		return c, fmt.Errorf("vni %d: out of range 1-16777215", c.VNI)
	case c.Port < 1 || c.Port > 65535:
		return c, fmt.Errorf("udp port %d: out of range 1-65535", c.Port)
	case c.MTU != 0 && c.MTU < 68:
		return c, fmt.Errorf("mtu %d: below the IPv4 minimum of 68", c.MTU)
	case c.Underlay == "":
		return c, fmt.Errorf("underlay link: not set")
	case !c.LocalIP.Is4():
		return c, fmt.Errorf("local underlay address %v: not an IPv4 address", c.LocalIP)
	case !c.Addr.Is4():
		return c, fmt.Errorf("vtep address %v: not an IPv4 address", c.Addr)
	}
	return c, nil
}

// Peer is a remote node as the local node sees it: where to send encapsulated traffic, which
// VTEP answers there, and which pod blocks it owns.
type Peer struct {
	// Node is the peer's Kubernetes node name; it identifies the peer in errors and logs.
	Node string
	// UnderlayIP is the peer's underlay address, the outer destination of encapsulated packets.
	UnderlayIP netip.Addr
	// VTEPMAC is the MAC address of the peer's VTEP.
	VTEPMAC net.HardwareAddr
	// VTEPAddr is the address on the peer's VTEP, the next hop of routes to its blocks.
	VTEPAddr netip.Addr
	// Blocks are the pod address blocks the peer owns.
	Blocks []netip.Prefix
}

// clone returns a copy of p that shares no memory with it.
func (p Peer) clone() Peer {
	p.VTEPMAC = append(net.HardwareAddr(nil), p.VTEPMAC...)
	p.Blocks = append([]netip.Prefix(nil), p.Blocks...)
	return p
}

// Backend programs the VXLAN dataplane of one node through one netlink handle. Its methods are
// safe for concurrent use.
type Backend struct {
	h   *netlink.Handle
	cfg Config
	log *slog.Logger

	// mu serialises every change to the kernel, and guards peers and synced.
	mu     sync.Mutex
	peers  []Peer // the argument of the last Sync, replayed by Run's repairs
	synced bool   // whether Sync has been called, so that an empty peers is meaningful

	status atomic.Pointer[Status] // what the last sync wanted, for Status
	guard  *guard                 // the GuardTable; used with mu held
}

// New returns a Backend that programs the namespace h talks to, which cfg.Netns must name
// unless it is the current one. A nil log discards messages.
func New(h *netlink.Handle, cfg Config, log *slog.Logger) (*Backend, error) {
	if h == nil {
		return nil, fmt.Errorf("create vxlan backend: nil netlink handle")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("create vxlan backend: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Backend{h: h, cfg: cfg, log: log.With("ifname", cfg.Name), guard: newGuard(cfg)}, nil
}
