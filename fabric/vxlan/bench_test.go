package vxlan

import (
	"testing"
)

// BenchmarkSync1000Peers measures a Sync that installs 1,000 peers of one block each from
// empty: 3,000 writes (route, neighbour and FDB entry per peer) after reading the state once.
func BenchmarkSync1000Peers(b *testing.B) {
	_, _, be := loneNode(b, Config{})
	_, err := be.Ensure()
	must(b, err, "ensure")
	peers := manyPeers(1000)
	for b.Loop() {
		if p := syncPlan(b, be, peers); p.writes() != 3000 {
			b.Fatalf("got %d writes, want 3000", p.writes())
		}
		b.StopTimer()
		syncPlan(b, be, nil)
		b.StartTimer()
	}
}

// BenchmarkSyncUnchanged1000Peers measures a Sync of 1,000 peers that are all in place: three
// dumps, a diff and no writes.
func BenchmarkSyncUnchanged1000Peers(b *testing.B) {
	_, _, be := loneNode(b, Config{})
	_, err := be.Ensure()
	must(b, err, "ensure")
	peers := manyPeers(1000)
	syncPlan(b, be, peers)
	for b.Loop() {
		if p := syncPlan(b, be, peers); p.writes() != 0 {
			b.Fatalf("got %d writes, want none", p.writes())
		}
	}
}
