package npwg

import (
	"encoding/json"
	"errors"
	"net/netip"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/utils"

	"github.com/loom-cni/loom/delegate"
)

// FuzzParseNetworks feeds arbitrary annotations to the parser. Whatever it accepts must be
// valid enough to resolve; whatever it refuses must be refused with an *Error.
func FuzzParseNetworks(f *testing.F) {
	for _, seed := range []string{
		"", "net-a", " net-a , ns/net-b@data0", "a,,b", "/a", "a@", "a/b/c", "a@b@c",
		`[]`, `[{"name":"net-a"}]`, `{"name":"x"}`, `[null]`, `["x"]`,
		`[{"name":"net-a","namespace":"ns","interface":"eth1","ips":["10.0.0.1/24","fd00::1"],"mac":"02:00:00:00:00:01",` +
			`"default-route":["10.0.0.254"],"portMappings":[{"hostPort":80,"containerPort":8080,"protocol":"UDP","hostIP":"::1"}],` +
			`"bandwidth":{"ingressRate":1,"ingressBurst":2},"cni-args":{"a":[1,{"b":null}]},"infiniband-guid":"00:00:00:00:00:00:00:01",` +
			`"ipam-claim-reference":"claim"}]`,
		`[{"name":"a","name":"b"}]`, `[{"name":"a","portMappings":[{"hostPort":1e3}]}]`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, annotation string) {
		sels, err := ParseNetworks(annotation, "web")
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Problem == "" || e.Fix == "" {
				t.Fatalf("ParseNetworks(%q) = %v, want an *Error with problem and fix", annotation, err)
			}
			return
		}
		for _, s := range sels {
			if checkName(s.Name) != nil || checkNamespace(s.Namespace) != nil {
				t.Fatalf("accepted invalid network %q", s.Ref())
			}
			if s.Interface != "" && utils.ValidateInterfaceName(s.Interface) != nil {
				t.Fatalf("accepted invalid interface %q", s.Interface)
			}
			for _, ip := range s.IPs {
				if _, _, err := parseRequestedIP(ip); err != nil {
					t.Fatalf("accepted invalid ip %q", ip)
				}
			}
			families := map[int]bool{}
			for _, gw := range s.DefaultRoute {
				a, err := netip.ParseAddr(gw)
				if err != nil || families[family(a)] {
					t.Fatalf("accepted default-route %q", s.DefaultRoute)
				}
				families[family(a)] = true
			}
			for _, pm := range s.PortMappings {
				if pm.HostPort < 1 || pm.HostPort > 65535 || pm.ContainerPort < 1 || pm.ContainerPort > 65535 || pm.Protocol == "" {
					t.Fatalf("accepted port mapping %+v", pm)
				}
			}
			if _, err := json.Marshal(s.capabilityArgs()); err != nil {
				t.Fatalf("capability args of %q do not encode: %v", s.Ref(), err)
			}
		}
	})
}

// FuzzLoadNetConfig feeds arbitrary NAD configurations and cni-args to the configuration
// loader. What it accepts must be a configuration list libcni loads, with a valid name.
func FuzzLoadNetConfig(f *testing.F) {
	for _, seed := range [][2]string{
		{`{"type":"macvlan","master":"eth1"}`, ``},
		{`{"name":"n","cniVersion":"0.3.1","plugins":[{"type":"bridge","args":{"cni":{"x":1}}},{"type":"portmap","capabilities":{"portMappings":true}}]}`, `{"x":2}`},
		{`{"cniVersions":["1.0.0"],"plugins":[{"type":"a"}]}`, `{"k":[1,2.5,"s",null]}`},
		{`{"type":"a","plugins":[]}`, ``},
		{`{"type":"a","big":123456789012345678901234567890}`, `{}`},
		{`[1]`, `null`},
	} {
		f.Add([]byte(seed[0]), seed[1])
	}
	f.Fuzz(func(t *testing.T, raw []byte, cniArgs string) {
		var sel Selection
		if cniArgs != "" && decodeCNIArgs(&sel, json.RawMessage(cniArgs)) != nil {
			return
		}
		args := sel.CNIArgs
		conf, err := loadNetConfig(raw, "net-a", "1.0.0", args)
		if err != nil {
			return
		}
		list, err := libcni.NetworkConfFromBytes(conf.bytes)
		if err != nil {
			t.Fatalf("accepted config libcni refuses: %v\n%s", err, conf.bytes)
		}
		if list.Name != conf.name || utils.ValidateNetworkName(list.Name) != nil || len(list.Plugins) == 0 {
			t.Fatalf("accepted config with name %q and %d plugins", list.Name, len(list.Plugins))
		}
		for _, p := range list.Plugins {
			if p.Network.Type == "" {
				t.Fatalf("accepted plugin without type: %s", p.Bytes)
			}
		}
		// Loading the output again must change nothing: the loader is idempotent.
		again, err := loadNetConfig(conf.bytes, "other", "0.4.0", args)
		if err != nil || string(again.bytes) != string(conf.bytes) {
			t.Fatalf("reloading changed the config: %v\n%s\n%s", err, conf.bytes, again.bytes)
		}
	})
}

// FuzzClaims feeds arbitrary network configurations (a tenant writes them) and requests to
// the segment and claim readers. A segment either is the network's own or does not depend on
// the network's name; and whatever a configuration asks for, another pod that has the same
// on the same network is found to have taken it.
func FuzzClaims(f *testing.F) {
	for _, seed := range []struct{ config, ips, mac string }{
		{`{"type":"macvlan","master":"eth0"}`, "10.0.0.5/24", ""},
		{`{"cniVersion":"1.0.0","plugins":[{"type":"bridge","bridge":"br0","vlan":7},{"type":"tuning"}]}`, "fd00::5/64", "02:00:00:00:00:05"},
		{`{"plugins":[{"type":"macvlan","args":{"cni":{"ips":["10.1.0.1"],"mac":"02:00:00:00:00:01"}}}]}`, "", ""},
		{`{"type":"ipvlan","linkInContainer":true,"master":"x"}`, "192.0.2.1", ""},
		{`{"type":"sriov","vlan":"7"}`, "", "0a:00:00:00:00:01"},
		{`{"plugins":"x"}`, "10.0.0.1", ""},
		{`[]`, "", ""},
	} {
		f.Add(seed.config, seed.ips, seed.mac)
	}
	f.Fuzz(func(t *testing.T, config, ip, mac string) {
		spec := func(network string) delegate.Spec {
			return delegate.Spec{Network: network, Ifname: "net1", Config: json.RawMessage(config), Resource: "loom.dev/pool",
				CapabilityArgs: map[string]any{"ips": []string{ip}, "mac": mac}}
		}
		a, b := SegmentOf(spec("acme/lan"), "eth0"), SegmentOf(spec("globex/lan"), "eth0")
		if a != b && (a != "network acme/lan" || b != "network globex/lan") {
			t.Fatalf("segments %q and %q: either the networks' own or one", a, b)
		}
		asked := Asked(acme, []delegate.Spec{spec("acme/lan")}, "eth0")
		held := Recorded(delegate.Record{ContainerID: "c-g1", Pod: globex,
			Attachments: []delegate.Entry{{Spec: spec("acme/lan"), State: delegate.StateAdding}}}, "eth0")
		err := Taken(asked, held)
		if len(asked) > 0 && !errors.As(err, new(*TakenError)) {
			t.Fatalf("asked %+v, held the same %+v: got %v, want a refusal", asked, held, err)
		}
		if len(asked) == 0 && err != nil {
			t.Fatalf("nothing asked: got %v", err)
		}
	})
}
