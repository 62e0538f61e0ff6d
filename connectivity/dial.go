package connectivity

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Batch is what Dial reads: the probes one pod sends.
type Batch struct {
	// Timeout is how long a probe waits for its answer.
	Timeout time.Duration `json:"timeout"`
	// Parallel bounds the probes in flight.
	Parallel int      `json:"parallel"`
	Targets  []Target `json:"targets"`
}

// Target is one probe: Protocol to Address (and Port), sent from Source.
type Target struct {
	ID       int        `json:"id"`
	Protocol string     `json:"protocol"`
	Source   netip.Addr `json:"source"`
	Address  netip.Addr `json:"address"`
	Port     uint16     `json:"port,omitempty"`
}

// Outcome is what one probe found; Detail says why it was not reached.
type Outcome struct {
	ID      int    `json:"id"`
	Reached bool   `json:"reached"`
	Detail  string `json:"detail,omitempty"`
}

// Dial reads a Batch from in, sends its probes, at most Parallel at a time, and writes one
// Outcome per probe to out as a JSON line as soon as the probe is decided.
func Dial(ctx context.Context, in io.Reader, out io.Writer) error {
	var b Batch
	if err := json.NewDecoder(in).Decode(&b); err != nil {
		return fmt.Errorf("read the probes: %w", err)
	}
	if b.Timeout <= 0 {
		return fmt.Errorf("read the probes: timeout %v: want a positive duration", b.Timeout)
	}
	var mu sync.Mutex
	enc := json.NewEncoder(out)
	var werr error
	sem := make(chan struct{}, max(1, b.Parallel))
	var wg sync.WaitGroup
	for _, t := range b.Targets {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			o := probe(ctx, t, b.Timeout)
			mu.Lock()
			defer mu.Unlock()
			if err := enc.Encode(o); err != nil && werr == nil {
				werr = fmt.Errorf("write the outcome of probe %d: %w", t.ID, err)
			}
		})
	}
	wg.Wait()
	return werr
}

func probe(ctx context.Context, t Target, timeout time.Duration) Outcome {
	token := fmt.Appendf(nil, "loom-connectivity %d %x", t.ID, rand.Uint64())
	var err error
	switch t.Protocol {
	case TCP:
		err = probeTCP(ctx, t, token, timeout)
	case UDP:
		err = probeUDP(t, token, timeout)
	case ICMP:
		err = probeICMP(t, token, timeout)
	default:
		err = fmt.Errorf("protocol %q: want ICMP, TCP or UDP", t.Protocol)
	}
	if err != nil {
		return Outcome{ID: t.ID, Detail: err.Error()}
	}
	return Outcome{ID: t.ID, Reached: true}
}

var errNoEcho = errors.New("no echo")

// probeTCP connects from Source, sends the token and reads it back. An established
// connection means the packets went both ways; the echo shows it was the probe's listener.
func probeTCP(ctx context.Context, t Target, token []byte, timeout time.Duration) error {
	d := net.Dialer{Timeout: timeout, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(t.Source, 0))}
	c, err := d.DialContext(ctx, "tcp", netip.AddrPortFrom(t.Address, t.Port).String())
	if err != nil {
		return describe(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(token); err != nil {
		return fmt.Errorf("connected, then: %w", describe(err))
	}
	got := make([]byte, len(token))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, token) {
		return fmt.Errorf("connected, then %w: %v", errNoEcho, err)
	}
	return nil
}

// probeUDP sends the token from Source, three times over the timeout, and waits for the
// listener to echo it: a datagram that is dropped, either way, is a timeout.
func probeUDP(t Target, token []byte, timeout time.Duration) error {
	c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(t.Source, 0)), net.UDPAddrFromAddrPort(netip.AddrPortFrom(t.Address, t.Port)))
	if err != nil {
		return describe(err)
	}
	defer c.Close()
	return sendAndAwait(c, timeout,
		func() error { _, err := c.Write(token); return err },
		func(buf []byte) (bool, error) {
			n, err := c.Read(buf)
			return err == nil && bytes.Equal(buf[:n], token), err
		})
}

// probeICMP sends echo requests from Source carrying the token and waits for the reply that
// carries it back. It uses an unprivileged ICMP socket where the pod's
// net.ipv4.ping_group_range allows one, a raw socket (CAP_NET_RAW) otherwise.
func probeICMP(t Target, token []byte, timeout time.Duration) error {
	c, raw, err := listenICMP(t.Source)
	if err != nil {
		return err
	}
	defer c.Close()
	var req icmp.Message
	var dst net.Addr = &net.UDPAddr{IP: t.Address.AsSlice()}
	proto := 1
	if raw {
		dst = &net.IPAddr{IP: t.Address.AsSlice()}
	}
	echo := &icmp.Echo{ID: int(rand.Uint32() & 0xffff), Seq: 1, Data: token}
	if t.Address.Is4() {
		req = icmp.Message{Type: ipv4.ICMPTypeEcho, Body: echo}
	} else {
		req, proto = icmp.Message{Type: ipv6.ICMPTypeEchoRequest, Body: echo}, 58
	}
	wire, err := req.Marshal(nil)
	if err != nil {
		return err
	}
	return sendAndAwait(c, timeout,
		func() error { _, err := c.WriteTo(wire, dst); return err },
		func(buf []byte) (bool, error) {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return false, err
			}
			m, perr := icmp.ParseMessage(proto, buf[:n])
			if perr != nil || (m.Type != ipv4.ICMPTypeEchoReply && m.Type != ipv6.ICMPTypeEchoReply) {
				return false, nil
			}
			e, ok := m.Body.(*icmp.Echo)
			return ok && bytes.Equal(e.Data, token) && sameHost(from, t.Address), nil
		})
}

func listenICMP(src netip.Addr) (c *icmp.PacketConn, raw bool, err error) {
	dgram, rawNet := "udp4", "ip4:icmp"
	if src.Is6() {
		dgram, rawNet = "udp6", "ip6:ipv6-icmp"
	}
	if c, err = icmp.ListenPacket(dgram, src.String()); err == nil {
		return c, false, nil
	}
	if c, err = icmp.ListenPacket(rawNet, src.String()); err != nil {
		return nil, false, fmt.Errorf("open an ICMP socket on %s (neither ping_group_range nor CAP_NET_RAW allows one): %w", src, err)
	}
	return c, true, nil
}

func sameHost(a net.Addr, want netip.Addr) bool {
	var ip net.IP
	switch a := a.(type) {
	case *net.IPAddr:
		ip = a.IP
	case *net.UDPAddr:
		ip = a.IP
	}
	got, ok := netip.AddrFromSlice(ip)
	return ok && got.Unmap() == want
}

// sendAndAwait sends, then reads from c until read reports the echo or the timeout passes,
// sending again at each third of it.
func sendAndAwait(c interface{ SetReadDeadline(time.Time) error }, timeout time.Duration, send func() error, read func([]byte) (bool, error)) error {
	start := time.Now()
	buf := make([]byte, 1500)
	last := errTimeout
	for i := range 3 {
		if err := send(); err != nil {
			last = describe(err)
		}
		c.SetReadDeadline(start.Add(timeout * time.Duration(i+1) / 3))
		for {
			ok, err := read(buf)
			if ok {
				return nil
			}
			if err != nil {
				if d := describe(err); d != errTimeout {
					last = d
				}
				break
			}
		}
	}
	return last
}

var errTimeout = errors.New("timeout")

// describe shortens the errors a blocked probe meets to what they mean.
func describe(err error) error {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return errTimeout
	case errors.Is(err, syscall.ECONNREFUSED):
		return errors.New("refused")
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return errors.New("unreachable")
	case errors.Is(err, syscall.EPERM):
		return errors.New("refused to send (a rule on the way out)")
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return errTimeout
	}
	return err
}
