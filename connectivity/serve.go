package connectivity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// Listen is what Serve listens on: TCP and UDP ports, on every address the pod has.
type Listen struct {
	TCP []uint16 `json:"tcp,omitempty"`
	UDP []uint16 `json:"udp,omitempty"`
}

// Ready is the line Serve writes once every listener is open.
const Ready = "ready"

// Serve reads a Listen from in, opens the listeners, writes Ready and a newline to out and
// echoes what each listener receives until in ends or ctx is done. TCP listens on the
// wildcard address of both families. UDP listens on each of the pod's addresses (link-local
// ones aside) separately, so a reply leaves from the address the datagram was sent to, which
// is what the sender's socket and the stateful rules on the way back expect.
func Serve(ctx context.Context, in io.Reader, out io.Writer) error {
	var l Listen
	if err := json.NewDecoder(in).Decode(&l); err != nil {
		return fmt.Errorf("read what to listen on: %w", err)
	}
	var closers []io.Closer
	var wg sync.WaitGroup
	defer func() {
		for _, c := range closers {
			c.Close()
		}
		wg.Wait()
	}()
	for _, port := range l.TCP {
		ln, err := net.Listen("tcp", ":"+strconv.Itoa(int(port)))
		if err != nil {
			return fmt.Errorf("listen on TCP port %d: %w", port, err)
		}
		closers = append(closers, ln)
		wg.Go(func() { echoTCP(ln) })
	}
	addrs, err := localAddresses()
	if err != nil {
		return err
	}
	for _, port := range l.UDP {
		for _, a := range addrs {
			pc, lerr := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, port)))
			if lerr != nil {
				return fmt.Errorf("listen on UDP %s: %w", netip.AddrPortFrom(a, port), lerr)
			}
			closers = append(closers, pc)
			wg.Go(func() { echoUDP(pc) })
		}
	}
	if _, err := fmt.Fprintln(out, Ready); err != nil {
		return err
	}
	eof := make(chan struct{})
	go func() {
		io.Copy(io.Discard, in)
		close(eof)
	}()
	select {
	case <-ctx.Done():
	case <-eof:
	}
	return nil
}

// localAddresses are the addresses of the pod's interfaces, link-local ones left out (the
// plan never probes them).
func localAddresses() ([]netip.Addr, error) {
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list the pod's addresses: %w", err)
	}
	var out []netip.Addr
	for _, ia := range ifaddrs {
		pfx, err := netip.ParsePrefix(ia.String())
		if err != nil {
			continue
		}
		a := pfx.Addr().Unmap()
		if a.IsLinkLocalUnicast() {
			continue
		}
		out = append(out, a)
	}
	return out, nil
}

// tokenSize bounds what a probe sends and a listener echoes.
const tokenSize = 64

func echoTCP(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, tokenSize)
			n, err := c.Read(buf)
			if err != nil && !errors.Is(err, io.EOF) {
				return
			}
			c.Write(buf[:n])
		}()
	}
}

func echoUDP(pc *net.UDPConn) {
	buf := make([]byte, tokenSize)
	for {
		n, from, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		pc.WriteToUDPAddrPort(buf[:n], from)
	}
}
