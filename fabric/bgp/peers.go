package bgp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/anypb"
)

// Names of the GoBGP policy objects the speaker owns.
const (
	exportPolicy    = "loom-export-local"
	importPolicy    = "loom-import-accepted"
	acceptPrefixSet = "loom-accept"
	globalTable     = "global"
)

// maxDeferral bounds how long a restarting speaker holds back its first UPDATEs while it
// waits for its peers' End-of-RIB.
const maxDeferral = 10 * time.Second

// SetMeshPeers makes peers the set of mesh peers: it adds the new ones, removes those no
// longer listed and re-creates those whose settings changed (GoBGP applies a new ASN, port or
// password only to a new session). A zero ASN means the node's own. Entries for this node's
// router id or for a configured peer are skipped, so the caller may pass every node of the
// cluster. Called before Start, it only records the set. On error, the peers that could be
// changed are; calling again with the same list retries the rest.
func (s *Speaker) SetMeshPeers(ctx context.Context, peers []Peer) error {
	want, err := s.meshSet(peers)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.phase {
	case phaseStopped:
		return ErrStopped
	case phaseNew:
		s.mesh = want
		return nil
	}
	var errs []error
	for addr, have := range s.mesh {
		if p, ok := want[addr]; ok && p == have {
			continue
		}
		if err := s.deletePeer(ctx, addr); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(s.mesh, addr)
	}
	for addr, p := range want {
		if _, ok := s.mesh[addr]; ok {
			continue
		}
		if err := s.addPeer(ctx, p, true, false); err != nil {
			errs = append(errs, err)
			continue
		}
		s.mesh[addr] = p
	}
	s.routes.setPeers(s.peerAddrs())
	return errors.Join(errs...)
}

// meshSet validates a mesh peer list and indexes it by address.
func (s *Speaker) meshSet(peers []Peer) (map[netip.Addr]Peer, error) {
	configured := make(map[netip.Addr]bool, len(s.cfg.Peers))
	for _, p := range s.cfg.Peers {
		configured[p.Address] = true
	}
	want := make(map[netip.Addr]Peer, len(peers))
	for _, p := range peers {
		p = p.withDefaults(s.cfg.ASN)
		if p.Address == s.cfg.RouterID || configured[p.Address] {
			continue
		}
		if err := p.validate(s.cfg.RouterID); err != nil {
			return nil, fmt.Errorf("set mesh peers: %w: %w", ErrInvalidConfig, err)
		}
		if _, dup := want[p.Address]; dup {
			return nil, fmt.Errorf("set mesh peers: %w: peer %s: listed twice", ErrInvalidConfig, p.Address)
		}
		want[p.Address] = p
	}
	return want, nil
}

// addPeer configures a neighbor. Of two mesh nodes, only the one with the lower address
// opens the session (see the design notes). restarting sets the Restart State and
// Forwarding State bits of the graceful restart capability.
func (s *Speaker) addPeer(ctx context.Context, p Peer, mesh, restarting bool) error {
	if p.Password != "" {
		if err := checkTCPMD5(); err != nil {
			return fmt.Errorf("add bgp peer %s: %w", p.Address, err)
		}
	}
	peer := s.apiPeer(p, restarting)
	peer.Transport.PassiveMode = mesh && p.Address.Less(s.cfg.RouterID)
	if err := s.bgp.AddPeer(ctx, &api.AddPeerRequest{Peer: peer}); err != nil {
		return fmt.Errorf("add bgp peer %s: %w", p.Address, err)
	}
	return nil
}

func (s *Speaker) deletePeer(ctx context.Context, addr netip.Addr) error {
	if err := s.bgp.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
		return fmt.Errorf("delete bgp peer %s: %w", addr, err)
	}
	return nil
}

func (s *Speaker) apiPeer(p Peer, restarting bool) *api.Peer {
	peer := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address.String(),
			PeerAsn:         p.ASN,
			AuthPassword:    p.Password,
			Description:     p.Description,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:      seconds(s.cfg.ConnectRetry),
			HoldTime:          seconds(s.cfg.HoldTime),
			KeepaliveInterval: seconds(s.cfg.KeepaliveInterval),
		}},
		Transport: &api.Transport{
			LocalAddress: s.cfg.RouterID.String(),
			RemotePort:   uint32(p.Port),
		},
		AfiSafis: []*api.AfiSafi{{
			Config: &api.AfiSafiConfig{Family: ipv4Unicast, Enabled: true},
		}},
	}
	if s.cfg.DisableGracefulRestart {
		return peer
	}
	deferral := max(min(maxDeferral, s.cfg.RestartTime/2), time.Second)
	peer.GracefulRestart = &api.GracefulRestart{
		Enabled:         true,
		RestartTime:     uint32(seconds(s.cfg.RestartTime)),
		DeferralTime:    uint32(seconds(deferral)),
		LocalRestarting: restarting,
	}
	peer.AfiSafis[0].MpGracefulRestart = &api.MpGracefulRestart{
		Config: &api.MpGracefulRestartConfig{Enabled: true},
	}
	return peer
}

func (s *Speaker) addPath(ctx context.Context, p netip.Prefix) error {
	path, err := localPath(p, s.cfg.RouterID)
	if err != nil {
		return fmt.Errorf("advertise %s: %w", p, err)
	}
	if _, err := s.bgp.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: path}); err != nil {
		return fmt.Errorf("advertise %s: %w", p, err)
	}
	return nil
}

func (s *Speaker) deletePath(ctx context.Context, p netip.Prefix) error {
	path, err := localPath(p, s.cfg.RouterID)
	if err != nil {
		return fmt.Errorf("withdraw %s: %w", p, err)
	}
	req := &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Family: ipv4Unicast, Path: path}
	if err := s.bgp.DeletePath(ctx, req); err != nil {
		return fmt.Errorf("withdraw %s: %w", p, err)
	}
	return nil
}

// localPath is the route this node originates for one of its blocks: origin IGP, next hop
// the router id.
func localPath(p netip.Prefix, nextHop netip.Addr) (*api.Path, error) {
	nlri, err := anypb.New(&api.IPAddressPrefix{Prefix: p.Addr().String(), PrefixLen: uint32(p.Bits())})
	if err != nil {
		return nil, err
	}
	origin, err := anypb.New(&api.OriginAttribute{Origin: 0})
	if err != nil {
		return nil, err
	}
	nh, err := anypb.New(&api.NextHopAttribute{NextHop: nextHop.String()})
	if err != nil {
		return nil, err
	}
	return &api.Path{Family: ipv4Unicast, Nlri: nlri, Pattrs: []*anypb.Any{origin, nh}}, nil
}

// setPolicies installs the global export policy (only locally originated routes leave the
// node) and, when AcceptPrefixes is set, the global import policy.
func (s *Speaker) setPolicies(ctx context.Context) error {
	export := &api.Policy{Name: exportPolicy, Statements: []*api.Statement{acceptLocal("loom-export-local")}}
	if err := s.assignPolicy(ctx, export, api.PolicyDirection_EXPORT); err != nil {
		return err
	}
	if len(s.cfg.AcceptPrefixes) == 0 {
		return nil
	}
	set := &api.DefinedSet{DefinedType: api.DefinedType_PREFIX, Name: acceptPrefixSet}
	for _, p := range s.cfg.AcceptPrefixes {
		set.Prefixes = append(set.Prefixes, &api.Prefix{
			IpPrefix:      p.String(),
			MaskLengthMin: uint32(p.Bits()),
			MaskLengthMax: 32,
		})
	}
	if err := s.bgp.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: set}); err != nil {
		return fmt.Errorf("add bgp prefix set %s: %w", acceptPrefixSet, err)
	}
	accepted := &api.Statement{
		Name:       "loom-import-accepted",
		Conditions: &api.Conditions{PrefixSet: &api.MatchSet{Type: api.MatchSet_ANY, Name: acceptPrefixSet}},
		Actions:    &api.Actions{RouteAction: api.RouteAction_ACCEPT},
	}
	// The import policy also sees the node's own paths; they must pass whatever the set.
	imp := &api.Policy{Name: importPolicy, Statements: []*api.Statement{acceptLocal("loom-import-local"), accepted}}
	return s.assignPolicy(ctx, imp, api.PolicyDirection_IMPORT)
}

// acceptLocal is a policy statement accepting the routes this node originates. GoBGP
// names statements globally, so each policy gets its own.
func acceptLocal(name string) *api.Statement {
	return &api.Statement{
		Name:       name,
		Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
		Actions:    &api.Actions{RouteAction: api.RouteAction_ACCEPT},
	}
}

// assignPolicy adds a policy and makes it the global one for dir, rejecting what it does
// not accept.
func (s *Speaker) assignPolicy(ctx context.Context, p *api.Policy, dir api.PolicyDirection) error {
	if err := s.bgp.AddPolicy(ctx, &api.AddPolicyRequest{Policy: p}); err != nil {
		return fmt.Errorf("add bgp policy %s: %w", p.Name, err)
	}
	a := &api.PolicyAssignment{
		Name:          globalTable,
		Direction:     dir,
		Policies:      []*api.Policy{{Name: p.Name}},
		DefaultAction: api.RouteAction_REJECT,
	}
	if err := s.bgp.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: a}); err != nil {
		return fmt.Errorf("assign bgp policy %s: %w", p.Name, err)
	}
	return nil
}

// ErrNoTCPMD5 is returned for a peer with a password when its sessions could not be signed
// with TCP MD5.
var ErrNoTCPMD5 = errors.New("tcp md5 signatures unavailable")

// checkTCPMD5 reports whether GoBGP's sockets can carry a TCP MD5 signature key. GoBGP only
// logs a listening socket it cannot sign, and that socket would then accept unsigned
// sessions from a peer configured with a password; the speaker refuses such a peer instead.
//
// Since Go 1.24, net listens with Multipath TCP by default where the kernel has it, and an
// MPTCP socket refuses TCP_MD5SIG: binaries embedding the speaker need
// "//go:debug multipathtcp=0" (or 3, MPTCP for dialing only) for passwords to work.
func checkTCPMD5() error {
	proto := unix.IPPROTO_TCP
	if new(net.ListenConfig).MultipathTCP() {
		proto = unix.IPPROTO_MPTCP
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, proto)
	if err != nil && proto == unix.IPPROTO_MPTCP {
		// No MPTCP in this kernel: Go falls back to plain TCP.
		proto = unix.IPPROTO_TCP
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, proto)
	}
	if err != nil {
		return fmt.Errorf("probe tcp md5 support: %w", err)
	}
	defer unix.Close(fd)
	sig := unix.TCPMD5Sig{Keylen: 1}
	sig.Addr.Family = unix.AF_INET
	copy(sig.Addr.Data[2:], []byte{127, 0, 0, 1})
	sig.Key[0] = 'x'
	err = unix.SetsockoptTCPMD5Sig(fd, unix.IPPROTO_TCP, unix.TCP_MD5SIG, &sig)
	switch {
	case err == nil:
		return nil
	case proto == unix.IPPROTO_MPTCP:
		return fmt.Errorf("tcp md5 password: %w: Go listens with Multipath TCP, which cannot sign sessions (%w): build loomd with //go:debug multipathtcp=0",
			ErrNoTCPMD5, err)
	default:
		return fmt.Errorf("tcp md5 password: %w: the kernel refuses TCP_MD5SIG (%w): remove the password or enable CONFIG_TCP_MD5SIG",
			ErrNoTCPMD5, err)
	}
}
