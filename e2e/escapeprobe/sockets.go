package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// cmdServe listens on every address of both families (a link-local one included) and
// waits for TCP or UDP data that carries the marker.
func cmdServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var r receiverFlags
	r.register(fs)
	proto := fs.String("proto", "tcp", "tcp or udp")
	port := fs.Int("port", 7000, "port to listen on")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := r.check(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	got := make(chan struct{}, 1)
	matched := func(b []byte) {
		if bytes.Contains(b, []byte(r.expect)) {
			select {
			case got <- struct{}{}:
			default:
			}
		}
	}
	switch *proto {
	case "tcp":
		for _, network := range []string{"tcp4", "tcp6"} {
			ln, err := net.Listen(network, ":"+strconv.Itoa(*port))
			if err != nil {
				return err
			}
			defer ln.Close()
			go accept(ln, r.timeout, matched)
		}
	case "udp":
		for _, network := range []string{"udp4", "udp6"} {
			pc, err := net.ListenPacket(network, ":"+strconv.Itoa(*port))
			if err != nil {
				return err
			}
			defer pc.Close()
			go readAll(pc, matched)
		}
	default:
		return fmt.Errorf("--proto %q: want tcp or udp", *proto)
	}
	listening()
	select {
	case <-got:
		fmt.Println("received")
		return nil
	case <-ctx.Done():
		return errNothing
	}
}

// accept reads each connection to ln for up to timeout and hands what it read to matched.
func accept(ln net.Listener, timeout time.Duration, matched func([]byte)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(timeout))
			b, _ := io.ReadAll(io.LimitReader(c, 4096))
			matched(b)
		}()
	}
}

// readAll hands every datagram pc receives to matched.
func readAll(pc net.PacketConn, matched func([]byte)) {
	buf := make([]byte, 65536)
	for {
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		matched(buf[:n])
	}
}

// cmdDial sends the payload to a TCP or UDP server: a TCP connection that writes it, or three
// UDP datagrams 50 ms apart. It exits 0 when it could send, 1 when a TCP connection was not
// accepted; the server decides what got through.
func cmdDial(args []string) error {
	fs := flag.NewFlagSet("dial", flag.ContinueOnError)
	proto := fs.String("proto", "tcp", "tcp or udp")
	to := fs.String("to", "", "host:port, IPv6 in brackets, a zone after % (required)")
	payload := fs.String("payload", "", "what to send (required)")
	timeout := fs.Duration("timeout", time.Second, "how long a TCP connection may take")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *to == "" || *payload == "" {
		return errors.New("--to and --payload are required")
	}
	if _, err := netip.ParseAddrPort(*to); err != nil {
		return fmt.Errorf("--to: %w", err)
	}
	switch *proto {
	case "tcp":
		c, err := net.DialTimeout("tcp", *to, *timeout)
		if err != nil {
			fmt.Println(err)
			return errNothing
		}
		defer c.Close()
		_, err = c.Write([]byte(*payload))
		return err
	case "udp":
		c, err := net.Dial("udp", *to)
		if err != nil {
			return err
		}
		defer c.Close()
		for i := range 3 {
			if i > 0 {
				time.Sleep(50 * time.Millisecond)
			}
			c.Write([]byte(*payload)) // an ICMP error from an earlier datagram may fail one
		}
		return nil
	default:
		return fmt.Errorf("--proto %q: want tcp or udp", *proto)
	}
}

// cmdVXLAN sends, from an ordinary UDP socket, a VXLAN packet whose inner frame carries a UDP
// datagram with the payload: what any process may send to a VTEP.
func cmdVXLAN(args []string) error {
	fs := flag.NewFlagSet("vxlan", flag.ContinueOnError)
	to := fs.String("to", "", "the VTEP's underlay address and port, e.g. 192.168.1.2:4789 (required)")
	innerSrcMAC := fs.String("inner-src-mac", "", "inner source hardware address (required)")
	innerDstMAC := fs.String("inner-dst-mac", "", "inner destination hardware address (required)")
	srcIP := fs.String("src", "", "inner IPv4 source (required)")
	dstIP := fs.String("dst", "", "inner IPv4 destination (required)")
	port := fs.Int("port", 7001, "inner destination UDP port")
	payload := fs.String("payload", "", "inner payload (required)")
	if err := parse(fs, args); err != nil {
		return err
	}
	srcMAC, err := net.ParseMAC(*innerSrcMAC)
	if err != nil {
		return fmt.Errorf("--inner-src-mac: %w", err)
	}
	dstMAC, err := net.ParseMAC(*innerDstMAC)
	if err != nil {
		return fmt.Errorf("--inner-dst-mac: %w", err)
	}
	s, d, err := addrPair(*srcIP, *dstIP)
	if err != nil || !s.Is4() {
		return fmt.Errorf("--src and --dst: want IPv4 addresses (%v)", err)
	}
	if *payload == "" {
		return errors.New("--payload is required")
	}
	c, err := net.Dial("udp", *to)
	if err != nil {
		return err
	}
	defer c.Close()
	pkt := vxlanPacket(srcMAC, dstMAC, s, d, uint16(*port), []byte(*payload))
	for i := range 3 {
		if i > 0 {
			time.Sleep(50 * time.Millisecond)
		}
		c.Write(pkt)
	}
	return nil
}
