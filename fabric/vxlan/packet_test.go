package vxlan

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"

	"github.com/loom-cni/loom/internal/netnstest"
)

// Hand-built packets for the guard's tests, written from the RFCs rather than from anything
// in this package: VXLAN (RFC 7348, section 5), IPv4 (RFC 791), IPv6 (RFC 8200) and UDP with
// its pseudo-header checksum (RFC 768, RFC 8200 section 8.1).

// innerPort is the UDP port of the inner datagrams a test sends to a node's pods.
const innerPort = 7000

// vxlanPayload is the UDP payload of a VXLAN packet: the 8-byte header with the I flag and
// vni, then the inner Ethernet frame from srcMAC to dstMAC carrying a UDP datagram from src
// to dst, port innerPort, with payload msg. The inner packet is IPv4 or IPv6 as dst is.
func vxlanPayload(vni int, srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, msg string) []byte {
	hdr := []byte{0x08, 0, 0, 0, byte(vni >> 16), byte(vni >> 8), byte(vni), 0}
	eth := append(append(append([]byte(nil), dstMAC...), srcMAC...), 0, 0)
	if dst.Is4() {
		binary.BigEndian.PutUint16(eth[12:], unix.ETH_P_IP)
	} else {
		binary.BigEndian.PutUint16(eth[12:], unix.ETH_P_IPV6)
	}
	inner := ipPacket(src, dst, udpDatagram(src, dst, innerPort, innerPort, []byte(msg)))
	return append(append(hdr, eth...), inner...)
}

// udpDatagram is a UDP header and payload with the checksum over the pseudo-header of src and
// dst (mandatory over IPv6, and used over IPv4 too).
func udpDatagram(src, dst netip.Addr, sport, dport int, payload []byte) []byte {
	d := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(d[0:], uint16(sport))
	binary.BigEndian.PutUint16(d[2:], uint16(dport))
	binary.BigEndian.PutUint16(d[4:], uint16(len(d)))
	copy(d[8:], payload)
	var pseudo []byte
	pseudo = append(pseudo, src.AsSlice()...)
	pseudo = append(pseudo, dst.AsSlice()...)
	if src.Is4() {
		pseudo = append(pseudo, 0, unix.IPPROTO_UDP, byte(len(d)>>8), byte(len(d)))
	} else {
		pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(len(d)))
		pseudo = append(pseudo, 0, 0, 0, unix.IPPROTO_UDP)
	}
	sum := checksum(append(pseudo, d...))
	if sum == 0 {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(d[6:], sum)
	return d
}

// ipPacket wraps a UDP datagram in an IPv4 or IPv6 header from src to dst.
func ipPacket(src, dst netip.Addr, udp []byte) []byte {
	if src.Is4() {
		h := make([]byte, 20)
		h[0] = 0x45
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(udp)))
		h[8], h[9] = 64, unix.IPPROTO_UDP
		copy(h[12:], src.AsSlice())
		copy(h[16:], dst.AsSlice())
		binary.BigEndian.PutUint16(h[10:], checksum(h))
		return append(h, udp...)
	}
	h := make([]byte, 40)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(udp)))
	h[6], h[7] = unix.IPPROTO_UDP, 64
	copy(h[8:], src.AsSlice())
	copy(h[24:], dst.AsSlice())
	return append(h, udp...)
}

// checksum is the Internet checksum (RFC 1071).
func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// sendUDP sends payload from the namespace nsName to dst:dport with an ordinary UDP socket, as
// any process may: no capability needed. The kernel picks the source address.
func sendUDP(nsName string, dst netip.Addr, dport int, payload []byte) error {
	return ns.WithNetNSPath(netnstest.Path(nsName), func(ns.NetNS) error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, uint16(dport))))
		if err != nil {
			return fmt.Errorf("dial udp %s:%d in %s: %w", dst, dport, nsName, err)
		}
		defer c.Close()
		if _, err := c.Write(payload); err != nil {
			return fmt.Errorf("send to %s:%d in %s: %w", dst, dport, nsName, err)
		}
		return nil
	})
}

// sendForged sends a UDP datagram with any source address from the namespace nsName through a
// raw socket, as a process with CAP_NET_RAW (a container's default) may.
func sendForged(nsName string, src, dst netip.Addr, dport int, payload []byte) error {
	pkt := ipPacket(src, dst, udpDatagram(src, dst, 40000, dport, payload))
	return ns.WithNetNSPath(netnstest.Path(nsName), func(ns.NetNS) error {
		family := unix.AF_INET
		if dst.Is6() {
			family = unix.AF_INET6
		}
		fd, err := unix.Socket(family, unix.SOCK_RAW, unix.IPPROTO_RAW)
		if err != nil {
			return fmt.Errorf("open raw socket in %s: %w", nsName, err)
		}
		defer unix.Close(fd)
		var to unix.Sockaddr
		if dst.Is4() {
			to = &unix.SockaddrInet4{Addr: dst.As4()}
		} else {
			to = &unix.SockaddrInet6{Addr: dst.As16()}
		}
		if err := unix.Sendto(fd, pkt, 0, to); err != nil {
			return fmt.Errorf("send forged %s → %s in %s: %w", src, dst, nsName, err)
		}
		return nil
	})
}

// listener is a UDP socket bound in a test namespace that reports what reaches it.
type listener struct {
	c *net.UDPConn
}

// listen binds addr:port in the namespace nsName; the socket is closed when the test ends.
func listen(t testing.TB, nsName string, addr netip.Addr, port int) *listener {
	t.Helper()
	var c *net.UDPConn
	err := ns.WithNetNSPath(netnstest.Path(nsName), func(ns.NetNS) error {
		var err error
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, uint16(port))))
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s:%d in %s: %v", addr, port, nsName, err)
	}
	t.Cleanup(func() { c.Close() })
	return &listener{c: c}
}

// next returns the next datagram that arrives within wait, or "" when none does.
func (l *listener) next(wait time.Duration) string {
	buf := make([]byte, 2048)
	_ = l.c.SetReadDeadline(time.Now().Add(wait))
	n, _, err := l.c.ReadFromUDP(buf)
	if err != nil {
		return ""
	}
	return string(buf[:n])
}
