package policy

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// TestLinkRulesOnASharedSegment puts three pods on one link layer, as macvlan interfaces in
// bridge mode on one master: acme's a1 and a2 and globex's g1. What passes and what does
// not comes from the README's tenant rules, not from the compiler: pods of one tenant reach
// each other by every frame, pods of two tenants by none (IPv4, IPv6 global and link-local,
// ARP, a frame of another ethertype), and no pod sends from a hardware or network address it
// was not given, also from a packet socket.
func TestLinkRulesOnASharedSegment(t *testing.T) {
	nft := nftForTest(t)
	ctx := context.Background()
	node := applyNetns(t)
	applyExec(t, node, "ip", "link", "add", "lanpf", "type", "veth", "peer", "name", "lanpf-peer")
	applyExec(t, node, "ip", "link", "set", "lanpf", "up")
	applyExec(t, node, "ip", "link", "set", "lanpf-peer", "up")

	type lanPod struct {
		key  PodKey
		path string
		mac  MAC
		v4   netip.Addr
		v6   netip.Addr
		ll   netip.Addr
	}
	mk := func(ns, name, tenant string, n byte) *lanPod {
		p := &lanPod{key: PodKey{ns, name}, path: applyNetns(t), mac: MAC{0x0a, 0x58, 0, 0, 0x50, n},
			v4: netip.AddrFrom4([4]byte{192, 168, 50, n}), v6: netip.MustParseAddr("fd00:50::" + string('0'+rune(n)))}
		mv := "lanmv" + string('0'+rune(n))
		applyExec(t, node, "ip", "link", "add", mv, "link", "lanpf", "type", "macvlan", "mode", "bridge")
		applyExec(t, node, "ip", "link", "set", mv, "netns", strings.TrimPrefix(p.path, "/run/netns/"))
		for _, cmd := range [][]string{
			{"ip", "link", "set", mv, "name", "net1"},
			{"ip", "link", "set", "net1", "address", p.mac.String()},
			{"ip", "addr", "add", p.v4.String() + "/24", "dev", "net1"},
			{"ip", "addr", "add", p.v6.String() + "/64", "dev", "net1", "nodad"},
			{"ip", "link", "set", "net1", "up"},
			{"ip", "link", "set", "lo", "up"},
		} {
			applyExec(t, p.path, cmd...)
		}
		p.ll = linkLocalOf(t, p.path, "net1")
		return p
	}
	settle := func(p *lanPod) {
		// Duplicate address detection leaves the link-local address tentative, and unusable
		// as a source, for a second or so.
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if !strings.Contains(applyExec(t, p.path, "ip", "-6", "addr", "show", "dev", "net1", "tentative"), "inet6") {
				return
			}
		}
		t.Fatalf("%s: the link-local address stays tentative", p.key)
	}
	a1, a2, g1 := mk("acme", "a1", "acme", 1), mk("acme", "a2", "acme", 2), mk("globex", "g1", "globex", 3)
	pods := []*lanPod{a1, a2, g1}
	for _, p := range pods {
		settle(p)
	}

	s := Snapshot{
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")},
		Tenants:      []Tenant{{Name: "acme"}, {Name: "globex"}},
		Namespaces:   []Namespace{{Name: "acme", Tenant: "acme"}, {Name: "globex", Tenant: "globex"}},
		Networks:     []Network{{ID: "infra/lan", Subnets: []netip.Prefix{netip.MustParsePrefix("192.168.50.0/24"), netip.MustParsePrefix("fd00:50::/64")}}},
	}
	for _, p := range pods {
		s.Pods = append(s.Pods, Pod{PodKey: p.key, Node: "n1", Tenant: p.key.Namespace, Endpoints: []Endpoint{{
			Network: "infra/lan", Interface: "net1", IPs: []netip.Addr{p.v4, p.v6}, MAC: p.mac, LinkLocal: []netip.Addr{p.ll},
		}}})
	}
	rs := Compile(s, "n1")
	for _, p := range pods {
		tbl := rs.Pods[p.key]
		if err := NewApplier(nft, p.path, nil).Apply(ctx, Render(tbl, PodTable)); err != nil {
			t.Fatal(err)
		}
		if err := NewLinkApplier(nft, p.path, nil).Apply(ctx, RenderLinks(tbl)); err != nil {
			t.Fatal(err)
		}
	}

	// Network-layer traffic, both families and link-local.
	for _, tc := range []struct {
		from, to *lanPod
		want     bool
	}{{a1, a2, true}, {a2, a1, true}, {a1, g1, false}, {g1, a1, false}, {g1, a2, false}} {
		for _, dst := range []string{tc.to.v4.String(), tc.to.v6.String(), tc.to.ll.String() + "%net1"} {
			if got := applyPing(tc.from.path, dst); got != tc.want {
				t.Errorf("ping %s → %s (%s): answered %v, want %v", tc.from.key, tc.to.key, dst, got, tc.want)
			}
		}
	}

	// A broadcast frame of an ethertype no one registers and an ARP request: same tenant in,
	// other tenant out.
	const etherExperimental = 0x88b5
	for _, tc := range []struct {
		from, to *lanPod
		want     bool
	}{{a2, a1, true}, {g1, a1, false}, {a1, g1, false}} {
		frame := ethernetFrame(broadcastMAC, tc.from.mac, etherExperimental, []byte("loom link test"))
		if got := frameArrives(t, tc.from.path, tc.to.path, etherExperimental, frame, nil); got != tc.want {
			t.Errorf("ethertype 0x%x broadcast %s → %s: arrived %v, want %v", etherExperimental, tc.from.key, tc.to.key, got, tc.want)
		}
		req := ethernetFrame(broadcastMAC, tc.from.mac, unix.ETH_P_ARP, arpPacket(1, tc.from.mac, tc.from.v4, MAC{}, tc.to.v4))
		isReply := func(b []byte) bool { return len(b) >= 8 && binary.BigEndian.Uint16(b[6:8]) == 2 }
		if got := frameArrives(t, tc.from.path, tc.from.path, unix.ETH_P_ARP, req, isReply); got != tc.want {
			t.Errorf("ARP request %s → %s: answered %v, want %v", tc.from.key, tc.to.key, got, tc.want)
		}
	}

	// Forged sources from a packet socket in a1, each next to the honest frame, which passes.
	forged := MAC{0x0a, 0x58, 0, 0, 0x50, 9}
	for _, tc := range []struct {
		name          string
		honest, lying []byte
		proto         uint16
	}{{
		name:   "source MAC",
		honest: ethernetFrame(a2.mac, a1.mac, etherExperimental, []byte("x")),
		lying:  ethernetFrame(a2.mac, forged, etherExperimental, []byte("x")),
		proto:  etherExperimental,
	}, {
		name:   "ARP sender address",
		honest: ethernetFrame(a2.mac, a1.mac, unix.ETH_P_ARP, arpPacket(2, a1.mac, a1.v4, a2.mac, a2.v4)),
		lying:  ethernetFrame(a2.mac, a1.mac, unix.ETH_P_ARP, arpPacket(2, a1.mac, netip.MustParseAddr("192.168.50.9"), a2.mac, a2.v4)),
		proto:  unix.ETH_P_ARP,
	}, {
		name:   "ARP sender hardware address",
		honest: ethernetFrame(a2.mac, a1.mac, unix.ETH_P_ARP, arpPacket(2, a1.mac, a1.v4, a2.mac, a2.v4)),
		lying:  ethernetFrame(a2.mac, a1.mac, unix.ETH_P_ARP, arpPacket(2, forged, a1.v4, a2.mac, a2.v4)),
		proto:  unix.ETH_P_ARP,
	}, {
		name:   "IPv4 source",
		honest: ethernetFrame(a2.mac, a1.mac, unix.ETH_P_IP, udp4(a1.v4, a2.v4)),
		lying:  ethernetFrame(a2.mac, a1.mac, unix.ETH_P_IP, udp4(netip.MustParseAddr("192.168.50.9"), a2.v4)),
		proto:  unix.ETH_P_IP,
	}, {
		name:   "IPv6 source",
		honest: ethernetFrame(a2.mac, a1.mac, unix.ETH_P_IPV6, udp6(a1.v6, a2.v6)),
		lying:  ethernetFrame(a2.mac, a1.mac, unix.ETH_P_IPV6, udp6(netip.MustParseAddr("fd00:50::9"), a2.v6)),
		proto:  unix.ETH_P_IPV6,
	}, {
		name:   "IPv6 link-local source",
		honest: ethernetFrame(a2.mac, a1.mac, unix.ETH_P_IPV6, udp6(a1.ll, a2.ll)),
		lying:  ethernetFrame(a2.mac, a1.mac, unix.ETH_P_IPV6, udp6(g1.ll, a2.ll)),
		proto:  unix.ETH_P_IPV6,
	}, {
		name:   "neighbour advertisement target",
		honest: ethernetFrame(a2.mac, a1.mac, unix.ETH_P_IPV6, neighborAdvert(a1.ll, a2.ll, a1.v6)),
		lying:  ethernetFrame(a2.mac, a1.mac, unix.ETH_P_IPV6, neighborAdvert(a1.ll, a2.ll, netip.MustParseAddr("fd00:50::9"))),
		proto:  unix.ETH_P_IPV6,
	}} {
		if !frameArrives(t, a1.path, a2.path, tc.proto, tc.honest, nil) {
			t.Errorf("%s: the honest frame from a1 did not reach a2", tc.name)
		}
		if frameArrives(t, a1.path, a2.path, tc.proto, tc.lying, nil) {
			t.Errorf("%s: a forged frame from a1 reached a2", tc.name)
		}
		if claimedFrameArrives(t, a1.path, a2.path, tc.proto, 0x88b5, tc.lying, nil) {
			t.Errorf("%s: a forged frame from a1 that its socket claimed was of another ethertype reached a2", tc.name)
		}
	}
}

var broadcastMAC = MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// linkLocalOf returns the IPv6 link-local address of ifname in the namespace at path.
func linkLocalOf(t *testing.T, path, ifname string) netip.Addr {
	t.Helper()
	var ll netip.Addr
	err := ns.WithNetNSPath(path, func(ns.NetNS) error {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().IsLinkLocalUnicast() {
				ll = p.Addr()
			}
		}
		return nil
	})
	if err != nil || !ll.IsValid() {
		t.Fatalf("link-local address of %s in %s: %v", ifname, path, err)
	}
	return ll
}

// frameArrives sends frame from net1 of the namespace at from and reports whether a frame of
// ethertype proto that match accepts (nil: the same bytes) reaches a packet socket bound to
// that ethertype on net1 of the namespace at to. A socket bound to one ethertype is handed a
// frame only after the interface's ingress hook, as the stack is.
func frameArrives(t *testing.T, from, to string, proto uint16, frame []byte, match func([]byte) bool) bool {
	t.Helper()
	return claimedFrameArrives(t, from, to, proto, proto, frame, match)
}

// claimedFrameArrives is frameArrives with the packet socket claiming the frame is of
// ethertype claim, whatever its header says: the kernel takes the sender's word for it.
func claimedFrameArrives(t *testing.T, from, to string, proto, claim uint16, frame []byte, match func([]byte) bool) bool {
	t.Helper()
	if match == nil {
		payload := frame[14:]
		match = func(b []byte) bool { return len(b) >= len(payload) && string(b[:len(payload)]) == string(payload) }
	}
	rx := packetSocket(t, to, proto)
	tx := packetSocket(t, from, proto)
	err := unix.Sendto(tx.fd, frame, 0, &unix.SockaddrLinklayer{Protocol: htons(claim), Ifindex: tx.ifindex, Halen: 6})
	switch {
	case errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EPERM):
		return false // dropped on the sender's egress hook
	case err != nil:
		t.Fatalf("send a frame from %s: %v", from, err)
	}
	deadline := time.Now().Add(300 * time.Millisecond)
	buf := make([]byte, 2048)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(rx.fd, buf, unix.MSG_DONTWAIT)
		if err == nil && n >= 14 && match(buf[14:n]) {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return false
}

type rawSocket struct {
	fd      int
	ifindex int
}

// packetSocket opens a packet socket for ethertype proto on net1 of the namespace at path.
func packetSocket(t *testing.T, path string, proto uint16) rawSocket {
	t.Helper()
	var s rawSocket
	err := ns.WithNetNSPath(path, func(ns.NetNS) error {
		ifc, err := net.InterfaceByName("net1")
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(htons(proto)))
		if err != nil {
			return err
		}
		s = rawSocket{fd: fd, ifindex: ifc.Index}
		// SOCK_DGRAM hands back the payload; sending goes out as SOCK_RAW would, so the
		// socket sends with a header of its own: switch to a raw one for sending.
		unix.Close(fd)
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(proto)))
		if err != nil {
			return err
		}
		s.fd = fd
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: ifc.Index})
	})
	if err != nil {
		t.Fatalf("packet socket in %s: %v", path, err)
	}
	t.Cleanup(func() { unix.Close(s.fd) })
	return s
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// ethernetFrame is an Ethernet II frame.
func ethernetFrame(dst, src MAC, ethertype uint16, payload []byte) []byte {
	b := append(append(append([]byte{}, dst[:]...), src[:]...), byte(ethertype>>8), byte(ethertype))
	return append(b, payload...)
}

// arpPacket is an Ethernet/IPv4 ARP message: op 1 request, 2 reply.
func arpPacket(op uint16, sha MAC, spa netip.Addr, tha MAC, tpa netip.Addr) []byte {
	b := []byte{0, 1, 8, 0, 6, 4, byte(op >> 8), byte(op)}
	s4, t4 := spa.As4(), tpa.As4()
	b = append(append(b, sha[:]...), s4[:]...)
	return append(append(b, tha[:]...), t4[:]...)
}

// udp4 is an IPv4 UDP datagram to port 9 with a marker payload.
func udp4(src, dst netip.Addr) []byte {
	payload := []byte("loom spoof " + src.String())
	u := udpHeader(len(payload))
	ip := []byte{0x45, 0, 0, 0, 0, 1, 0, 0, 64, unix.IPPROTO_UDP, 0, 0}
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(u)+len(payload)))
	s4, d4 := src.As4(), dst.As4()
	ip = append(append(ip, s4[:]...), d4[:]...)
	binary.BigEndian.PutUint16(ip[10:], checksum(ip))
	return append(append(ip, u...), payload...)
}

// udp6 is an IPv6 UDP datagram to port 9 with a marker payload and a valid checksum.
func udp6(src, dst netip.Addr) []byte {
	payload := []byte("loom spoof " + src.String())
	u := udpHeader(len(payload))
	return ipv6Packet(src, dst, unix.IPPROTO_UDP, append(u, payload...), 6)
}

// neighborAdvert is an IPv6 neighbour advertisement for target, with a valid checksum.
func neighborAdvert(src, dst, target netip.Addr) []byte {
	t16 := target.As16()
	icmp := append([]byte{136, 0, 0, 0, 0x60, 0, 0, 0}, t16[:]...)
	return ipv6Packet(src, dst, unix.IPPROTO_ICMPV6, icmp, 2)
}

// ipv6Packet wraps an upper-layer message whose checksum sits at csumAt, filling it in.
func ipv6Packet(src, dst netip.Addr, next byte, upper []byte, csumAt int) []byte {
	s16, d16 := src.As16(), dst.As16()
	pseudo := append(append(append([]byte{}, s16[:]...), d16[:]...), 0, 0, byte(len(upper)>>8), byte(len(upper)), 0, 0, 0, next)
	binary.BigEndian.PutUint16(upper[csumAt:], checksum(append(pseudo, upper...)))
	ip := []byte{0x60, 0, 0, 0, byte(len(upper) >> 8), byte(len(upper)), next, 255}
	return append(append(append(ip, s16[:]...), d16[:]...), upper...)
}

func udpHeader(payloadLen int) []byte {
	u := []byte{0x30, 0x39, 0, 9, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(u[4:], uint16(8+payloadLen))
	return u
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
