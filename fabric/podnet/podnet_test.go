package podnet

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/loom-cni/loom/internal/netnstest"
)

func TestHostVethName(t *testing.T) {
	a, b := HostVethName("c1", "eth0"), HostVethName("c1", "net1")
	if len(a) != 15 || !strings.HasPrefix(a, "loom") || a == b || a != HostVethName("c1", "eth0") {
		t.Errorf("HostVethName = %q, %q: want stable, distinct, 15 characters, prefix loom", a, b)
	}
	if !isHostVeth(a) || isHostVeth("loomXYZ") || isHostVeth("eth0") {
		t.Error("isHostVeth does not recognise the names HostVethName makes")
	}
}

// TestPlumbing attaches a "pod" namespace to a "node" namespace and checks both ends,
// traffic between them, CHECK, and that DEL is idempotent and leaves nothing.
func TestPlumbing(t *testing.T) {
	nodeName, node := netnstest.New(t)
	podName, _ := netnstest.New(t)
	addr := netip.MustParseAddr("10.99.0.7")
	const id = "container-1"
	var ifs Interfaces
	err := node.Do(func(ns.NetNS) error {
		var addErr error
		ifs, addErr = Add(netnstest.Path(podName), id, "eth0", addr, 1400)
		return addErr
	})
	if err != nil {
		t.Fatal(err)
	}
	if ifs.Pod.Name != "eth0" || ifs.Pod.Sandbox != netnstest.Path(podName) || ifs.Host.Name != HostVethName(id, "eth0") {
		t.Errorf("interfaces = %+v %+v", ifs.Host, ifs.Pod)
	}
	var links []struct {
		MTU      int `json:"mtu"`
		AddrInfo []struct {
			Local     string `json:"local"`
			Prefixlen int    `json:"prefixlen"`
		} `json:"addr_info"`
	}
	if jerr := json.Unmarshal([]byte(netnstest.Run(t, podName, "ip", "-4", "-j", "addr", "show", "eth0")), &links); jerr != nil || len(links) != 1 {
		t.Fatalf("pod eth0: %v", jerr)
	}
	if l := links[0]; l.MTU != 1400 || len(l.AddrInfo) != 1 || l.AddrInfo[0].Local != "10.99.0.7" || l.AddrInfo[0].Prefixlen != 32 {
		t.Errorf("pod eth0 = %+v, want MTU 1400 and 10.99.0.7/32 only", l)
	}
	if r := netnstest.Run(t, podName, "ip", "route", "show", "default"); !strings.Contains(r, "via 169.254.1.1 dev eth0") {
		t.Errorf("pod default route = %q", r)
	}
	if r := netnstest.Run(t, nodeName, "ip", "route", "show", "10.99.0.7"); !strings.Contains(r, ifs.Host.Name) || !strings.Contains(r, "proto 76") {
		t.Errorf("node route to the pod = %q", r)
	}
	netnstest.Run(t, nodeName, "ip", "link", "set", "lo", "up")
	netnstest.Run(t, podName, "ping", "-c", "1", "-W", "2", "169.254.1.1")
	netnstest.Run(t, nodeName, "ping", "-c", "1", "-W", "2", "10.99.0.7")

	err = node.Do(func(ns.NetNS) error { return Check(netnstest.Path(podName), id, "eth0", addr) })
	if err != nil {
		t.Errorf("Check of a healthy interface: %v", err)
	}
	err = node.Do(func(ns.NetNS) error {
		return Check(netnstest.Path(podName), id, "eth0", netip.MustParseAddr("10.99.0.8"))
	})
	if err == nil {
		t.Error("Check with another address passed")
	}

	// A second interface of the same name fails and leaves nothing behind.
	err = node.Do(func(ns.NetNS) error {
		_, addErr := Add(netnstest.Path(podName), "container-2", "eth0", netip.MustParseAddr("10.99.0.9"), 1400)
		return addErr
	})
	if err == nil {
		t.Error("Add of a second eth0 succeeded")
	}
	err = node.Do(func(ns.NetNS) error {
		if _, lerr := netlink.LinkByName(HostVethName("container-2", "eth0")); lerr == nil {
			t.Error("the failed Add left its host interface")
		}
		for range 2 {
			if derr := Del(id, "eth0"); derr != nil {
				return derr
			}
		}
		names, lerr := HostLinks()
		if lerr != nil || len(names) != 0 {
			t.Errorf("after DEL: host links %v, %v", names, lerr)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Del: %v", err)
	}
	if out := netnstest.Run(t, podName, "ip", "-o", "link"); strings.Contains(out, "eth0") {
		t.Errorf("pod still has eth0 after DEL: %s", out)
	}
}
