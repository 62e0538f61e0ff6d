package daemon

import (
	"net"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/loom-cni/loom/delegate"
	"github.com/loom-cni/loom/fabric"
	"github.com/loom-cni/loom/policy"
)

// The primary network's rules go on the host side of Loom's own veth; another default
// network's host side (a bridge) carries none.
func TestEndpointOf(t *testing.T) {
	idx := 1
	res := &current.Result{
		CNIVersion: "1.0.0",
		Interfaces: []*current.Interface{{Name: "loom0123456789a"}, {Name: "eth0", Sandbox: "/run/netns/x"}},
		IPs:        []*current.IPConfig{{Interface: &idx, Address: net.IPNet{IP: net.ParseIP("10.244.1.5").To4(), Mask: net.CIDRMask(32, 32)}}},
	}
	loom := endpointOf(delegate.Outcome{Spec: delegate.Spec{Network: "loom", Ifname: "eth0", Default: true, Kind: fabric.Kind}, Result: res})
	if loom.Network != policy.Primary || loom.HostInterface != "loom0123456789a" || len(loom.IPs) != 1 || loom.IPs[0].String() != "10.244.1.5" {
		t.Errorf("Loom's primary endpoint = %+v", loom)
	}
	bridge := endpointOf(delegate.Outcome{Spec: delegate.Spec{Network: "kube-system/pod-net", Ifname: "eth0", Default: true, Kind: delegate.KindCNI}, Result: res})
	if bridge.HostInterface != "" {
		t.Errorf("a delegate default network's endpoint has host interface %q, want none", bridge.HostInterface)
	}
	sec := endpointOf(delegate.Outcome{Spec: delegate.Spec{Network: "ns-a/net", Ifname: "net1", Kind: delegate.KindCNI}, Result: res})
	if sec.Network != "ns-a/net" || sec.Interface != "net1" {
		t.Errorf("secondary endpoint = %+v", sec)
	}
}

// An endpoint has the addresses of both families its result gives, and the hardware
// address of its own interface in the pod, not another interface's.
func TestEndpointOfBothFamiliesAndMAC(t *testing.T) {
	idx := 1
	res := &current.Result{
		CNIVersion: "1.0.0",
		Interfaces: []*current.Interface{
			{Name: "net2", Mac: "0a:58:00:00:00:02", Sandbox: "/run/netns/x"},
			{Name: "net1", Mac: "0A:58:00:00:00:01", Sandbox: "/run/netns/x"},
		},
		IPs: []*current.IPConfig{
			{Interface: &idx, Address: net.IPNet{IP: net.ParseIP("192.168.1.5").To4(), Mask: net.CIDRMask(24, 32)}},
			{Interface: &idx, Address: net.IPNet{IP: net.ParseIP("fd00:1::5"), Mask: net.CIDRMask(64, 128)}},
		},
	}
	ep := endpointOf(delegate.Outcome{Spec: delegate.Spec{Network: "ns-a/net", Ifname: "net1", Kind: delegate.KindCNI}, Result: res})
	if want := (policy.MAC{0x0a, 0x58, 0, 0, 0, 1}); ep.MAC != want {
		t.Errorf("MAC = %s, want %s", ep.MAC, want)
	}
	if len(ep.IPs) != 2 || ep.IPs[0].String() != "192.168.1.5" || ep.IPs[1].String() != "fd00:1::5" {
		t.Errorf("IPs = %v, want 192.168.1.5 and fd00:1::5", ep.IPs)
	}
}
