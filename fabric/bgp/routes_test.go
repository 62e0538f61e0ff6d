package bgp

import (
	"net/netip"
	"slices"
	"testing"

	api "github.com/osrg/gobgp/v3/api"
	"google.golang.org/protobuf/types/known/anypb"
)

// peerPath is a best path for dst learned from neighbor with the given next hop.
func peerPath(t *testing.T, dst, neighbor, nextHop string) *api.Path {
	t.Helper()
	p, err := localPath(mustPrefix(dst), netip.MustParseAddr(nextHop))
	if err != nil {
		t.Fatalf("build path: %v", err)
	}
	p.NeighborIp = neighbor
	return p
}

func withdrawn(p *api.Path) *api.Path {
	p.IsWithdraw = true
	return p
}

func eor(neighbor string) *api.Path {
	return &api.Path{Family: ipv4Unicast, NeighborIp: neighbor}
}

func TestRouteTable(t *testing.T) {
	self := netip.MustParseAddr("192.0.2.10")
	tests := []struct {
		name  string
		own   []string
		steps [][]*api.Path
		want  []string // sink calls, in order
	}{
		{
			name:  "install then withdraw",
			steps: [][]*api.Path{{peerPath(t, "10.244.1.0/26", "192.0.2.11", "192.0.2.11")}, {withdrawn(peerPath(t, "10.244.1.0/26", "192.0.2.11", "192.0.2.11"))}},
			want:  []string{"replace 10.244.1.0/26 via 192.0.2.11", "delete 10.244.1.0/26"},
		},
		{
			name:  "same best path twice is one call",
			steps: [][]*api.Path{{peerPath(t, "10.244.1.0/26", "192.0.2.11", "192.0.2.11")}, {peerPath(t, "10.244.1.0/26", "192.0.2.11", "192.0.2.11")}},
			want:  []string{"replace 10.244.1.0/26 via 192.0.2.11"},
		},
		{
			name:  "new next hop replaces",
			steps: [][]*api.Path{{peerPath(t, "10.244.1.0/26", "192.0.2.11", "192.0.2.11")}, {peerPath(t, "10.244.1.0/26", "192.0.2.254", "192.0.2.12")}},
			want:  []string{"replace 10.244.1.0/26 via 192.0.2.11", "replace 10.244.1.0/26 via 192.0.2.12"},
		},
		{
			name:  "withdrawal of a route never installed is no call",
			steps: [][]*api.Path{{withdrawn(peerPath(t, "10.244.1.0/26", "192.0.2.11", "192.0.2.11"))}},
		},
		{
			name:  "own block is not installed",
			own:   []string{"10.244.0.64/26"},
			steps: [][]*api.Path{{peerPath(t, "10.244.0.64/26", "192.0.2.11", "192.0.2.11")}},
		},
		{
			name:  "locally originated path is not installed",
			steps: [][]*api.Path{{peerPath(t, "10.244.0.64/26", "<nil>", "192.0.2.10")}},
		},
		{
			name:  "path via this node is not installed",
			steps: [][]*api.Path{{peerPath(t, "10.244.0.64/26", "192.0.2.254", "192.0.2.10")}},
		},
		{
			name: "own path becoming best removes the remote route",
			steps: [][]*api.Path{
				{peerPath(t, "10.244.0.64/26", "192.0.2.11", "192.0.2.11")},
				{peerPath(t, "10.244.0.64/26", "<nil>", "192.0.2.10")},
			},
			want: []string{"replace 10.244.0.64/26 via 192.0.2.11", "delete 10.244.0.64/26"},
		},
		{
			name:  "undecodable path is skipped",
			steps: [][]*api.Path{{{Family: ipv4Unicast, NeighborIp: "192.0.2.11", Nlri: &anypb.Any{}}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := newRecordingSink()
			rt := newRouteTable(sink, self, testLogger(t))
			own := map[netip.Prefix]bool{}
			for _, p := range tt.own {
				own[mustPrefix(p)] = true
			}
			rt.setOwn(own)
			for _, paths := range tt.steps {
				rt.apply(paths)
			}
			if got := sink.calls(); !slices.Equal(got, tt.want) {
				t.Errorf("sink calls:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestRouteTableOwnership(t *testing.T) {
	sink := newRecordingSink()
	rt := newRouteTable(sink, netip.MustParseAddr("192.0.2.10"), testLogger(t))
	rt.apply([]*api.Path{peerPath(t, "10.244.0.64/26", "192.0.2.11", "192.0.2.11")})
	rt.setOwn(map[netip.Prefix]bool{mustPrefix("10.244.0.64/26"): true})
	want := []string{"replace 10.244.0.64/26 via 192.0.2.11", "delete 10.244.0.64/26"}
	if got := sink.calls(); !slices.Equal(got, want) {
		t.Errorf("taking a block over: got %q, want %q", got, want)
	}
}

func TestRouteTableResync(t *testing.T) {
	a, b := netip.MustParseAddr("192.0.2.11"), netip.MustParseAddr("192.0.2.12")
	sink := newRecordingSink()
	rt := newRouteTable(sink, netip.MustParseAddr("192.0.2.10"), testLogger(t))
	rt.setPeers([]netip.Addr{a, b})
	rt.apply([]*api.Path{peerPath(t, "10.244.1.0/26", "192.0.2.11", "192.0.2.11"), eor("192.0.2.11")})
	if n := len(sink.sweepCalls()); n != 0 {
		t.Fatalf("swept after one of two peers sent end-of-rib")
	}
	rt.apply([]*api.Path{eor("192.0.2.12")})
	sweeps := sink.sweepCalls()
	if len(sweeps) != 1 || !slices.Equal(sweeps[0], []netip.Prefix{mustPrefix("10.244.1.0/26")}) {
		t.Fatalf("sweeps: got %v, want one keeping 10.244.1.0/26", sweeps)
	}
	rt.apply([]*api.Path{eor("192.0.2.11")})
	rt.expire()
	if n := len(sink.sweepCalls()); n != 1 {
		t.Errorf("sweeps: got %d, want exactly one", n)
	}
}

func TestRouteTableResyncDeadline(t *testing.T) {
	sink := newRecordingSink()
	rt := newRouteTable(sink, netip.MustParseAddr("192.0.2.10"), testLogger(t))
	rt.setPeers(nil)
	rt.apply([]*api.Path{peerPath(t, "10.244.1.0/26", "192.0.2.11", "192.0.2.11")})
	if n := len(sink.sweepCalls()); n != 0 {
		t.Fatalf("swept with no peers before the deadline")
	}
	rt.expire()
	if sweeps := sink.sweepCalls(); len(sweeps) != 1 || len(sweeps[0]) != 1 {
		t.Fatalf("sweeps at the deadline: got %v, want one keeping the learned route", sweeps)
	}
}

func TestRouteTableRetriesAndClose(t *testing.T) {
	dst := mustPrefix("10.244.1.0/26")
	sink := newRecordingSink()
	sink.fail[dst] = 2
	rt := newRouteTable(sink, netip.MustParseAddr("192.0.2.10"), testLogger(t))
	rt.apply([]*api.Path{peerPath(t, "10.244.1.0/26", "192.0.2.11", "192.0.2.11")})
	rt.retry()
	if len(sink.snapshot()) != 0 {
		t.Fatalf("route installed despite injected failures")
	}
	rt.retry()
	if got := sink.snapshot()[dst]; got != netip.MustParseAddr("192.0.2.11") {
		t.Fatalf("after retries: got next hop %v, want 192.0.2.11", got)
	}
	rt.retry()
	if n := len(sink.calls()); n != 3 {
		t.Errorf("sink calls: got %d, want 3 (no retry once installed)", n)
	}
	rt.close()
	rt.apply([]*api.Path{withdrawn(peerPath(t, "10.244.1.0/26", "192.0.2.11", "192.0.2.11"))})
	rt.expire()
	if n := len(sink.calls()); n != 3 {
		t.Errorf("sink called after close: %q", sink.calls())
	}
}

func TestDecodePath(t *testing.T) {
	mp, err := anypb.New(&api.MpReachNLRIAttribute{NextHops: []string{"192.0.2.20"}})
	if err != nil {
		t.Fatal(err)
	}
	viaMP := peerPath(t, "10.244.2.0/26", "192.0.2.11", "192.0.2.11")
	viaMP.Pattrs = []*anypb.Any{viaMP.Pattrs[0], mp}
	noNextHop := func() *api.Path {
		p := peerPath(t, "10.244.2.0/26", "192.0.2.11", "192.0.2.11")
		p.Pattrs = p.Pattrs[:1]
		return p
	}
	ipv6 := peerPath(t, "10.244.2.0/26", "192.0.2.11", "192.0.2.11")
	ipv6.Family = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}

	tests := []struct {
		name    string
		path    *api.Path
		want    route
		wantErr bool
	}{
		{"next hop attribute", peerPath(t, "10.244.2.0/26", "192.0.2.11", "192.0.2.11"),
			route{dst: mustPrefix("10.244.2.0/26"), nextHop: netip.MustParseAddr("192.0.2.11")}, false},
		{"mp reach next hop", viaMP,
			route{dst: mustPrefix("10.244.2.0/26"), nextHop: netip.MustParseAddr("192.0.2.20")}, false},
		{"withdrawal needs no next hop", withdrawn(noNextHop()),
			route{dst: mustPrefix("10.244.2.0/26"), withdraw: true}, false},
		{"local", peerPath(t, "10.244.2.0/26", "<nil>", "192.0.2.10"),
			route{dst: mustPrefix("10.244.2.0/26"), local: true}, false},
		{"no next hop", noNextHop(), route{}, true},
		{"ipv6 family", ipv6, route{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodePath(tt.path)
			if (err != nil) != tt.wantErr {
				t.Fatalf("decodePath: error %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("decodePath: got %+v, want %+v", got, tt.want)
			}
		})
	}
}
