package npwg

import (
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/loom-cni/loom/delegate"
)

// spec is an attachment of network (namespace/name) with config, asking for args.
func spec(network, ifname, config string, args map[string]any) delegate.Spec {
	return delegate.Spec{Network: network, Ifname: ifname, Kind: delegate.KindCNI, Config: json.RawMessage(config), CapabilityArgs: args}
}

func conflist(plugin string) string {
	return `{"cniVersion":"1.0.0","name":"n","plugins":[` + plugin + `,{"type":"tuning"}]}`
}

// TestSegmentOf checks which networks are one link layer: networks on one node link, bridge
// or SR-IOV pool are, whatever NADs they come from; VLANs and other links are not.
func TestSegmentOf(t *testing.T) {
	seg := func(network, plugin, resource string) Segment {
		s := spec(network, "net1", conflist(plugin), nil)
		s.Resource = resource
		return SegmentOf(s, "eth0")
	}
	same := [][2]Segment{
		{seg("acme/lan", `{"type":"macvlan","master":"eth0","mode":"bridge"}`, ""),
			seg("globex/lan", `{"type":"macvlan","master":"eth0","mode":"private"}`, "")},
		{seg("acme/lan", `{"type":"macvlan","master":"eth0"}`, ""), seg("globex/lan", `{"type":"ipvlan","master":"eth0"}`, "")},
		{seg("acme/lan", `{"type":"macvlan"}`, ""), seg("globex/lan", `{"type":"macvlan","master":"eth0"}`, "")},
		{seg("acme/lan", `{"type":"macvlan","master":"eth0","vlan":0}`, ""), seg("globex/lan", `{"type":"macvlan","master":"eth0"}`, "")},
		{seg("acme/v", `{"type":"macvlan","master":"eth1","vlan":7}`, ""), seg("globex/v", `{"type":"vlan","master":"eth1","vlanId":7}`, "")},
		{seg("acme/br", `{"type":"bridge"}`, ""), seg("globex/br", `{"type":"bridge","bridge":"cni0"}`, "")},
		{seg("acme/vf", `{"type":"loom-sriov","vlan":5}`, "loom.dev/pool_a"), seg("globex/vf", `{"type":"sriov","vlan":5}`, "loom.dev/pool_a")},
		{seg("acme/x", `{"type":"host-device","device":"eth3"}`, ""), seg("acme/x", `{"type":"host-device","device":"eth4"}`, "")},
	}
	for _, p := range same {
		if p[0] != p[1] {
			t.Errorf("%q and %q: want one segment", p[0], p[1])
		}
	}
	differ := [][2]Segment{
		{seg("acme/lan", `{"type":"macvlan","master":"eth0"}`, ""), seg("globex/lan", `{"type":"macvlan","master":"eth1"}`, "")},
		{seg("acme/lan", `{"type":"macvlan","master":"eth0"}`, ""), seg("globex/lan", `{"type":"macvlan","master":"eth0","vlan":7}`, "")},
		{seg("acme/lan", `{"type":"macvlan","master":"eth0","linkInContainer":true}`, ""), seg("globex/lan", `{"type":"macvlan","master":"eth0","linkInContainer":true}`, "")},
		{seg("acme/br", `{"type":"bridge","bridge":"br-a"}`, ""), seg("globex/br", `{"type":"bridge","bridge":"br-b"}`, "")},
		{seg("acme/br", `{"type":"bridge","bridge":"eth0"}`, ""), seg("globex/lan", `{"type":"macvlan","master":"eth0"}`, "")},
		{seg("acme/vf", `{"type":"sriov"}`, "loom.dev/pool_a"), seg("globex/vf", `{"type":"sriov"}`, "loom.dev/pool_b")},
		{seg("acme/x", `{"type":"host-device","device":"eth3"}`, ""), seg("globex/x", `{"type":"host-device","device":"eth3"}`, "")},
		{seg("acme/lan", `{"type":"macvlan","master":"eth0"}`, ""), seg("acme/other", `{"type":"ptp"}`, "")},
	}
	for _, p := range differ {
		if p[0] == p[1] {
			t.Errorf("%q: want two segments", p[0])
		}
	}
	// A single plugin's configuration reads as well as a list's.
	if a, b := SegmentOf(spec("a/x", "net1", `{"type":"macvlan","master":"eth0"}`, nil), ""), seg("b/y", `{"type":"macvlan","master":"eth0"}`, ""); a != b {
		t.Errorf("single plugin %q, list %q: want one segment", a, b)
	}
	// With no default-route interface known, a macvlan naming no master is its network alone.
	if a, b := SegmentOf(spec("a/x", "net1", `{"type":"macvlan"}`, nil), ""), SegmentOf(spec("b/y", "net1", `{"type":"macvlan"}`, nil), ""); a == b {
		t.Errorf("unknown default link: %q for both", a)
	}
}

const (
	macvlanEth0  = `{"cniVersion":"1.0.0","name":"lan","plugins":[{"type":"macvlan","master":"eth0","ipam":{"type":"static"}}]}`
	macvlanEth1  = `{"cniVersion":"1.0.0","name":"lan","plugins":[{"type":"macvlan","master":"eth1","ipam":{"type":"static"}}]}`
	withCNIArgs  = `{"cniVersion":"1.0.0","name":"lan","plugins":[{"type":"macvlan","master":"eth0","args":{"cni":{"ips":["10.9.0.5/24"],"mac":"02:00:00:00:00:05"}}}]}`
	acmeA1       = "acme/a1"
	globexG1     = "globex/g1"
	globexG1UID  = "uid-g1"
	sharedMaster = "link eth0"
)

var (
	acme   = delegate.PodRef{Namespace: "acme", Name: "a1", UID: "uid-a1"}
	globex = delegate.PodRef{Namespace: "globex", Name: "g1", UID: globexG1UID}
)

// holds is globex/g1's attachment of globex/lan (macvlan on eth0) as the ledger records it,
// asking for nothing but given ips and mac.
func holds(ips []string, mac string) delegate.Record {
	res := map[string]any{"cniVersion": "1.1.0",
		"interfaces": []map[string]any{{"name": "net1", "mac": mac, "sandbox": "/var/run/netns/g1"}},
	}
	var ipcfg []map[string]any
	for _, ip := range ips {
		ipcfg = append(ipcfg, map[string]any{"address": ip, "interface": 0})
	}
	res["ips"] = ipcfg
	b, _ := json.Marshal(res)
	return delegate.Record{ContainerID: "c-g1", Pod: globex, Attachments: []delegate.Entry{
		{Spec: spec("globex/lan", "net1", macvlanEth0, nil), State: delegate.StateAdded, Result: b},
	}}
}

// TestTaken checks that an address (IPv4 or IPv6) or a MAC a pod asks for is refused when an
// interface on the same segment has it or asks for it — from a ledger record being added or
// added, or a cluster pod's claim — through a different NAD, naming the pod, the network and
// the holder; and that other segments, the pod's own earlier sandbox and free addresses pass.
func TestTaken(t *testing.T) {
	ask := func(network, config string, args map[string]any) []Claim {
		return Asked(acme, []delegate.Spec{spec(network, "net1", config, args)}, "eth0")
	}
	added := Recorded(holds([]string{"10.9.0.7/24", "2001:db8:9::7/64"}, "02:00:00:00:00:07"), "eth0")
	adding := Recorded(delegate.Record{ContainerID: "c-g1", Pod: globex, Attachments: []delegate.Entry{
		{Spec: spec("globex/lan", "net1", macvlanEth0, map[string]any{"ips": []any{"10.9.0.8/24", "2001:db8:9::8/64"}, "mac": "02:00:00:00:00:08"}),
			State: delegate.StateAdding},
		{Spec: spec("globex/lan2", "net2", macvlanEth0, map[string]any{"ips": []any{"10.9.0.9/24"}}), State: delegate.StatePlanned},
	}}, "eth0")
	cluster := []Claim{{Pod: "globex/g2", Network: "globex/lan", Ifname: "net1", Node: "node2", Segment: sharedMaster,
		IPs: []netip.Addr{netip.MustParseAddr("10.9.0.10"), netip.MustParseAddr("2001:db8:9::10")}, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 0x10}}}
	held := append(append(append([]Claim{}, added...), adding...), cluster...)

	for _, c := range []struct {
		name   string
		asked  []Claim
		addr   string // the taken address, or
		mac    string // the taken MAC; both empty: not taken
		holder string
		node   string
	}{
		{"IPv4 an added attachment has", ask("acme/lan", macvlanEth0, map[string]any{"ips": []string{"10.9.0.7/24"}}), "10.9.0.7", "", globexG1, ""},
		{"IPv6 an added attachment has", ask("acme/lan", macvlanEth0, map[string]any{"ips": []string{"2001:db8:9::7/64"}}), "2001:db8:9::7", "", globexG1, ""},
		{"MAC an added attachment has", ask("acme/lan", macvlanEth0, map[string]any{"mac": "02:00:00:00:00:07"}), "", "02:00:00:00:00:07", globexG1, ""},
		{"IPv4 an attachment being added asks for", ask("acme/lan", macvlanEth0, map[string]any{"ips": []string{"10.9.0.8/24"}}), "10.9.0.8", "", globexG1, ""},
		{"IPv6 an attachment being added asks for", ask("acme/lan", macvlanEth0, map[string]any{"ips": []string{"2001:db8:9::8"}}), "2001:db8:9::8", "", globexG1, ""},
		{"MAC an attachment being added asks for", ask("acme/lan", macvlanEth0, map[string]any{"mac": "02:00:00:00:00:08"}), "", "02:00:00:00:00:08", globexG1, ""},
		{"IPv4 of another node's pod", ask("acme/lan", macvlanEth0, map[string]any{"ips": []string{"10.9.0.10/24"}}), "10.9.0.10", "", "globex/g2", "node2"},
		{"IPv6 of another node's pod", ask("acme/lan", macvlanEth0, map[string]any{"ips": []string{"2001:db8:9::10/64"}}), "2001:db8:9::10", "", "globex/g2", "node2"},
		{"MAC of another node's pod", ask("acme/lan", macvlanEth0, map[string]any{"mac": "02:00:00:00:00:10"}), "", "02:00:00:00:00:10", "globex/g2", "node2"},
		{"through cni-args", ask("acme/lan", withCNIArgs, nil), "", "", "", ""},
		{"a free address and MAC", ask("acme/lan", macvlanEth0, map[string]any{"ips": []string{"10.9.0.20/24", "2001:db8:9::20/64"}, "mac": "02:00:00:00:00:20"}), "", "", "", ""},
		{"an attachment planned but never attempted", ask("acme/lan", macvlanEth0, map[string]any{"ips": []string{"10.9.0.9/24"}}), "", "", "", ""},
		{"another master", ask("acme/lan", macvlanEth1, map[string]any{"ips": []string{"10.9.0.7/24"}, "mac": "02:00:00:00:00:07"}), "", "", "", ""},
	} {
		err := Taken(c.asked, held)
		var e *Error
		var te *TakenError
		switch {
		case c.addr == "" && c.mac == "":
			if err != nil {
				t.Errorf("%s: got %v, want no error", c.name, err)
			}
		case !errors.As(err, &e) || !errors.As(err, &te):
			t.Errorf("%s: got %v, want an *Error wrapping a *TakenError", c.name, err)
		case e.Pod != acmeA1 || e.Network != "acme/lan" || te.Holder.Pod != c.holder || te.Holder.Node != c.node || te.Asking.Segment != sharedMaster:
			t.Errorf("%s: got %v (holder %+v), want pod %s on acme/lan refused for %s's on %s", c.name, err, te.Holder, acmeA1, c.holder, sharedMaster)
		case c.addr != "" && (te.Addr != netip.MustParseAddr(c.addr) || te.MAC != nil):
			t.Errorf("%s: refused address %v / MAC %v, want address %s", c.name, te.Addr, te.MAC, c.addr)
		case c.mac != "" && (te.MAC.String() != c.mac || te.Addr.IsValid()):
			t.Errorf("%s: refused address %v / MAC %v, want MAC %s", c.name, te.Addr, te.MAC, c.mac)
		default:
			t.Logf("%s: %v", c.name, err)
		}
	}

	// cni-args ask as runtimeConfig does.
	viaArgs := ask("acme/lan", withCNIArgs, nil)
	if err := Taken(viaArgs, Recorded(holds([]string{"10.9.0.5/24"}, "02:00:00:00:00:99"), "eth0")); !errors.As(err, new(*TakenError)) {
		t.Errorf("address asked through cni-args: got %v, want a refusal", err)
	}
	if err := Taken(viaArgs, Recorded(holds([]string{"10.9.0.99/24"}, "02:00:00:00:00:05"), "eth0")); !errors.As(err, new(*TakenError)) {
		t.Errorf("MAC asked through cni-args: got %v, want a refusal", err)
	}

	// The pod's own earlier sandbox (same UID) holds nothing against it.
	again := Asked(globex, []delegate.Spec{spec("globex/lan", "net1", macvlanEth0, map[string]any{"ips": []string{"10.9.0.7/24"}, "mac": "02:00:00:00:00:07"})}, "eth0")
	if err := Taken(again, added); err != nil {
		t.Errorf("the holder asking again: %v", err)
	}

	// Two interfaces of one pod asking for one address on one segment clash too.
	both := Asked(acme, []delegate.Spec{
		spec("acme/lan", "net1", macvlanEth0, map[string]any{"ips": []string{"2001:db8:9::30/64"}}),
		spec("acme/lan-b", "net2", macvlanEth0, map[string]any{"ips": []string{"2001:db8:9::30/64"}}),
	}, "eth0")
	if err := Taken(both, nil); !errors.As(err, new(*TakenError)) {
		t.Errorf("one address on two interfaces of a pod: got %v, want a refusal", err)
	}
}

// TestAskedNothing checks that attachments asking for nothing claim nothing, so the gate
// reads no ledger for them.
func TestAskedNothing(t *testing.T) {
	if got := Asked(acme, []delegate.Spec{spec("acme/lan", "net1", macvlanEth0, map[string]any{"portMappings": []any{}})}, "eth0"); len(got) != 0 {
		t.Errorf("Asked = %+v, want none", got)
	}
}
