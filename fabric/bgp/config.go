package bgp

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Defaults applied by New to the zero fields of a Config.
const (
	DefaultASN          = 64512
	DefaultPort         = 179
	DefaultRestartTime  = 120 * time.Second
	DefaultHoldTime     = 90 * time.Second
	DefaultConnectRetry = 30 * time.Second
)

// maxRestartTime is the largest restart time the 12-bit field of the graceful restart
// capability can carry (RFC 4724, section 3).
const maxRestartTime = 4095 * time.Second

// ErrInvalidConfig is wrapped by every error New returns for a Config or Peer it refuses,
// and by SetMeshPeers for a peer list it refuses.
var ErrInvalidConfig = errors.New("invalid bgp configuration")

// Config is what a node's speaker is started with. New fills the zero fields with the
// defaults documented on each and rejects values that cannot work. GoBGP counts timers in
// whole seconds: fractions are dropped.
type Config struct {
	// ASN is the node's autonomous system number, 64512 when zero. Mesh peers share it.
	ASN uint32
	// RouterID is the node's underlay IPv4 address. It is the BGP identifier, the source
	// address of the sessions this node opens, and the next hop of the blocks it advertises.
	RouterID netip.Addr
	// ListenAddresses are the addresses the speaker accepts sessions on; all addresses
	// when empty.
	ListenAddresses []netip.Addr
	// ListenPort is the TCP port the speaker accepts sessions on, 179 when zero.
	ListenPort int
	// Peers are external peers and route reflectors from the cluster configuration. They
	// are always kept; SetMeshPeers never touches them.
	Peers []Peer
	// AcceptPrefixes limits the received routes the speaker accepts to those inside one of
	// them (the cluster's pod CIDRs). Empty accepts every route, including a default route
	// from a top-of-rack peer, which would then be installed in the node's kernel.
	AcceptPrefixes []netip.Prefix
	// DisableGracefulRestart turns off RFC 4724 graceful restart, which is on by default so
	// that restarting loomd does not make peers drop this node's routes.
	DisableGracefulRestart bool
	// RestartTime is how long peers keep this node's routes after its loomd stops, and how
	// long a starting speaker keeps the routes a previous run installed while it waits for
	// its peers' End-of-RIB. 120s when zero; whole seconds, at most 4095s.
	RestartTime time.Duration
	// HoldTime is the BGP hold time offered to peers, 90s when zero; at least 3s.
	HoldTime time.Duration
	// KeepaliveInterval is the interval between keepalives, a third of HoldTime when zero.
	KeepaliveInterval time.Duration
	// ConnectRetry is the interval between attempts to open a session to a peer that is
	// not answering, 30s when zero. The first attempt happens within two seconds.
	ConnectRetry time.Duration
}

// Peer is a BGP neighbor: a route reflector or top-of-rack router from the configuration,
// or another node of the mesh.
type Peer struct {
	// Address is the peer's IPv4 address; sessions are opened from Config.RouterID.
	Address netip.Addr
	// ASN is the peer's AS number. Mesh peers may leave it zero to mean Config.ASN;
	// configured peers must set it.
	ASN uint32
	// Port is the peer's TCP port, 179 when zero.
	Port int
	// Password enables TCP MD5 signatures (RFC 2385) on the session when not empty.
	Password string
	// Description names the peer in status output, for example the node name.
	Description string
}

// withDefaults returns a copy of c with its zero fields set to their defaults, or an error
// naming the first field that cannot work.
func (c Config) withDefaults() (Config, error) {
	if c.ASN == 0 {
		c.ASN = DefaultASN
	}
	if c.ListenPort == 0 {
		c.ListenPort = DefaultPort
	}
	if c.RestartTime == 0 {
		c.RestartTime = DefaultRestartTime
	}
	if c.HoldTime == 0 {
		c.HoldTime = DefaultHoldTime
	}
	if c.KeepaliveInterval == 0 {
		c.KeepaliveInterval = c.HoldTime / 3
	}
	if c.ConnectRetry == 0 {
		c.ConnectRetry = DefaultConnectRetry
	}
	c.RouterID = c.RouterID.Unmap()
	c.ListenAddresses = append([]netip.Addr(nil), c.ListenAddresses...)
	c.AcceptPrefixes = append([]netip.Prefix(nil), c.AcceptPrefixes...)
	peers := make([]Peer, len(c.Peers))
	for i, p := range c.Peers {
		peers[i] = p.withDefaults(0)
	}
	c.Peers = peers
	return c, c.validate()
}

func (c Config) validate() error {
	if err := checkASN(c.ASN); err != nil {
		return fmt.Errorf("%w: asn: %w", ErrInvalidConfig, err)
	}
	if !c.RouterID.Is4() || c.RouterID.IsUnspecified() || c.RouterID.IsMulticast() {
		return fmt.Errorf("%w: router id %q: set it to the node's underlay IPv4 address",
			ErrInvalidConfig, c.RouterID)
	}
	for _, a := range c.ListenAddresses {
		if !a.IsValid() {
			return fmt.Errorf("%w: listen address %q: not an IP address", ErrInvalidConfig, a)
		}
	}
	if err := checkPort(c.ListenPort); err != nil {
		return fmt.Errorf("%w: listen port: %w", ErrInvalidConfig, err)
	}
	for _, p := range c.AcceptPrefixes {
		if !p.IsValid() || !p.Addr().Is4() || p != p.Masked() {
			return fmt.Errorf("%w: accept prefix %q: want an IPv4 network such as 10.244.0.0/16",
				ErrInvalidConfig, p)
		}
	}
	if err := c.validateTimers(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	seen := make(map[netip.Addr]bool, len(c.Peers))
	for _, p := range c.Peers {
		if err := p.validate(c.RouterID); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
		if seen[p.Address] {
			return fmt.Errorf("%w: peer %s: listed twice", ErrInvalidConfig, p.Address)
		}
		seen[p.Address] = true
	}
	return nil
}

func (c Config) validateTimers() error {
	if c.RestartTime < time.Second || c.RestartTime > maxRestartTime {
		return fmt.Errorf("restart time %s: want 1s to %s", c.RestartTime, maxRestartTime)
	}
	if c.HoldTime < 3*time.Second || c.HoldTime > 65535*time.Second {
		return fmt.Errorf("hold time %s: want 3s to 65535s", c.HoldTime)
	}
	if c.KeepaliveInterval < time.Second || c.KeepaliveInterval >= c.HoldTime {
		return fmt.Errorf("keepalive interval %s: want 1s or more, less than the hold time %s",
			c.KeepaliveInterval, c.HoldTime)
	}
	if c.ConnectRetry < time.Second {
		return fmt.Errorf("connect retry %s: want 1s or more", c.ConnectRetry)
	}
	return nil
}

// withDefaults returns p with its address unmapped, its port defaulted and, when asn is
// not zero, a zero ASN replaced by asn.
func (p Peer) withDefaults(asn uint32) Peer {
	p.Address = p.Address.Unmap()
	if p.Port == 0 {
		p.Port = DefaultPort
	}
	if p.ASN == 0 {
		p.ASN = asn
	}
	return p
}

func (p Peer) validate(routerID netip.Addr) error {
	if !p.Address.Is4() || p.Address.IsUnspecified() || p.Address.IsMulticast() {
		return fmt.Errorf("peer %q: want a unicast IPv4 address", p.Address)
	}
	if p.Address == routerID {
		return fmt.Errorf("peer %s: is this node's own router id", p.Address)
	}
	if err := checkASN(p.ASN); err != nil {
		return fmt.Errorf("peer %s: asn: %w", p.Address, err)
	}
	if err := checkPort(p.Port); err != nil {
		return fmt.Errorf("peer %s: port: %w", p.Address, err)
	}
	if len(p.Password) > 80 {
		return fmt.Errorf("peer %s: password: longer than the 80 bytes TCP MD5 allows", p.Address)
	}
	return nil
}

// checkASN refuses the AS numbers no speaker may use: 0, AS_TRANS (RFC 6793) and the
// last numbers of the 2- and 4-byte spaces (RFC 7300).
func checkASN(asn uint32) error {
	switch asn {
	case 0:
		return errors.New("0: set the AS number")
	case 23456, 65535, 4294967295:
		return fmt.Errorf("%d: reserved, choose a private AS such as 64512", asn)
	}
	return nil
}

func checkPort(port int) error {
	if port < 1 || port > 65535 {
		return fmt.Errorf("%d: want 1 to 65535", port)
	}
	return nil
}

// seconds converts a validated duration to the whole seconds GoBGP's API takes.
func seconds(d time.Duration) uint64 {
	return uint64(d / time.Second)
}
