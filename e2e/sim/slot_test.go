package sim

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestReserveSlot(t *testing.T) {
	runDir := t.TempDir()
	var reaped []int
	reap := func(_ context.Context, s slotDir, _ *progress) error {
		reaped = append(reaped, s.slot)
		return os.RemoveAll(s.path())
	}
	reserve := func(dir string) (int, error) {
		s, err := reserveSlot(context.Background(), runDir, dir, nil, reap)
		return s.slot, err
	}
	a, b := t.TempDir(), t.TempDir()

	if s, err := reserve(a); err != nil || s != 1 {
		t.Fatalf("first reservation: slot %d, %v; want 1", s, err)
	}
	// This process owns slot 1, so a's cluster counts as live.
	if _, err := reserve(a); !errors.Is(err, ErrLive) {
		t.Fatalf("second reservation for the same directory: %v, want ErrLive", err)
	}
	if s, err := reserve(b); err != nil || s != 2 {
		t.Fatalf("reservation for another directory: slot %d, %v; want 2", s, err)
	}

	// Slot 1's owner dies and a's directory describes no cluster: it is dead and reaped.
	dead := slotDir{runDir, 1}
	if err := writePidFile(dead.ownerFile(), procRef{PID: os.Getpid(), Start: 1}); err != nil {
		t.Fatal(err)
	}
	// Slot 5 belongs to a directory that is gone.
	gone := slotDir{runDir, 5}
	if err := os.MkdirAll(gone.path(), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(gone.dirFile(), []byte(filepath.Join(t.TempDir(), "gone")), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := reserve(t.TempDir())
	if err != nil || s != 1 {
		t.Fatalf("reservation after deaths: slot %d, %v; want 1", s, err)
	}
	if len(reaped) != 2 || reaped[0] != 1 || reaped[1] != 5 {
		t.Errorf("reaped slots %v, want [1 5]", reaped)
	}
}

func TestSlotLiveWhileAProcessRuns(t *testing.T) {
	runDir, dir := t.TempDir(), t.TempDir()
	s := slotDir{runDir, 7}
	if err := os.MkdirAll(s.path(), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.dirFile(), []byte(dir), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeState(dir, state{Slot: 7}); err != nil {
		t.Fatal(err)
	}
	if s.live() {
		t.Fatal("a slot with no live process is live")
	}
	self, _ := refOf(os.Getpid())
	if err := writePidFile(s.pidFile("apiserver"), self); err != nil {
		t.Fatal(err)
	}
	if !s.live() {
		t.Fatal("a slot whose API server runs is not live")
	}
	if err := writeState(dir, state{Slot: 7, Options: Options{Ephemeral: true}}); err != nil {
		t.Fatal(err)
	}
	if s.live() {
		t.Error("an ephemeral cluster whose owner is gone is live")
	}
}
