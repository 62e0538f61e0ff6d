package bgp

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/loom-cni/loom/internal/netnstest"
)

// TestRestart stops node A's speaker and starts a new one, as a loomd restart does, and
// checks what its peer B installs meanwhile. With graceful restart, B keeps A's routes
// through the restart and drops, at A's End-of-RIB, only the block A no longer advertises.
// Without it, B deletes A's routes as soon as A stops.
//
// Privileged: a graceful Stop resets the sessions through sock_diag, which needs
// CAP_NET_ADMIN.
func TestRestart(t *testing.T) {
	netnstest.RequireRoot(t)
	tests := []struct {
		name    string
		disable bool
	}{
		{"graceful", false},
		{"without graceful restart", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			port := freePort(t)
			cfgA, cfgB := testConfig(1, port), testConfig(2, port)
			cfgA.DisableGracefulRestart, cfgB.DisableGracefulRestart = tt.disable, tt.disable
			b, sinkB := startSpeaker(t, cfgB, func(sp *Speaker) {
				sp.SetMeshPeers(context.Background(), meshOf(port, 1))
			})
			a, _ := startSpeaker(t, cfgA, func(sp *Speaker) {
				advertise(t, sp, "10.244.20.0/26", "10.244.21.0/26")
				sp.SetMeshPeers(context.Background(), meshOf(port, 2))
			})
			viaA := loopback(1)
			both := map[string]netip.Addr{"10.244.20.0/26": viaA, "10.244.21.0/26": viaA}
			wantRoutes(t, "B before the restart", sinkB, both)
			before := len(sinkB.calls())
			// GoBGP v3.37.0 marks a restarting peer's paths stale on its main goroutine while
			// its watch goroutine may still read the same flag (osrg/gobgp#2705, fixed upstream
			// by making the flag atomic). This call on B's main goroutine orders the watch's
			// earlier reads before A stops, so the race detector reports our races, not that one.
			waitEstablished(t, b, viaA)

			a.Stop()
			waitFor(t, 10*time.Second, "B to see A's session end", func() bool {
				return !sessionUp(t, b, viaA)
			})
			if tt.disable {
				wantRoutes(t, "B after A stopped", sinkB, map[string]netip.Addr{})
				return
			}
			time.Sleep(500 * time.Millisecond)
			if calls := sinkB.calls()[before:]; len(calls) != 0 {
				t.Fatalf("B's routes changed while A restarts: %q", calls)
			}

			startSpeaker(t, cfgA, func(sp *Speaker) {
				advertise(t, sp, "10.244.20.0/26")
				sp.SetMeshPeers(context.Background(), meshOf(port, 2))
			})
			waitEstablished(t, b, viaA)
			wantRoutes(t, "B after A's End-of-RIB", sinkB, map[string]netip.Addr{"10.244.20.0/26": viaA})
			if got, want := sinkB.calls()[before:], []string{"delete 10.244.21.0/26"}; !slices.Equal(got, want) {
				t.Errorf("B's sink calls across the restart: got %q, want %q", got, want)
			}
		})
	}
}

// sessionUp reports whether sp has an established session with peer.
func sessionUp(t *testing.T, sp *Speaker, peer netip.Addr) bool {
	t.Helper()
	states, err := sp.Peers(context.Background())
	if err != nil {
		t.Fatalf("Peers: %v", err)
	}
	for _, st := range states {
		if st.Address == peer && st.State == "established" {
			return true
		}
	}
	return false
}
