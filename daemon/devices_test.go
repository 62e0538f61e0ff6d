package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/loom-cni/loom/delegate"
)

type deviceMap map[string][]string

func (m deviceMap) Devices(context.Context, string, string) (map[string][]string, error) {
	if m == nil {
		return nil, errors.New("kubelet down")
	}
	return m, nil
}

func deviceSpec(network, resource string) delegate.Spec {
	return delegate.Spec{Network: network, Ifname: "net1", Kind: "loom-sriov", Resource: resource,
		Config: json.RawMessage(`{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"loom-sriov","vlan":100,"max_tx_rate":12345678901}]}`)}
}

func deviceIDs(t *testing.T, specs []delegate.Spec) []string {
	t.Helper()
	var ids []string
	for _, s := range specs {
		var list struct {
			Plugins []map[string]any `json:"plugins"`
		}
		if err := json.Unmarshal(s.Config, &list); err != nil {
			t.Fatal(err)
		}
		id, _ := list.Plugins[0]["deviceID"].(string)
		ids = append(ids, id)
	}
	return ids
}

func TestWithDevices(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p"}}
	specs := []delegate.Spec{
		{Network: "loom", Ifname: "eth0", Default: true, Kind: "loom"},
		deviceSpec("ns/a", "loom.dev/a"),
		deviceSpec("ns/b", "loom.dev/b"),
		deviceSpec("ns/a2", "loom.dev/a"),
	}
	s := &Service{devices: deviceMap{
		"loom.dev/a": {"0000:3b:02.1", "0000:3b:02.0"},
		"loom.dev/b": {"0000:3c:02.0"},
	}}
	got, err := s.withDevices(context.Background(), pod, specs)
	if err != nil {
		t.Fatal(err)
	}
	// Attachments of one resource take its devices in ascending order, in annotation order.
	want := []string{"", "0000:3b:02.0", "0000:3c:02.0", "0000:3b:02.1"}
	if ids := deviceIDs(t, got[1:]); ids[0] != want[1] || ids[1] != want[2] || ids[2] != want[3] {
		t.Errorf("device IDs = %v, want %v", ids, want[1:])
	}
	if string(got[0].Config) != "" || string(specs[1].Config) == string(got[1].Config) {
		t.Error("the default network's config changed, or the input specs were modified")
	}
	var list map[string]any
	_ = json.Unmarshal(got[1].Config, &list)
	if n := list["plugins"].([]any)[0].(map[string]any)["max_tx_rate"]; n != 12345678901.0 {
		t.Errorf("a number of the configuration changed: %v", n)
	}
}

func TestWithDevicesErrors(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p"}}
	specs := []delegate.Spec{deviceSpec("ns/a", "loom.dev/a"), deviceSpec("ns/a2", "loom.dev/a")}
	tests := []struct {
		name    string
		devices DeviceLister
		code    uint
	}{
		{"fewer devices than attachments", deviceMap{"loom.dev/a": {"0000:3b:02.0"}}, types.ErrInvalidNetworkConfig},
		{"no kubelet configured", nil, types.ErrInvalidNetworkConfig},
		{"kubelet does not answer", deviceMap(nil), types.ErrTryAgainLater},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Service{devices: tt.devices}
			_, err := s.withDevices(context.Background(), pod, specs)
			var cerr *types.Error
			if !errors.As(err, &cerr) || cerr.Code != tt.code {
				t.Fatalf("error = %v, want CNI error code %d", err, tt.code)
			}
		})
	}
	s := &Service{}
	if got, err := s.withDevices(context.Background(), pod, []delegate.Spec{{Network: "ns/plain"}}); err != nil || len(got) != 1 {
		t.Errorf("specs without a resource need no kubelet: %v, %v", got, err)
	}
}
