package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// linkFlags are the flags of every command that sends a frame from a packet socket.
type linkFlags struct {
	ifname, dstMAC, srcMAC, claim, marker string
	count                                 int
}

func (l *linkFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.ifname, "if", "", "interface to send on (required)")
	fs.StringVar(&l.dstMAC, "dst-mac", "ff:ff:ff:ff:ff:ff", "destination hardware address")
	fs.StringVar(&l.srcMAC, "src-mac", "", "source hardware address (default: the interface's own)")
	fs.StringVar(&l.claim, "claim", "", "ethertype the socket tells the kernel the frame has (default: its own)")
	fs.StringVar(&l.marker, "marker", "", "marker the frame carries (required)")
	fs.IntVar(&l.count, "count", 2, "how many copies to send, 50 ms apart")
}

// frameHeader resolves the interface and the two hardware addresses.
func (l *linkFlags) frameHeader() (ifc *net.Interface, dst, src net.HardwareAddr, err error) {
	if l.ifname == "" || l.marker == "" {
		return nil, nil, nil, errors.New("--if and --marker are required")
	}
	if ifc, err = net.InterfaceByName(l.ifname); err != nil {
		return nil, nil, nil, err
	}
	if dst, err = net.ParseMAC(l.dstMAC); err != nil {
		return nil, nil, nil, fmt.Errorf("--dst-mac: %w", err)
	}
	src = ifc.HardwareAddr
	if l.srcMAC != "" {
		if src, err = net.ParseMAC(l.srcMAC); err != nil {
			return nil, nil, nil, fmt.Errorf("--src-mac: %w", err)
		}
	}
	return ifc, dst, src, nil
}

// send writes frame count times from a packet socket on ifc, telling the kernel it is of
// ethertype --claim (default: the frame's own). A send the kernel refuses (an egress hook
// dropped it) is reported, not an error: the receiver decides what got through.
func (l *linkFlags) send(ifc *net.Interface, frame []byte) error {
	proto := uint16(frame[12])<<8 | uint16(frame[13])
	if l.claim != "" {
		c, err := parseEthertype(l.claim)
		if err != nil {
			return fmt.Errorf("--claim: %w", err)
		}
		proto = c
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(proto)))
	if err != nil {
		return fmt.Errorf("open a packet socket: %w", err)
	}
	defer unix.Close(fd)
	to := &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: ifc.Index, Halen: 6}
	copy(to.Addr[:], frame[:6])
	for i := range l.count {
		if i > 0 {
			time.Sleep(50 * time.Millisecond)
		}
		err = unix.Sendto(fd, frame, 0, to)
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOBUFS) {
			fmt.Printf("the kernel refused the frame: %v\n", err)
			return nil
		}
		if err != nil {
			return fmt.Errorf("send on %s: %w", ifc.Name, err)
		}
	}
	fmt.Printf("sent %d frame(s) of %d bytes on %s\n", l.count, len(frame), ifc.Name)
	return nil
}

// cmdListen waits on a packet socket bound to one ethertype for a frame that carries the
// marker, and prints its source hardware address.
func cmdListen(args []string) error {
	fs := flag.NewFlagSet("listen", flag.ContinueOnError)
	var r receiverFlags
	r.register(fs)
	ifname := fs.String("if", "", "interface to listen on (required)")
	etype := fs.String("ethertype", "", "ethertype the socket is bound to, e.g. 0x88b5 (required)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := r.check(); err != nil {
		return err
	}
	proto, err := parseEthertype(*etype)
	if err != nil {
		return fmt.Errorf("--ethertype: %w", err)
	}
	ifc, err := net.InterfaceByName(*ifname)
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(proto)))
	if err != nil {
		return fmt.Errorf("open a packet socket: %w", err)
	}
	defer unix.Close(fd)
	if err = unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: ifc.Index}); err != nil {
		return fmt.Errorf("bind to %s: %w", ifc.Name, err)
	}
	listening()
	deadline := time.Now().Add(r.timeout)
	buf := make([]byte, 65536)
	for time.Now().Before(deadline) {
		tv := unix.NsecToTimeval(min(time.Until(deadline), 100*time.Millisecond).Nanoseconds() + 1000)
		if err = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		n, from, rerr := unix.Recvfrom(fd, buf, 0)
		if rerr != nil {
			if errors.Is(rerr, unix.EAGAIN) || errors.Is(rerr, unix.EINTR) {
				continue
			}
			return fmt.Errorf("receive on %s: %w", ifc.Name, rerr)
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if n >= 14 && bytes.Contains(buf[:n], []byte(r.expect)) {
			fmt.Printf("received %d bytes from %s\n", n, net.HardwareAddr(buf[6:12]))
			return nil
		}
	}
	return errNothing
}

// cmdFrame sends a frame of any ethertype whose payload is the marker.
func cmdFrame(args []string) error {
	fs := flag.NewFlagSet("frame", flag.ContinueOnError)
	var l linkFlags
	l.register(fs)
	etype := fs.String("ethertype", "0x88b5", "the frame's ethertype")
	if err := parse(fs, args); err != nil {
		return err
	}
	proto, err := parseEthertype(*etype)
	if err != nil {
		return fmt.Errorf("--ethertype: %w", err)
	}
	ifc, dst, src, err := l.frameHeader()
	if err != nil {
		return err
	}
	return l.send(ifc, ethernet(dst, src, proto, []byte(l.marker)))
}

// cmdARP sends an ARP request or reply (RFC 826) with any sender, the marker in the bytes
// after the message (which receivers ignore, as they ignore Ethernet padding).
func cmdARP(args []string) error {
	fs := flag.NewFlagSet("arp", flag.ContinueOnError)
	var l linkFlags
	l.register(fs)
	op := fs.String("op", "request", "request or reply")
	sha := fs.String("sender-mac", "", "sender hardware address (default: the frame's source)")
	spa := fs.String("sender-ip", "", "sender IPv4 address (required)")
	tha := fs.String("target-mac", "00:00:00:00:00:00", "target hardware address")
	tpa := fs.String("target-ip", "", "target IPv4 address (required)")
	if err := parse(fs, args); err != nil {
		return err
	}
	ifc, dst, src, err := l.frameHeader()
	if err != nil {
		return err
	}
	code := map[string]byte{"request": 1, "reply": 2}[*op]
	if code == 0 {
		return fmt.Errorf("--op %q: want request or reply", *op)
	}
	senderMAC, targetMAC := src, net.HardwareAddr(nil)
	if *sha != "" {
		if senderMAC, err = net.ParseMAC(*sha); err != nil {
			return fmt.Errorf("--sender-mac: %w", err)
		}
	}
	if targetMAC, err = net.ParseMAC(*tha); err != nil {
		return fmt.Errorf("--target-mac: %w", err)
	}
	sender, err := netip.ParseAddr(*spa)
	if err != nil || !sender.Is4() {
		return fmt.Errorf("--sender-ip %q: want an IPv4 address", *spa)
	}
	target, err := netip.ParseAddr(*tpa)
	if err != nil || !target.Is4() {
		return fmt.Errorf("--target-ip %q: want an IPv4 address", *tpa)
	}
	msg := []byte{0, 1, 8, 0, 6, 4, 0, code}
	s4, t4 := sender.As4(), target.As4()
	msg = append(append(msg, senderMAC...), s4[:]...)
	msg = append(append(msg, targetMAC...), t4[:]...)
	return l.send(ifc, ethernet(dst, src, unix.ETH_P_ARP, append(msg, l.marker...)))
}

// cmdUDP sends an IPv4 or IPv6 UDP datagram with any source address, the marker its payload.
func cmdUDP(args []string) error {
	fs := flag.NewFlagSet("udp", flag.ContinueOnError)
	var l linkFlags
	l.register(fs)
	srcIP := fs.String("src", "", "source address (required)")
	dstIP := fs.String("dst", "", "destination address (required)")
	port := fs.Int("port", 9, "destination port")
	if err := parse(fs, args); err != nil {
		return err
	}
	ifc, dst, src, err := l.frameHeader()
	if err != nil {
		return err
	}
	s, d, err := addrPair(*srcIP, *dstIP)
	if err != nil {
		return err
	}
	udp := udpDatagram(uint16(*port), []byte(l.marker))
	if s.Is4() {
		return l.send(ifc, ethernet(dst, src, unix.ETH_P_IP, ipv4Packet(s, d, unix.IPPROTO_UDP, udp)))
	}
	return l.send(ifc, ethernet(dst, src, unix.ETH_P_IPV6, ipv6Packet(s, d, unix.IPPROTO_UDP, udp, 6)))
}

// cmdNA sends an unsolicited IPv6 neighbour advertisement (RFC 4861, 4.4) for any target,
// with the marker in an option of a type no one knows, which receivers skip.
func cmdNA(args []string) error {
	fs := flag.NewFlagSet("na", flag.ContinueOnError)
	var l linkFlags
	l.register(fs)
	srcIP := fs.String("src", "", "source address (required)")
	dstIP := fs.String("dst", "ff02::1", "destination address")
	target := fs.String("target", "", "the address advertised (required)")
	if err := parse(fs, args); err != nil {
		return err
	}
	ifc, dst, src, err := l.frameHeader()
	if err != nil {
		return err
	}
	s, d, err := addrPair(*srcIP, *dstIP)
	if err != nil || s.Is4() {
		return fmt.Errorf("--src and --dst: want IPv6 addresses (%v)", err)
	}
	tgt, err := netip.ParseAddr(*target)
	if err != nil || !tgt.Is6() {
		return fmt.Errorf("--target %q: want an IPv6 address", *target)
	}
	t16 := tgt.As16()
	// Override flag set; a target link-layer address option carrying the frame's source.
	icmp := append([]byte{136, 0, 0, 0, 0x20, 0, 0, 0}, t16[:]...)
	icmp = append(append(icmp, 2, 1), src...)
	opt := append([]byte(l.marker), make([]byte, 8)...)
	opt = opt[:(len(l.marker)+2+7)/8*8-2]
	icmp = append(append(icmp, 253, byte((len(opt)+2)/8)), opt...) // 253: RFC 4727 experiment
	return l.send(ifc, ethernet(dst, src, unix.ETH_P_IPV6, ipv6Packet(s, d, unix.IPPROTO_ICMPV6, icmp, 2)))
}

func addrPair(src, dst string) (s, d netip.Addr, err error) {
	if s, err = netip.ParseAddr(src); err != nil {
		return s, d, fmt.Errorf("--src: %w", err)
	}
	if d, err = netip.ParseAddr(dst); err != nil {
		return s, d, fmt.Errorf("--dst: %w", err)
	}
	s, d = s.WithZone(""), d.WithZone("")
	if s.Is4() != d.Is4() {
		return s, d, fmt.Errorf("--src %s and --dst %s are of two families", s, d)
	}
	return s, d, nil
}

func parseEthertype(s string) (uint16, error) {
	v, err := strconv.ParseUint(s, 0, 16)
	if err != nil {
		return 0, err
	}
	return uint16(v), nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
