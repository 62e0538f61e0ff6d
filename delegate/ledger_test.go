package delegate

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestLedgerRoundTripAndList(t *testing.T) {
	l, err := OpenLedger(filepath.Join(t.TempDir(), "ledger"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	r := Record{ContainerID: "b", Netns: "/ns", Pod: pod, Attachments: []Entry{{Spec: specs("default")[0], State: StateAdded}}}
	if err = l.Save(r); err != nil {
		t.Fatal(err)
	}
	if err = l.Save(Record{ContainerID: "a"}); err != nil {
		t.Fatal(err)
	}
	got, ok, err := l.Load("b")
	if err != nil || !ok || got.Pod != pod || got.Attachments[0].Network != "default" {
		t.Fatalf("Load = %+v ok=%v err=%v", got, ok, err)
	}
	// A temp file left by a crash mid-write is cleaned up and never read as a record; one
	// younger than a minute may be a Save in progress and stays.
	old, fresh := filepath.Join(l.Dir(), ".tmp-c-123"), filepath.Join(l.Dir(), ".tmp-d-456")
	for _, p := range []string{old, fresh} {
		if err = os.WriteFile(p, []byte("{garbage"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err = os.Chtimes(old, time.Time{}, time.Now().Add(-2*staleTemp)); err != nil {
		t.Fatal(err)
	}
	recs, err := l.List()
	if err != nil || len(recs) != 2 || recs[0].ContainerID != "a" || recs[1].ContainerID != "b" {
		t.Fatalf("List = %+v err=%v", recs, err)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("stale temp file survived List: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("List removed a temp file a Save may still be writing: %v", err)
	}
	if err := l.Remove("b"); err != nil {
		t.Fatal(err)
	}
	if err := l.Remove("b"); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if _, ok, _ := l.Load("b"); ok {
		t.Fatal("record still there after Remove")
	}
}

func TestLedgerGenerationCountsChanges(t *testing.T) {
	l, err := OpenLedger(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	g := l.Generation()
	if _, err = l.List(); err != nil {
		t.Fatal(err)
	}
	if l.Generation() != g {
		t.Errorf("List changed the generation")
	}
	for i, change := range []func() error{
		func() error { return l.Save(Record{ContainerID: "a"}) },
		func() error { return l.Save(Record{ContainerID: "a", Netns: "/ns"}) },
		func() error { return l.Remove("a") },
		func() error { return os.WriteFile(filepath.Join(l.Dir(), "b.json"), []byte("{garbage"), 0o600) },
	} {
		if err = change(); err != nil {
			t.Fatal(err)
		}
		if _, _, err = l.Load("b"); err != nil {
			t.Fatal(err)
		}
		if l.Generation() == g {
			t.Errorf("change %d left the generation at %d", i, g)
		}
		g = l.Generation()
	}
}

func TestLedgerRejectsContainerIDsThatAreNotFileNames(t *testing.T) {
	l, err := OpenLedger(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []ContainerID{"", "../x", "a/b", ".hidden", "-flag"} {
		if err := l.Save(Record{ContainerID: id}); err == nil {
			t.Errorf("Save accepted container ID %q", id)
		}
		if _, _, err := l.Load(id); err == nil {
			t.Errorf("Load accepted container ID %q", id)
		}
	}
}

func TestLedgerLockIsExclusive(t *testing.T) {
	l, err := OpenLedger(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := l.Lock(time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err = l.Lock(100 * time.Millisecond); err == nil {
		t.Fatal("second lock taken while the first is held")
	}
	unlock()
	unlock2, err := l.Lock(time.Second)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	unlock2()
}

func TestLedgerDropsAnUnreadableRecord(t *testing.T) {
	l, err := OpenLedger(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	// What a power loss can leave of a record that was never fsynced.
	if err := os.WriteFile(filepath.Join(l.Dir(), "c1.json"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := l.Load("c1"); ok || err != nil {
		t.Fatalf("Load of an empty record: ok=%v err=%v, want nothing and no error", ok, err)
	}
	if _, err := os.Stat(filepath.Join(l.Dir(), "c1.json")); !os.IsNotExist(err) {
		t.Fatalf("unreadable record kept: %v", err)
	}
}
