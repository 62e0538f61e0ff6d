package exec_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/loom-cni/loom/delegate"
	"github.com/loom-cni/loom/delegate/exec"
	"github.com/loom-cni/loom/internal/netnstest"
)

// pluginsDir is where `make test` installed the reference plugins.
func pluginsDir(t *testing.T) string {
	t.Helper()
	netnstest.RequireRoot(t)
	dir := os.Getenv("LOOM_CNI_PLUGINS_DIR")
	if dir == "" {
		t.Skip("LOOM_CNI_PLUGINS_DIR is not set: run through `make test`, which installs the reference plugins")
	}
	return dir
}

func bridgeConf(version, bridge, dataDir, subnet string) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"cniVersion":%q,"name":"testnet","plugins":[{"type":"bridge","bridge":%q,"isGateway":true,
	 "ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":%q}]]}}]}`, version, bridge, dataDir, subnet))
}

// inNode runs f with the calling thread in the node namespace, so the plugins libcni starts
// see that namespace as their host.
func inNode(t *testing.T, node ns.NetNS, f func() error) {
	t.Helper()
	if err := node.Do(func(ns.NetNS) error { return f() }); err != nil {
		t.Fatal(err)
	}
}

func TestAddCheckDelAcrossCNIVersions(t *testing.T) {
	dir := pluginsDir(t)
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			_, node := netnstest.New(t)
			podName, _ := netnstest.New(t)
			dataDir := t.TempDir()
			cni := exec.New([]string{dir}, t.TempDir(), nil)
			call := delegate.Call{
				Spec:        delegate.Spec{Network: "testnet", Ifname: "eth0", Kind: delegate.KindCNI, Config: bridgeConf(v, "loomt0", dataDir, "10.99.0.0/24")},
				ContainerID: "c1", Netns: netnstest.Path(podName),
				Pod: delegate.PodRef{Namespace: "default", Name: "p", UID: "u1"},
			}
			ctx := context.Background()
			var res types.Result
			inNode(t, node, func() (err error) { res, err = cni.Add(ctx, call); return err })
			r, err := current.NewResultFromResult(res)
			if err != nil {
				t.Fatal(err)
			}
			if len(r.IPs) != 1 || !strings.HasPrefix(r.IPs[0].Address.String(), "10.99.0.") {
				t.Fatalf("result IPs = %v", r.IPs)
			}
			netnstest.Run(t, podName, "ip", "addr", "show", "eth0")
			if v != "0.3.1" {
				inNode(t, node, func() error { return cni.Check(ctx, call, res) })
			}
			inNode(t, node, func() error { return cni.Del(ctx, call, res) })
			if out := netnstest.Run(t, podName, "ip", "-o", "link"); strings.Contains(out, "eth0") {
				t.Fatalf("eth0 still in the pod after DEL: %s", out)
			}
			assertNoAllocations(t, dataDir)
			inNode(t, node, func() error { return cni.Del(ctx, call, nil) })
		})
	}
}

func TestDelSucceedsWhenTheNetnsIsGone(t *testing.T) {
	dir := pluginsDir(t)
	_, node := netnstest.New(t)
	dataDir := t.TempDir()
	cni := exec.New([]string{dir}, t.TempDir(), nil)
	call := delegate.Call{
		Spec:        delegate.Spec{Network: "testnet", Ifname: "eth0", Kind: delegate.KindCNI, Config: bridgeConf("1.1.0", "loomt0", dataDir, "10.99.1.0/24")},
		ContainerID: "c1", Netns: "/run/netns/loomt-does-not-exist",
	}
	ctx := context.Background()
	// An allocation as if ADD had run and the netns had vanished since.
	inNode(t, node, func() error {
		podName, _ := netnstest.New(t)
		c := call
		c.Netns = netnstest.Path(podName)
		_, err := cni.Add(ctx, c)
		return err
	})
	inNode(t, node, func() error { return cni.Del(ctx, call, nil) })
	assertNoAllocations(t, dataDir)
}

func TestGCReleasesWhatNoLiveAttachmentHolds(t *testing.T) {
	dir := pluginsDir(t)
	_, node := netnstest.New(t)
	dataDir := t.TempDir()
	cni := exec.New([]string{dir}, t.TempDir(), nil)
	spec := delegate.Spec{Network: "testnet", Ifname: "eth0", Kind: delegate.KindCNI, Config: bridgeConf("1.1.0", "loomt0", dataDir, "10.99.2.0/24")}
	ctx := context.Background()
	var calls []delegate.Call
	for _, id := range []delegate.ContainerID{"keep", "leak"} {
		podName, _ := netnstest.New(t)
		c := delegate.Call{Spec: spec, ContainerID: id, Netns: netnstest.Path(podName)}
		inNode(t, node, func() error { _, err := cni.Add(ctx, c); return err })
		calls = append(calls, c)
	}
	inNode(t, node, func() error { return cni.GC(ctx, []delegate.Spec{spec}, calls[:1]) })
	ids := allocatedContainers(t, dataDir)
	if len(ids) != 1 || ids[0] != "keep" {
		t.Fatalf("allocations after GC belong to %v, want only keep", ids)
	}
	inNode(t, node, func() error { return cni.Del(ctx, calls[0], nil) })
	assertNoAllocations(t, dataDir)
}

func TestMacvlanOnAVethMaster(t *testing.T) {
	dir := pluginsDir(t)
	nodeName, node := netnstest.New(t)
	netnstest.Run(t, nodeName, "ip", "link", "add", "loomt-m0", "type", "veth", "peer", "name", "loomt-m1")
	netnstest.Run(t, nodeName, "ip", "link", "set", "loomt-m0", "up")
	podName, _ := netnstest.New(t)
	conf := json.RawMessage(`{"cniVersion":"1.1.0","name":"mv","plugins":[{"type":"macvlan","master":"loomt-m0","mode":"bridge",
	  "ipam":{"type":"static","addresses":[{"address":"192.0.2.10/24"}]}}]}`)
	cni := exec.New([]string{dir}, t.TempDir(), nil)
	call := delegate.Call{Spec: delegate.Spec{Network: "mv", Ifname: "net1", Kind: delegate.KindCNI, Config: conf}, ContainerID: "c1", Netns: netnstest.Path(podName)}
	ctx := context.Background()
	inNode(t, node, func() error { _, err := cni.Add(ctx, call); return err })
	var link netlink.Link
	err := ns.WithNetNSPath(netnstest.Path(podName), func(ns.NetNS) (err error) {
		link, err = netlink.LinkByName("net1")
		return err
	})
	if err != nil || link.Type() != "macvlan" {
		t.Fatalf("net1 in pod: %v %v", link, err)
	}
	inNode(t, node, func() error { return cni.Del(ctx, call, nil) })
}

func allocatedContainers(t *testing.T, dataDir string) []string {
	t.Helper()
	var ids []string
	files, _ := filepath.Glob(filepath.Join(dataDir, "testnet", "*"))
	for _, f := range files {
		base := filepath.Base(f)
		if strings.HasPrefix(base, "last_reserved_ip") || base == "lock" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// host-local writes "<containerID>\r\n<ifname>".
		if f := strings.Fields(string(b)); len(f) > 0 {
			ids = append(ids, f[0])
		}
	}
	return ids
}

func assertNoAllocations(t *testing.T, dataDir string) {
	t.Helper()
	if ids := allocatedContainers(t, dataDir); len(ids) != 0 {
		t.Fatalf("host-local still holds addresses for %v", ids)
	}
}

// TestIpvlan runs the ipvlan delegate where the kernel has ipvlan, and says so where it does
// not: a kernel without the driver answers "Unknown device type" / EOPNOTSUPP.
func TestIpvlan(t *testing.T) {
	dir := pluginsDir(t)
	nodeName, node := netnstest.New(t)
	netnstest.Run(t, nodeName, "ip", "link", "add", "loomt-m0", "type", "veth", "peer", "name", "loomt-m1")
	probe := &netlink.IPVlan{LinkAttrs: netlink.LinkAttrs{Name: "loomt-probe", ParentIndex: 0}, Mode: netlink.IPVLAN_MODE_L2}
	err := node.Do(func(ns.NetNS) error {
		parent, err := netlink.LinkByName("loomt-m0")
		if err != nil {
			return err
		}
		probe.ParentIndex = parent.Attrs().Index
		if err := netlink.LinkAdd(probe); err != nil {
			return err
		}
		return netlink.LinkDel(probe)
	})
	if err != nil {
		t.Skipf("kernel lacks ipvlan (creating an ipvlan link failed: %v); this test needs a kernel with CONFIG_IPVLAN", err)
	}
	podName, _ := netnstest.New(t)
	conf := json.RawMessage(`{"cniVersion":"1.1.0","name":"iv","plugins":[{"type":"ipvlan","master":"loomt-m0","mode":"l2",
	  "ipam":{"type":"static","addresses":[{"address":"192.0.2.20/24"}]}}]}`)
	cni := exec.New([]string{dir}, t.TempDir(), nil)
	call := delegate.Call{Spec: delegate.Spec{Network: "iv", Ifname: "net1", Kind: delegate.KindCNI, Config: conf}, ContainerID: "c1", Netns: netnstest.Path(podName)}
	ctx := context.Background()
	inNode(t, node, func() error { _, err := cni.Add(ctx, call); return err })
	if out := netnstest.Run(t, podName, "ip", "-d", "link", "show", "net1"); !strings.Contains(out, "ipvlan") {
		t.Fatalf("net1 is not an ipvlan link: %s", out)
	}
	inNode(t, node, func() error { return cni.Del(ctx, call, nil) })
}
