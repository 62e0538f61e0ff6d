package bgp

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"

	api "github.com/osrg/gobgp/v3/api"
)

// routeTable is the speaker's record of what it gave the RouteSink. GoBGP's watch goroutine,
// the resync deadline and the retry loop all call into it; mu makes the sink see one call
// at a time, in event order.
type routeTable struct {
	sink     RouteSink
	log      *slog.Logger
	routerID netip.Addr

	mu        sync.Mutex
	closed    bool
	installed map[netip.Prefix]netip.Addr // the route wanted in the sink for each prefix
	failed    map[netip.Prefix]bool       // prefixes whose last sink call failed
	own       map[netip.Prefix]bool       // the blocks this node advertises
	peers     []netip.Addr                // every configured peer, for the resync
	eor       map[netip.Addr]bool         // peers that sent End-of-RIB since Start
	synced    bool
}

func newRouteTable(sink RouteSink, routerID netip.Addr, log *slog.Logger) *routeTable {
	return &routeTable{
		sink:      sink,
		log:       log,
		routerID:  routerID,
		installed: make(map[netip.Prefix]netip.Addr),
		failed:    make(map[netip.Prefix]bool),
		own:       make(map[netip.Prefix]bool),
		eor:       make(map[netip.Addr]bool),
	}
}

// route is one best-path change, decoded from GoBGP's API.
type route struct {
	dst      netip.Prefix
	nextHop  netip.Addr
	withdraw bool
	local    bool // originated by this speaker
}

// apply hands a batch of best-path changes and End-of-RIB markers to the sink.
func (t *routeTable) apply(paths []*api.Path) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	for _, p := range paths {
		if p.GetNlri() == nil {
			t.endOfRIB(p)
			continue
		}
		r, err := decodePath(p)
		if err != nil {
			t.log.Warn("ignore bgp path", "neighbor", p.GetNeighborIp(), "error", err)
			continue
		}
		t.applyRoute(r)
	}
	t.syncIfComplete()
}

func (t *routeTable) applyRoute(r route) {
	if r.withdraw || r.local || t.own[r.dst] || r.nextHop == t.routerID {
		t.remove(r.dst)
		return
	}
	if nh, ok := t.installed[r.dst]; ok && nh == r.nextHop && !t.failed[r.dst] {
		return
	}
	t.installed[r.dst] = r.nextHop
	t.push(r.dst)
}

// remove stops routing dst through the sink, if it did.
func (t *routeTable) remove(dst netip.Prefix) {
	if _, ok := t.installed[dst]; !ok && !t.failed[dst] {
		return
	}
	delete(t.installed, dst)
	t.push(dst)
}

// push makes the sink's route for dst what installed says, remembering a failure for retry.
func (t *routeTable) push(dst netip.Prefix) {
	var err error
	nextHop, ok := t.installed[dst]
	if ok {
		err = t.sink.Replace(dst, nextHop)
	} else {
		err = t.sink.Delete(dst)
	}
	if err != nil {
		if !t.failed[dst] {
			t.log.Warn("program bgp route; will retry", "dst", dst.String(), "error", err)
		}
		t.failed[dst] = true
		return
	}
	delete(t.failed, dst)
}

// retry repeats the sink calls that failed.
func (t *routeTable) retry() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	for dst := range t.failed {
		t.push(dst)
	}
}

// setOwn records the blocks this node advertises and stops routing any of them elsewhere.
func (t *routeTable) setOwn(own map[netip.Prefix]bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.own = maps.Clone(own)
	if t.closed {
		return
	}
	for dst := range own {
		t.remove(dst)
	}
}

// setPeers records the peers whose End-of-RIB the resync waits for.
func (t *routeTable) setPeers(peers []netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.peers = peers
	if !t.closed {
		t.syncIfComplete()
	}
}

func (t *routeTable) endOfRIB(p *api.Path) {
	if t.synced || !isIPv4Unicast(p.GetFamily()) {
		return
	}
	addr, err := netip.ParseAddr(p.GetNeighborIp())
	if err != nil {
		return
	}
	t.log.Debug("bgp peer sent end-of-rib", "peer", addr.String())
	t.eor[addr.Unmap()] = true
}

// syncIfComplete sweeps once every configured peer has sent End-of-RIB.
func (t *routeTable) syncIfComplete() {
	if t.synced || len(t.peers) == 0 {
		return
	}
	for _, a := range t.peers {
		if !t.eor[a] {
			return
		}
	}
	t.sweep("every peer sent end-of-rib")
}

// expire sweeps when the resync deadline passes, whatever the peers did.
func (t *routeTable) expire() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || t.synced {
		return
	}
	t.sweep("resync deadline passed")
}

func (t *routeTable) sweep(reason string) {
	t.synced = true
	t.eor = nil
	keep := slices.Collect(maps.Keys(t.installed))
	if err := t.sink.Sweep(keep); err != nil {
		t.log.Warn("remove bgp routes not learned again", "reason", reason, "error", err)
		return
	}
	t.log.Info("bgp routes resynced", "reason", reason, "routes", len(keep))
}

// close stops all further sink calls; the routes stay where they are.
func (t *routeTable) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
}

// decodePath reads the prefix, next hop and origin of an IPv4 unicast path.
func decodePath(p *api.Path) (route, error) {
	if !isIPv4Unicast(p.GetFamily()) {
		return route{}, fmt.Errorf("family %s: not ipv4 unicast", p.GetFamily())
	}
	var nlri api.IPAddressPrefix
	if err := p.GetNlri().UnmarshalTo(&nlri); err != nil {
		return route{}, fmt.Errorf("decode nlri: %w", err)
	}
	addr, err := netip.ParseAddr(nlri.GetPrefix())
	if err != nil {
		return route{}, fmt.Errorf("decode nlri: %w", err)
	}
	dst, err := addr.Unmap().Prefix(int(nlri.GetPrefixLen()))
	if err != nil {
		return route{}, fmt.Errorf("decode nlri: %w", err)
	}
	// GoBGP reports locally originated paths with no neighbor address.
	_, errNeighbor := netip.ParseAddr(p.GetNeighborIp())
	r := route{dst: dst, withdraw: p.GetIsWithdraw(), local: errNeighbor != nil}
	if r.withdraw || r.local {
		return r, nil
	}
	if r.nextHop, err = nextHop(p); err != nil {
		return route{}, fmt.Errorf("route %s: %w", dst, err)
	}
	return r, nil
}

func nextHop(p *api.Path) (netip.Addr, error) {
	for _, a := range p.GetPattrs() {
		var nh api.NextHopAttribute
		var mp api.MpReachNLRIAttribute
		var s string
		switch {
		case a.MessageIs(&nh):
			if err := a.UnmarshalTo(&nh); err != nil {
				return netip.Addr{}, fmt.Errorf("decode next hop: %w", err)
			}
			s = nh.GetNextHop()
		case a.MessageIs(&mp):
			if err := a.UnmarshalTo(&mp); err != nil {
				return netip.Addr{}, fmt.Errorf("decode next hop: %w", err)
			}
			if len(mp.GetNextHops()) == 0 {
				continue
			}
			s = mp.GetNextHops()[0]
		default:
			continue
		}
		addr, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("decode next hop: %w", err)
		}
		if addr = addr.Unmap(); !addr.IsValid() || addr.IsUnspecified() {
			return netip.Addr{}, fmt.Errorf("next hop %s: not usable", addr)
		}
		return addr, nil
	}
	return netip.Addr{}, errors.New("no next hop")
}

var ipv4Unicast = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}

func isIPv4Unicast(f *api.Family) bool {
	return f.GetAfi() == api.Family_AFI_IP && f.GetSafi() == api.Family_SAFI_UNICAST
}
