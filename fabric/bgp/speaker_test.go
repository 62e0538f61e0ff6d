package bgp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

const routeTimeout = 15 * time.Second

// TestMesh runs three speakers in a full mesh on 127.0.0.1-3 and checks what each installs
// as blocks come and go and as a node leaves the mesh.
func TestMesh(t *testing.T) {
	port := freePort(t)
	a, sinkA := startSpeaker(t, testConfig(1, port), nil)
	b, sinkB := startSpeaker(t, testConfig(2, port), nil)
	c, sinkC := startSpeaker(t, testConfig(3, port), nil)
	advertise(t, a, "10.244.0.0/26", "10.244.0.64/26")
	advertise(t, b, "10.244.1.0/26")
	advertise(t, c, "10.244.2.0/26")
	ctx := context.Background()
	for _, sp := range []*Speaker{a, b, c} {
		// Every node gets the whole node list, itself included.
		if err := sp.SetMeshPeers(ctx, meshOf(port, 1, 2, 3)); err != nil {
			t.Fatalf("SetMeshPeers: %v", err)
		}
	}
	waitEstablished(t, a, loopback(2), loopback(3))
	waitEstablished(t, b, loopback(1), loopback(3))

	viaA, viaB, viaC := loopback(1), loopback(2), loopback(3)
	wantRoutes(t, "B", sinkB, map[string]netip.Addr{"10.244.0.0/26": viaA, "10.244.0.64/26": viaA, "10.244.2.0/26": viaC})
	wantRoutes(t, "C", sinkC, map[string]netip.Addr{"10.244.0.0/26": viaA, "10.244.0.64/26": viaA, "10.244.1.0/26": viaB})
	wantRoutes(t, "A", sinkA, map[string]netip.Addr{"10.244.1.0/26": viaB, "10.244.2.0/26": viaC})

	t.Run("peer state", func(t *testing.T) {
		states, err := b.Peers(ctx)
		if err != nil {
			t.Fatalf("Peers: %v", err)
		}
		slices.SortFunc(states, func(x, y PeerState) int { return x.Address.Compare(y.Address) })
		want := []PeerState{
			{Address: viaA, ASN: DefaultASN, Description: "node-1", Mesh: true, State: "established", Received: 2, Accepted: 2},
			{Address: viaC, ASN: DefaultASN, Description: "node-3", Mesh: true, State: "established", Received: 1, Accepted: 1},
		}
		if !slices.Equal(states, want) {
			t.Errorf("Peers:\n got %+v\nwant %+v", states, want)
		}
	})

	// A releases a block: B and C delete it.
	advertise(t, a, "10.244.0.0/26")
	wantRoutes(t, "B after A's withdrawal", sinkB, map[string]netip.Addr{"10.244.0.0/26": viaA, "10.244.2.0/26": viaC})
	wantRoutes(t, "C after A's withdrawal", sinkC, map[string]netip.Addr{"10.244.0.0/26": viaA, "10.244.1.0/26": viaB})

	// A leaves B's mesh (the node is gone from B's view): B deletes A's routes, C keeps them.
	if err := b.SetMeshPeers(ctx, meshOf(port, 2, 3)); err != nil {
		t.Fatalf("SetMeshPeers: %v", err)
	}
	wantRoutes(t, "B after removing A", sinkB, map[string]netip.Addr{"10.244.2.0/26": viaC})
	wantRoutes(t, "C after B removed A", sinkC, map[string]netip.Addr{"10.244.0.0/26": viaA, "10.244.1.0/26": viaB})

	for name, sink := range map[string]*recordingSink{"A": sinkA, "B": sinkB, "C": sinkC} {
		if sw := sink.sweepCalls(); len(sw) != 1 {
			t.Errorf("%s: got %d sweeps, want one after its peers' end-of-rib", name, len(sw))
		}
	}
	ownPrefixes := map[string][]string{"A": {"10.244.0.0/26", "10.244.0.64/26"}, "B": {"10.244.1.0/26"}, "C": {"10.244.2.0/26"}}
	for name, sink := range map[string]*recordingSink{"A": sinkA, "B": sinkB, "C": sinkC} {
		for _, call := range sink.calls() {
			for _, own := range ownPrefixes[name] {
				if strings.Contains(call, own+" ") {
					t.Errorf("%s's sink got its own block: %q", name, call)
				}
			}
		}
	}
}

// TestBlockChangesOwner checks that a node never installs a block while it advertises it,
// and installs the other owner's route once it gives the block up.
func TestBlockChangesOwner(t *testing.T) {
	port := freePort(t)
	a, _ := startSpeaker(t, testConfig(1, port), func(sp *Speaker) {
		advertise(t, sp, "10.244.5.0/26", "10.244.6.0/26")
		sp.SetMeshPeers(context.Background(), meshOf(port, 2))
	})
	b, sinkB := startSpeaker(t, testConfig(2, port), func(sp *Speaker) {
		advertise(t, sp, "10.244.5.0/26")
		sp.SetMeshPeers(context.Background(), meshOf(port, 1))
	})
	waitEstablished(t, a, loopback(2))
	viaA := loopback(1)
	wantRoutes(t, "B owning 10.244.5.0/26", sinkB, map[string]netip.Addr{"10.244.6.0/26": viaA})

	advertise(t, b)
	wantRoutes(t, "B after releasing it", sinkB, map[string]netip.Addr{"10.244.5.0/26": viaA, "10.244.6.0/26": viaA})

	advertise(t, b, "10.244.5.0/26")
	wantRoutes(t, "B owning it again", sinkB, map[string]netip.Addr{"10.244.6.0/26": viaA})
}

// TestAcceptPrefixes checks the import policy: routes outside AcceptPrefixes are refused
// and counted as received but not accepted.
func TestAcceptPrefixes(t *testing.T) {
	port := freePort(t)
	startSpeaker(t, testConfig(1, port), func(sp *Speaker) {
		advertise(t, sp, "10.244.7.0/26", "192.168.50.0/24")
		sp.SetMeshPeers(context.Background(), meshOf(port, 2))
	})
	cfg := testConfig(2, port)
	cfg.AcceptPrefixes = []netip.Prefix{mustPrefix("10.244.0.0/16")}
	b, sinkB := startSpeaker(t, cfg, func(sp *Speaker) {
		advertise(t, sp, "10.244.8.0/26")
		sp.SetMeshPeers(context.Background(), meshOf(port, 1))
	})
	waitEstablished(t, b, loopback(1))
	wantRoutes(t, "B", sinkB, map[string]netip.Addr{"10.244.7.0/26": loopback(1)})
	states, err := b.Peers(context.Background())
	if err != nil {
		t.Fatalf("Peers: %v", err)
	}
	// GoBGP counts a route the import policy refused as received and accepted: the policy
	// applies on the way into the RIB, after its per-peer counters.
	if len(states) != 1 || states[0].Received != 2 {
		t.Errorf("Peers: got %+v, want 2 received", states)
	}
}

// TestConfiguredPeerWithPassword peers two speakers as configured (not mesh) peers with a
// TCP MD5 password and a different AS each, as a node and a top-of-rack router would.
func TestConfiguredPeerWithPassword(t *testing.T) {
	port := freePort(t)
	cfgA := testConfig(1, port)
	cfgA.ASN = 65001
	cfgA.Peers = []Peer{{Address: loopback(2), ASN: 65002, Port: port, Password: "s3cret", Description: "tor"}}
	cfgB := testConfig(2, port)
	cfgB.ASN = 65002
	cfgB.Peers = []Peer{{Address: loopback(1), ASN: 65001, Port: port, Password: "s3cret"}}
	if probe := checkTCPMD5(); probe != nil {
		// Sessions cannot be signed here: the speaker must refuse the peer rather than run
		// it unsigned.
		sp, err := New(cfgA, newRecordingSink(), testLogger(t))
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		defer sp.Stop()
		if err := sp.Start(context.Background()); !errors.Is(err, ErrNoTCPMD5) {
			t.Fatalf("Start with a password and no TCP MD5: got %v, want ErrNoTCPMD5", err)
		}
		t.Skipf("sessions with a password need TCP MD5 signatures: %v", probe)
	}
	a, sinkA := startSpeaker(t, cfgA, func(sp *Speaker) { advertise(t, sp, "10.244.9.0/26") })
	_, sinkB := startSpeaker(t, cfgB, func(sp *Speaker) { advertise(t, sp, "10.244.10.0/26") })
	waitEstablished(t, a, loopback(2))
	wantRoutes(t, "A", sinkA, map[string]netip.Addr{"10.244.10.0/26": loopback(2)})
	wantRoutes(t, "B", sinkB, map[string]netip.Addr{"10.244.9.0/26": loopback(1)})

	// Mesh peers never replace configured ones.
	if err := a.SetMeshPeers(context.Background(), meshOf(port, 2)); err != nil {
		t.Fatalf("SetMeshPeers: %v", err)
	}
	states, err := a.Peers(context.Background())
	if err != nil {
		t.Fatalf("Peers: %v", err)
	}
	if len(states) != 1 || states[0].Mesh || states[0].ASN != 65002 || states[0].Description != "tor" {
		t.Errorf("Peers: got %+v, want the configured peer only", states)
	}
}

// TestResyncDeadline checks that a speaker whose peer never answers still sweeps the
// previous run's routes once RestartTime has passed.
func TestResyncDeadline(t *testing.T) {
	cfg := testConfig(4, freePort(t))
	cfg.RestartTime = time.Second
	cfg.Peers = []Peer{{Address: loopback(5), ASN: DefaultASN, Port: freePort(t)}}
	_, sink := startSpeaker(t, cfg, nil)
	time.Sleep(500 * time.Millisecond)
	if n := len(sink.sweepCalls()); n != 0 {
		t.Fatalf("swept before the deadline")
	}
	waitFor(t, 5*time.Second, "the resync deadline", func() bool { return len(sink.sweepCalls()) == 1 })
}

// TestStopKeepsRoutes checks that stopping a speaker never deletes what it installed.
func TestStopKeepsRoutes(t *testing.T) {
	port := freePort(t)
	startSpeaker(t, testConfig(1, port), func(sp *Speaker) {
		advertise(t, sp, "10.244.11.0/26")
		sp.SetMeshPeers(context.Background(), meshOf(port, 2))
	})
	cfg := testConfig(2, port)
	cfg.DisableGracefulRestart = true
	b, sinkB := startSpeaker(t, cfg, func(sp *Speaker) { sp.SetMeshPeers(context.Background(), meshOf(port, 1)) })
	wantRoutes(t, "B", sinkB, map[string]netip.Addr{"10.244.11.0/26": loopback(1)})
	before := len(sinkB.calls())
	b.Stop()
	time.Sleep(200 * time.Millisecond)
	if calls := sinkB.calls(); len(calls) != before {
		t.Errorf("sink called during or after Stop: %q", calls[before:])
	}
}

// TestStartFailsOnBusyPort checks that a speaker that cannot listen reports it and is
// left stopped.
func TestStartFailsOnBusyPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.6:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer l.Close()
	sp, err := New(testConfig(6, l.Addr().(*net.TCPAddr).Port), newRecordingSink(), testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := sp.Start(context.Background()); err == nil || errors.Is(err, ErrStopped) {
		t.Fatalf("Start on a busy port: got %v, want the listen error", err)
	}
	if err := sp.Advertise(context.Background(), nil); !errors.Is(err, ErrStopped) {
		t.Errorf("Advertise after a failed Start: got %v, want ErrStopped", err)
	}
	sp.Stop()
}

// wantRoutes waits until sink holds exactly want.
func wantRoutes(t *testing.T, who string, sink *recordingSink, want map[string]netip.Addr) {
	t.Helper()
	w := make(map[netip.Prefix]netip.Addr, len(want))
	for p, nh := range want {
		w[mustPrefix(p)] = nh
	}
	deadline := time.Now().Add(routeTimeout)
	for !sink.hasRoutes(w) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: routes %v, want %v", who, sink.snapshot(), fmt.Sprint(w))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
