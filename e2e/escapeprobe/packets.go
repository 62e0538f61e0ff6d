package main

import (
	"encoding/binary"
	"net"
	"net/netip"
)

// ethernet is an Ethernet II frame.
func ethernet(dst, src net.HardwareAddr, ethertype uint16, payload []byte) []byte {
	b := append(append(append([]byte{}, dst...), src...), byte(ethertype>>8), byte(ethertype))
	return append(b, payload...)
}

// udpDatagram is a UDP header from port 12345 to port, with the payload; its checksum is
// filled in by the packet that carries it.
func udpDatagram(port uint16, payload []byte) []byte {
	u := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(u[0:], 12345)
	binary.BigEndian.PutUint16(u[2:], port)
	binary.BigEndian.PutUint16(u[4:], uint16(8+len(payload)))
	return append(u, payload...)
}

// ipv4Packet is an IPv4 packet (RFC 791) carrying a UDP datagram, both checksums valid.
func ipv4Packet(src, dst netip.Addr, proto byte, upper []byte) []byte {
	ip := []byte{0x45, 0, 0, 0, 0, 1, 0, 0, 64, proto, 0, 0}
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(upper)))
	s4, d4 := src.As4(), dst.As4()
	ip = append(append(ip, s4[:]...), d4[:]...)
	binary.BigEndian.PutUint16(ip[10:], checksum(ip))
	if proto == 17 {
		pseudo := append(append(append([]byte{}, s4[:]...), d4[:]...), 0, proto, byte(len(upper)>>8), byte(len(upper)))
		binary.BigEndian.PutUint16(upper[6:], udpChecksum(pseudo, upper))
	}
	return append(ip, upper...)
}

// ipv6Packet is an IPv6 packet (RFC 8200) carrying an upper-layer message whose checksum
// sits at csumAt, filled in here.
func ipv6Packet(src, dst netip.Addr, next byte, upper []byte, csumAt int) []byte {
	s16, d16 := src.As16(), dst.As16()
	n := len(upper)
	pseudo := append(append(append([]byte{}, s16[:]...), d16[:]...), 0, 0, byte(n>>8), byte(n), 0, 0, 0, next)
	binary.BigEndian.PutUint16(upper[csumAt:], 0)
	binary.BigEndian.PutUint16(upper[csumAt:], checksum(append(pseudo, upper...)))
	ip := []byte{0x60, 0, 0, 0, byte(n >> 8), byte(n), next, 255}
	return append(append(append(ip, s16[:]...), d16[:]...), upper...)
}

// udpChecksum is a UDP checksum; 0 is sent as 0xffff (RFC 768).
func udpChecksum(pseudo, udp []byte) uint16 {
	binary.BigEndian.PutUint16(udp[6:], 0)
	if c := checksum(append(append([]byte{}, pseudo...), udp...)); c != 0 {
		return c
	}
	return 0xffff
}

// checksum is the Internet checksum (RFC 1071).
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

// vxlanPacket is the UDP payload of a VXLAN packet of VNI 1 (RFC 7348, section 5) whose
// inner frame carries an IPv4 UDP datagram from src to dst:port.
func vxlanPacket(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, port uint16, payload []byte) []byte {
	frame := ethernet(dstMAC, srcMAC, 0x0800, ipv4Packet(src, dst, 17, udpDatagram(port, payload)))
	return append([]byte{0x08, 0, 0, 0, 0, 0, 1, 0}, frame...)
}
