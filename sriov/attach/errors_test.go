package attach_test

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"path/filepath"
	"testing"

	"github.com/loom-cni/loom/delegate"
	"github.com/loom-cni/loom/sriov"
	"github.com/loom-cni/loom/sriov/attach"
	"github.com/loom-cni/loom/sriov/sriovtest"
	"github.com/loom-cni/loom/sriov/vf"
)

// ADD refuses, before touching anything, a VF that did not come from the kubelet's
// allocation and a device that is not a VF.
func TestAddRefusesBeforeDoingAnything(t *testing.T) {
	tree, err := sriovtest.Write(t.TempDir(), sriovtest.PF{Name: "ens1f0", TotalVFs: 2, NumVFs: 2})
	if err != nil {
		t.Fatal(err)
	}
	rec := vf.NewRecorder(filepath.Join(t.TempDir(), "vf-state.json"))
	stateDir := filepath.Join(t.TempDir(), "claims")
	a := attach.New(attach.Config{SysfsRoot: tree.Root, PF: rec, StateDir: stateDir, HostNetns: "/nonexistent"})
	conf := func(deviceID string) json.RawMessage {
		plugin := `{"type":"loom-sriov"}`
		if deviceID != "" {
			plugin = `{"type":"loom-sriov","deviceID":"` + deviceID + `"}`
		}
		return json.RawMessage(`{"cniVersion":"1.0.0","name":"sriov-a","plugins":[` + plugin + `]}`)
	}
	call := func(resource, deviceID string) delegate.Call {
		return delegate.Call{Spec: delegate.Spec{Network: "default/sriov-a", Ifname: "net1", Kind: attach.Kind,
			Config: conf(deviceID), Resource: resource}, ContainerID: "c1", Netns: "/nonexistent",
			Pod: delegate.PodRef{Namespace: "default", Name: "p"}}
	}
	for name, tc := range map[string]struct {
		call delegate.Call
		is   error
	}{
		"no resource, no device":   {call: call("", "")},
		"device without resource":  {call: call("", tree.VFAddress("ens1f0", 0))},
		"resource not requested":   {call: call("loom.dev/a", "")},
		"a pf":                     {call: call("loom.dev/a", tree.PFAddress("ens1f0")), is: sriov.ErrNotVF},
		"no such device":           {call: call("loom.dev/a", "0000:99:02.0"), is: fs.ErrNotExist},
		"bad configuration":        {call: delegate.Call{Spec: delegate.Spec{Config: json.RawMessage(`{"type":"loom-sriov","vlan":5000}`)}}},
		"not a loom-sriov network": {call: delegate.Call{Spec: delegate.Spec{Config: json.RawMessage(`{"cniVersion":"1.0.0","name":"n","type":"macvlan"}`)}}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := a.Add(context.Background(), tc.call)
			if err == nil {
				t.Fatal("no error")
			}
			t.Log(err)
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("got %v, want %v", err, tc.is)
			}
			// DEL after such a failed ADD has nothing to release.
			if err := a.Del(context.Background(), tc.call, nil); err != nil {
				t.Errorf("del: %v", err)
			}
		})
	}
	if calls, _ := rec.Calls(); len(calls) != 0 {
		t.Errorf("the pf was configured: %+v", calls)
	}
	claims, _ := filepath.Glob(filepath.Join(stateDir, "*.json"))
	if len(claims) != 0 {
		t.Errorf("claims were made: %v", claims)
	}
}
