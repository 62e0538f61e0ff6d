package fabric

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Modes of the primary network.
const (
	ModeVXLAN            = "vxlan"
	ModeBGP              = "bgp"
	ModeVXLANCrossSubnet = "vxlan-crosssubnet"
)

// Config configures the primary network on a node. Every node of a cluster must be given the
// same mode, cluster CIDR and block size (one ConfigMap in a real cluster).
type Config struct {
	// Mode is vxlan (default), bgp or vxlan-crosssubnet.
	Mode string `json:"mode,omitempty"`
	// ClusterCIDR is the pod address pool, carved into blocks that nodes claim.
	ClusterCIDR string `json:"clusterCIDR"`
	// BlockSize is the prefix length of a block; default 26 (64 addresses).
	BlockSize int `json:"blockSize,omitempty"`
	// MTU of pod interfaces; 0 derives it from the underlay: its MTU less the encapsulation
	// overhead of the mode.
	MTU int `json:"mtu,omitempty"`
	// NodeIP is this node's underlay address; default the Node's InternalIP.
	NodeIP string `json:"nodeIP,omitempty"`
	// VXLAN configures the VTEP of the vxlan modes.
	VXLAN VXLANConfig `json:"vxlan,omitempty"`
	// BGP configures the speaker of the bgp mode.
	BGP BGPConfig `json:"bgp,omitempty"`
}

// VXLANConfig is the VTEP's configuration.
type VXLANConfig struct {
	// VNI defaults to 1, Port to 4789 (IANA).
	VNI  int `json:"vni,omitempty"`
	Port int `json:"port,omitempty"`
}

// BGPConfig is the BGP speaker's configuration.
type BGPConfig struct {
	// ASN is the nodes' autonomous system; default 64512.
	ASN uint32 `json:"asn,omitempty"`
	// NodeToNodeMesh peers every node with every other; default true. Turn it off when route
	// reflectors in Peers carry the routes.
	NodeToNodeMesh *bool `json:"nodeToNodeMesh,omitempty"`
	// ListenPort defaults to 179.
	ListenPort int `json:"listenPort,omitempty"`
	// Peers are external peers or route reflectors every node peers with.
	Peers []BGPPeer `json:"peers,omitempty"`
}

// BGPPeer is an external BGP peer.
type BGPPeer struct {
	Address string `json:"address"`
	ASN     uint32 `json:"asn"`
	Port    int    `json:"port,omitempty"`
	// Password enables TCP MD5 signatures (RFC 2385) on the session.
	Password string `json:"password,omitempty"`
}

// Settings is a validated Config with typed values.
type Settings struct {
	Mode        string
	ClusterCIDR netip.Prefix
	BlockSize   int
	MTU         int
	NodeIP      netip.Addr
	VNI, Port   int
	ASN         uint32
	Mesh        bool
	ListenPort  int
	Peers       []Peer
	// Resync is how often the dataplane is rebuilt from scratch to repair what someone removed.
	Resync time.Duration
	// Nft is the nft binary that writes the VXLAN modes' guard table; "nft" from $PATH when
	// empty.
	Nft string
}

// Peer is a validated external BGP peer.
type Peer struct {
	Address  netip.Addr
	ASN      uint32
	Port     int
	Password string
}

// Overhead is the encapsulation overhead of a mode, in bytes.
func Overhead(mode string) int {
	if mode == ModeBGP {
		return 0
	}
	return 50 // outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
}

// Validate defaults c and reports every problem in it.
func (c Config) Validate() (Settings, error) {
	s := Settings{Mode: c.Mode, BlockSize: c.BlockSize, MTU: c.MTU, VNI: c.VXLAN.VNI, Port: c.VXLAN.Port,
		ASN: c.BGP.ASN, Mesh: c.BGP.NodeToNodeMesh == nil || *c.BGP.NodeToNodeMesh, ListenPort: c.BGP.ListenPort,
		Resync: time.Minute}
	if s.Mode == "" {
		s.Mode = ModeVXLAN
	}
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	def(&s.BlockSize, 26)
	def(&s.VNI, 1)
	def(&s.Port, 4789)
	def(&s.ListenPort, 179)
	if s.ASN == 0 {
		s.ASN = 64512
	}
	var errs []error
	switch s.Mode {
	case ModeVXLAN, ModeBGP, ModeVXLANCrossSubnet:
	default:
		errs = append(errs, fmt.Errorf("mode: %q is not one of vxlan, bgp, vxlan-crosssubnet", c.Mode))
	}
	p, err := netip.ParsePrefix(c.ClusterCIDR)
	switch {
	case c.ClusterCIDR == "":
		errs = append(errs, errors.New("clusterCIDR: required: the pod address pool, e.g. 10.244.0.0/16"))
	case err != nil:
		errs = append(errs, fmt.Errorf("clusterCIDR: %w", err))
	case !p.Addr().Is4():
		errs = append(errs, fmt.Errorf("clusterCIDR: %s: IPv6 pools are not supported yet", p))
	case p.Masked() != p:
		errs = append(errs, fmt.Errorf("clusterCIDR: %s has host bits set: did you mean %s?", p, p.Masked()))
	default:
		s.ClusterCIDR = p
		if s.BlockSize < p.Bits() || s.BlockSize > 32 {
			errs = append(errs, fmt.Errorf("blockSize: /%d must lie between the cluster CIDR's /%d and /32", s.BlockSize, p.Bits()))
		}
	}
	if s.MTU != 0 && (s.MTU < 576 || s.MTU > 65535) {
		errs = append(errs, fmt.Errorf("mtu: %d is not between 576 and 65535", s.MTU))
	}
	if c.NodeIP != "" {
		if s.NodeIP, err = netip.ParseAddr(c.NodeIP); err != nil || !s.NodeIP.Is4() {
			errs = append(errs, fmt.Errorf("nodeIP: %q is not an IPv4 address", c.NodeIP))
		}
	}
	if s.VNI < 1 || s.VNI > 1<<24-1 {
		errs = append(errs, fmt.Errorf("vxlan.vni: %d is not between 1 and 16777215", s.VNI))
	}
	for name, port := range map[string]int{"vxlan.port": s.Port, "bgp.listenPort": s.ListenPort} {
		if port < 1 || port > 65535 {
			errs = append(errs, fmt.Errorf("%s: %d is not a port number", name, port))
		}
	}
	seen := map[netip.Addr]bool{}
	for i, peer := range c.BGP.Peers {
		a, err := netip.ParseAddr(peer.Address)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("bgp.peers[%d].address: %q is not an IP address", i, peer.Address))
		case seen[a]:
			errs = append(errs, fmt.Errorf("bgp.peers[%d].address: %s is listed twice", i, a))
		case peer.ASN == 0:
			errs = append(errs, fmt.Errorf("bgp.peers[%d].asn: required", i))
		case peer.Port < 0 || peer.Port > 65535:
			errs = append(errs, fmt.Errorf("bgp.peers[%d].port: %d is not a port number", i, peer.Port))
		default:
			seen[a] = true
			s.Peers = append(s.Peers, Peer{Address: a, ASN: peer.ASN, Port: peer.Port, Password: peer.Password})
		}
	}
	if s.Mode == ModeBGP && !s.Mesh && len(s.Peers) == 0 {
		errs = append(errs, errors.New("bgp: nodeToNodeMesh is off and no peers are given: no node would learn any route"))
	}
	return s, errors.Join(errs...)
}
