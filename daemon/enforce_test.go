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
