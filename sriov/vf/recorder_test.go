package vf_test

import (
	"errors"
	"path/filepath"
	"sync"
	"testing"

	"github.com/loom-cni/loom/sriov/vf"
)

func TestRecorderSharesStatesThroughItsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "vfs.json")
	r := vf.NewRecorder(path)
	if s, err := r.State("ens1f0", 3); err != nil || s != vf.Default() {
		t.Fatalf("state of a vf never set = %+v, %v; want the default", s, err)
	}
	want := vf.State{MAC: "02:00:00:00:00:01", VLAN: 100, QoS: 2, SpoofChk: true, LinkState: vf.LinkEnable, MaxTxRate: 1000}
	if err := r.Set("ens1f0", 3, want); err != nil {
		t.Fatal(err)
	}
	if err := r.Set("ens1f0", 1, vf.Default()); err != nil {
		t.Fatal(err)
	}

	// Another Recorder on the same file is what a restarted loomd or a test process sees.
	other := vf.NewRecorder(path)
	if s, err := other.State("ens1f0", 3); err != nil || s != want {
		t.Errorf("state seen through the file = %+v, %v; want %+v", s, err, want)
	}
	states, err := other.States()
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != 2 || states[vf.Key{PF: "ens1f0", Index: 3}] != want {
		t.Errorf("states = %+v", states)
	}
	calls, err := other.Calls()
	if err != nil {
		t.Fatal(err)
	}
	if len(calls) != 2 || calls[0].Key != (vf.Key{PF: "ens1f0", Index: 3}) || calls[1].State != vf.Default() {
		t.Errorf("calls = %+v", calls)
	}
}

func TestRecorderRefusesWhatAPFWould(t *testing.T) {
	r := vf.NewRecorder(filepath.Join(t.TempDir(), "vfs.json"))
	if err := r.Set("ens1f0", 0, vf.State{LinkState: vf.LinkAuto, VLAN: 5000}); err == nil {
		t.Error("vlan 5000 was accepted")
	}
	if calls, _ := r.Calls(); len(calls) != 0 {
		t.Errorf("a refused set was recorded: %+v", calls)
	}
}

func TestRecorderFailNext(t *testing.T) {
	r := vf.NewRecorder(filepath.Join(t.TempDir(), "vfs.json"))
	boom := errors.New("boom")
	r.FailNext(boom)
	if err := r.Set("ens1f0", 0, vf.Default()); !errors.Is(err, boom) {
		t.Fatalf("first set after FailNext: %v, want boom", err)
	}
	if calls, _ := r.Calls(); len(calls) != 0 {
		t.Errorf("a failed set was recorded: %+v", calls)
	}
	if err := r.Set("ens1f0", 0, vf.Default()); err != nil {
		t.Fatalf("second set: %v", err)
	}
}

func TestRecordersOfOneFileDoNotLoseSets(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vfs.json")
	const n = 32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A Recorder each: its own open file and lock, as separate processes have.
			errs <- vf.NewRecorder(path).Set("ens1f0", i, vf.State{VLAN: i + 1, LinkState: vf.LinkAuto})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	states, err := vf.NewRecorder(path).States()
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if s := states[vf.Key{PF: "ens1f0", Index: i}]; s.VLAN != i+1 {
			t.Errorf("vf %d: vlan %d, want %d", i, s.VLAN, i+1)
		}
	}
}
