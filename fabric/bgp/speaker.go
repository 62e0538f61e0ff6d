package bgp

// Design notes:
//
// Each node runs one GoBGP server inside loomd, which runs as a whole process in the node's
// network namespace (GoBGP opens sockets from many goroutines, so moving one thread into a
// namespace would not do). The node advertises its pod blocks as locally originated IPv4
// unicast routes whose NEXT_HOP is its router id, the underlay address the other nodes reach
// it on. Peers are the other nodes (a full iBGP mesh, the list kept by the caller from the
// Kubernetes Node list) and the route reflectors or top-of-rack routers of the configuration.
// Sessions are opened from the router id.
//
// The mesh is unidirectional, as Calico's is: of two nodes, the one with the lower address
// opens the session and the other only listens. Both sides dialling leads to connection
// collisions, and with GoBGP each failed attempt puts a peer in Idle for 5 seconds, so two
// nodes restarting at once can miss each other for a long time; worse, see the last note.
//
// Policies. A global export policy sends only locally originated routes: a node never
// re-advertises what it learned, so a top-of-rack router reaches every block through the
// block's own node, and a route reflector sees each block once. When AcceptPrefixes is set,
// a global import policy keeps only routes inside it (and the node's own), so a peer cannot
// make the node install a default route or a route to the underlay.
//
// From best paths to the kernel. A GoBGP watch delivers, on one goroutine and in order, every
// change of best path, each End-of-RIB marker and each session state change. The speaker
// hands the best path of each prefix to a RouteSink (Replace, Delete), except paths for its
// own blocks and paths whose next hop is itself. One best path per prefix: no ECMP. A sink
// call that fails is retried every few seconds until it succeeds or the route goes away.
//
// Restarting loomd without breaking pods (RFC 4724 graceful restart):
//   - The speaker advertises the graceful restart capability for IPv4 unicast, with
//     RestartTime, to every peer. As a helper, when a peer's session drops without a
//     NOTIFICATION, GoBGP keeps that peer's routes as stale (no change of best path, so the
//     kernel routes stay) until the peer is back and sends End-of-RIB, or RestartTime ends.
//   - As the restarting side, Stop must end the sessions without a NOTIFICATION, because a
//     NOTIFICATION makes peers drop the routes at once (RFC 4724, section 4). GoBGP v3.37.0's
//     Stop always sends Cease/Peer De-configured (later releases add an option for this,
//     osrg/gobgp#2998), so Stop first destroys the established TCP sessions through the
//     kernel's sock_diag interface (what `ss -K` does; needs CAP_NET_ADMIN). The peers see
//     the connection reset, keep this node's routes as stale, and GoBGP's own Cease then goes
//     nowhere. Without the capability, Stop logs that peers will drop the routes. A loomd
//     that dies without Stop ends its sessions the same way.
//   - Stop never touches the kernel: routes stay, and so does the traffic.
//   - A starting speaker sets the Restart State and Forwarding State bits towards the peers
//     it starts with (GoBGP sends both together), so helpers that check the Forwarding bit,
//     such as BIRD, keep the stale routes too; GoBGP then defers its own first UPDATEs until
//     those peers sent End-of-RIB or a deferral of min(10s, RestartTime/2) ends.
//   - Routes a previous run installed stay in the kernel until this run has resynced: once
//     every configured peer has sent End-of-RIB since Start (a peer whose session does not
//     negotiate graceful restart never does), or RestartTime after Start, whichever comes
//     first, the speaker calls RouteSink.Sweep with the routes it holds, and the sink removes
//     the protocol bgp routes that were not learned again. RestartTime is the window peers
//     give this node, so the same window is given to them.
//   - The pod blocks and mesh peers known at start-up should be given before Start
//     (Advertise and SetMeshPeers accept that), so the first UPDATE sent before End-of-RIB
//     already carries every block: a helper drops, at End-of-RIB, the stale routes the
//     restarted node did not send again.
//
// What GoBGP v3.37.0 does not do, or does wrong:
//   - No graceful Stop (worked around above) and no way to end its Serve goroutine, which
//     outlives Stop: one parked goroutine per stopped speaker.
//   - As a helper, it drops a restarting peer's stale routes as soon as one attempt to
//     reconnect fails before Established (it treats any return to Idle as the end of the
//     restart). The unidirectional mesh avoids the collisions that cause most such failures;
//     a configured peer that dials while this node is in Idle can still trigger it.
//   - Route selection options are package variables that every StartBgp writes: one speaker
//     per process, or at least none started while another is exchanging routes.
//   - It marks paths stale without synchronising with its watch goroutine (osrg/gobgp#2705).
//     The race is on a flag the speaker does not read.
//   - No next hop tracking without zebra: see KernelRoutes for recursive next hops.
//   - Since Go 1.24, listeners use Multipath TCP by default where the kernel has it, and an
//     MPTCP socket cannot carry TCP MD5 keys (or GoBGP's TTL settings); a binary embedding
//     the speaker sets //go:debug multipathtcp=0, and a peer with a password is refused
//     otherwise (see checkTCPMD5).

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrStopped is returned by the methods of a Speaker that was stopped or failed to start.
var ErrStopped = errors.New("bgp speaker stopped")

// retryInterval is how often sink calls that failed are tried again.
const retryInterval = 5 * time.Second

// RouteSink is where the speaker puts the best route for each remote prefix. Calls never
// overlap, and follow the order of the BGP events.
type RouteSink interface {
	// Replace installs dst via nextHop, replacing any route the sink has for dst.
	Replace(dst netip.Prefix, nextHop netip.Addr) error
	// Delete removes the route for dst; a route already gone is not an error.
	Delete(dst netip.Prefix) error
	// Sweep removes the routes of a previous run that are not in keep. The speaker calls
	// it once, when it has learned its peers' routes again after starting.
	Sweep(keep []netip.Prefix) error
}

// PeerState is a snapshot of one BGP session for status and metrics.
type PeerState struct {
	Address     netip.Addr
	ASN         uint32
	Description string
	// Mesh tells a node of the mesh from a configured peer.
	Mesh bool
	// State is the session state in lower case: "idle", "connect", "active", "opensent",
	// "openconfirm" or "established".
	State string
	// Received counts the IPv4 unicast prefixes received from the peer, Accepted those
	// GoBGP kept after its loop checks (AS path, originator id). A route refused by
	// AcceptPrefixes still counts as accepted: GoBGP applies the import policy on the way
	// into its RIB, after these counters.
	Received, Accepted uint64
}

type phase int

const (
	phaseNew phase = iota
	phaseRunning
	phaseStopped
)

// Speaker is the node's BGP speaker. Its methods are safe for concurrent use.
type Speaker struct {
	cfg    Config
	bgp    *server.BgpServer
	log    *slog.Logger
	routes *routeTable
	// gracefulStop makes Stop reset the sessions so that peers keep this node's routes;
	// it follows the graceful restart setting, and tests turn it off when tearing down.
	gracefulStop bool

	mu        sync.Mutex // guards the fields below and orders the calls that change GoBGP
	phase     phase
	prefixes  map[netip.Prefix]bool // blocks advertised, or to advertise at Start
	mesh      map[netip.Addr]Peer   // mesh peers configured, or to configure at Start
	stopWatch context.CancelFunc
	syncTimer *time.Timer
	done      chan struct{}

	sessMu   sync.Mutex
	sessions map[string]session // by peer address, as GoBGP's watch reported them
}

// session is what the watch last reported about one peer's session.
type session struct {
	state         api.PeerState_SessionState
	local, remote netip.AddrPort // the TCP connection, while established
}

// New validates cfg and returns a speaker that will give the routes it learns to routes.
// Nothing is opened before Start.
func New(cfg Config, routes RouteSink, log *slog.Logger) (*Speaker, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if routes == nil {
		return nil, fmt.Errorf("%w: no route sink", ErrInvalidConfig)
	}
	log = log.With("routerID", cfg.RouterID.String())
	return &Speaker{
		cfg:          cfg,
		bgp:          server.NewBgpServer(server.LoggerOption(gobgpLogger{log: log.With("component", "gobgp")})),
		log:          log,
		routes:       newRouteTable(routes, cfg.RouterID, log),
		gracefulStop: !cfg.DisableGracefulRestart,
		prefixes:     make(map[netip.Prefix]bool),
		mesh:         make(map[netip.Addr]Peer),
		sessions:     make(map[string]session),
	}, nil
}

// Start starts GoBGP, sets its policies, begins watching best paths, advertises the blocks
// and configures the peers given so far. ctx bounds these calls only; Stop ends the speaker.
// A speaker that failed to start is stopped.
func (s *Speaker) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.phase {
	case phaseRunning:
		return errors.New("start bgp speaker: already started")
	case phaseStopped:
		return ErrStopped
	}
	go s.bgp.Serve()
	watchCtx, stopWatch := context.WithCancel(context.Background())
	started := false
	defer func() {
		if !started {
			stopWatch()
			s.bgp.Stop()
			s.phase = phaseStopped
		}
	}()
	if err := s.bgp.StartBgp(ctx, &api.StartBgpRequest{Global: s.global()}); err != nil {
		return fmt.Errorf("start bgp speaker on port %d: %w", s.cfg.ListenPort, err)
	}
	if err := s.setPolicies(ctx); err != nil {
		return err
	}
	if err := s.bgp.WatchEvent(watchCtx, watchRequest(), s.onEvent); err != nil {
		return fmt.Errorf("watch bgp events: %w", err)
	}
	for p := range s.prefixes {
		if err := s.addPath(ctx, p); err != nil {
			return err
		}
	}
	for _, p := range s.cfg.Peers {
		if err := s.addPeer(ctx, p, false, true); err != nil {
			return err
		}
	}
	for _, p := range s.mesh {
		if err := s.addPeer(ctx, p, true, true); err != nil {
			return err
		}
	}
	started = true
	s.phase = phaseRunning
	s.stopWatch = stopWatch
	s.routes.setPeers(s.peerAddrs())
	s.syncTimer = time.AfterFunc(s.cfg.RestartTime, s.routes.expire)
	s.done = make(chan struct{})
	go s.retryLoop(s.done)
	s.log.Info("bgp speaker started", "asn", s.cfg.ASN, "port", s.cfg.ListenPort,
		"peers", len(s.cfg.Peers), "meshPeers", len(s.mesh), "prefixes", len(s.prefixes))
	return nil
}

// Stop ends the speaker for good. It leaves every route in the kernel and, where it can,
// ends the sessions the way a crash would, so that peers keep this node's routes for
// RestartTime (see the design notes). Stop is idempotent.
func (s *Speaker) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.phase
	s.phase = phaseStopped
	if prev != phaseRunning {
		return
	}
	s.routes.close()
	s.syncTimer.Stop()
	close(s.done)
	s.stopWatch()
	if s.gracefulStop {
		s.abortSessions()
	}
	s.bgp.Stop()
	s.log.Info("bgp speaker stopped")
}

// Advertise makes prefixes the set of blocks this node advertises: it announces the new
// ones and withdraws those no longer listed. Called before Start, it only records them.
func (s *Speaker) Advertise(ctx context.Context, prefixes []netip.Prefix) error {
	want := make(map[netip.Prefix]bool, len(prefixes))
	for _, p := range prefixes {
		if !p.IsValid() || !p.Addr().Is4() || p != p.Masked() {
			return fmt.Errorf("advertise %s: want an IPv4 network such as 10.244.0.64/26", p)
		}
		want[p] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.phase == phaseStopped {
		return ErrStopped
	}
	// The route table learns the new set first: a remote path for a block that is no longer
	// ours must be installed when GoBGP reports it after the withdrawal below.
	s.routes.setOwn(want)
	if s.phase == phaseNew {
		s.prefixes = want
		return nil
	}
	var errs []error
	for p := range s.prefixes {
		if want[p] {
			continue
		}
		if err := s.deletePath(ctx, p); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(s.prefixes, p)
	}
	for p := range want {
		if s.prefixes[p] {
			continue
		}
		if err := s.addPath(ctx, p); err != nil {
			errs = append(errs, err)
			continue
		}
		s.prefixes[p] = true
	}
	return errors.Join(errs...)
}

// Peers reports the state of every session, configured and mesh; none before Start.
func (s *Speaker) Peers(ctx context.Context) ([]PeerState, error) {
	s.mu.Lock()
	switch s.phase {
	case phaseNew:
		s.mu.Unlock()
		return nil, nil
	case phaseStopped:
		s.mu.Unlock()
		return nil, ErrStopped
	}
	mesh := make(map[netip.Addr]bool, len(s.mesh))
	for a := range s.mesh {
		mesh[a] = true
	}
	s.mu.Unlock()

	var out []PeerState
	err := s.bgp.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		addr, err := netip.ParseAddr(p.GetConf().GetNeighborAddress())
		if err != nil {
			return
		}
		st := PeerState{
			Address:     addr,
			ASN:         p.GetConf().GetPeerAsn(),
			Description: p.GetConf().GetDescription(),
			Mesh:        mesh[addr],
			State:       sessionState(p.GetState().GetSessionState()),
		}
		for _, af := range p.GetAfiSafis() {
			if isIPv4Unicast(af.GetState().GetFamily()) {
				st.Received = af.GetState().GetReceived()
				st.Accepted = af.GetState().GetAccepted()
			}
		}
		out = append(out, st)
	})
	if err != nil {
		return nil, fmt.Errorf("list bgp peers: %w", err)
	}
	return out, nil
}

func (s *Speaker) global() *api.Global {
	g := &api.Global{
		Asn:        s.cfg.ASN,
		RouterId:   s.cfg.RouterID.String(),
		ListenPort: int32(s.cfg.ListenPort),
	}
	for _, a := range s.cfg.ListenAddresses {
		g.ListenAddresses = append(g.ListenAddresses, a.String())
	}
	return g
}

func watchRequest() *api.WatchEventRequest {
	return &api.WatchEventRequest{
		Peer: &api.WatchEventRequest_Peer{},
		Table: &api.WatchEventRequest_Table{Filters: []*api.WatchEventRequest_Table_Filter{
			{Type: api.WatchEventRequest_Table_Filter_BEST, Init: true},
			{Type: api.WatchEventRequest_Table_Filter_EOR},
		}},
	}
}

// onEvent runs on GoBGP's watch goroutine, one event at a time.
func (s *Speaker) onEvent(ev *api.WatchEventResponse) {
	switch e := ev.GetEvent().(type) {
	case *api.WatchEventResponse_Table:
		s.routes.apply(e.Table.GetPaths())
	case *api.WatchEventResponse_Peer:
		if e.Peer.GetType() == api.WatchEventResponse_PeerEvent_STATE {
			s.logSession(e.Peer.GetPeer())
		}
	}
}

// logSession records a session's new state and logs it: at Info when the session comes up
// or goes down, at Debug for the connection attempts in between.
func (s *Speaker) logSession(p *api.Peer) {
	addr := p.GetState().GetNeighborAddress()
	now := session{state: p.GetState().GetSessionState()}
	if now.state == api.PeerState_ESTABLISHED {
		t := p.GetTransport()
		local, _ := netip.ParseAddr(t.GetLocalAddress())
		remote, _ := netip.ParseAddr(addr)
		now.local = netip.AddrPortFrom(local.Unmap(), uint16(t.GetLocalPort()))
		now.remote = netip.AddrPortFrom(remote.Unmap(), uint16(t.GetRemotePort()))
	}
	s.sessMu.Lock()
	prev := s.sessions[addr]
	s.sessions[addr] = now
	s.sessMu.Unlock()

	level := slog.LevelDebug
	if (now.state == api.PeerState_ESTABLISHED) != (prev.state == api.PeerState_ESTABLISHED) {
		level = slog.LevelInfo
	}
	s.log.Log(context.Background(), level, "bgp session state changed",
		"peer", addr, "asn", p.GetState().GetPeerAsn(), "state", sessionState(now.state),
		"previous", sessionState(prev.state))
}

func (s *Speaker) retryLoop(done <-chan struct{}) {
	t := time.NewTicker(retryInterval)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			s.routes.retry()
		}
	}
}

// abortSessions resets the established TCP sessions from the kernel side, so that GoBGP's
// Stop cannot send a NOTIFICATION on them and peers treat the speaker as restarting.
func (s *Speaker) abortSessions() {
	s.sessMu.Lock()
	var conns []session
	for _, c := range s.sessions {
		if c.state == api.PeerState_ESTABLISHED && c.local.IsValid() && c.remote.IsValid() {
			conns = append(conns, c)
		}
	}
	s.sessMu.Unlock()
	for _, c := range conns {
		err := netlink.SocketDestroy(net.TCPAddrFromAddrPort(c.local), net.TCPAddrFromAddrPort(c.remote))
		if errors.Is(err, unix.ENOENT) {
			continue // the session ended on its own meanwhile
		}
		if err != nil {
			s.log.Warn("reset bgp session; the peer will drop this node's routes",
				"peer", c.remote.Addr().String(), "error", err)
		}
	}
}

func (s *Speaker) peerAddrs() []netip.Addr {
	addrs := make([]netip.Addr, 0, len(s.cfg.Peers)+len(s.mesh))
	for _, p := range s.cfg.Peers {
		addrs = append(addrs, p.Address)
	}
	for a := range s.mesh {
		addrs = append(addrs, a)
	}
	return addrs
}

func sessionState(st api.PeerState_SessionState) string {
	return strings.ToLower(st.String())
}
