package attach_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/loom-cni/loom/delegate"
	"github.com/loom-cni/loom/internal/netnstest"
	"github.com/loom-cni/loom/sriov/attach"
	"github.com/loom-cni/loom/sriov/sriovtest"
	"github.com/loom-cni/loom/sriov/vf"
)

// The node of these tests is a network namespace with a veth standing in for the PF and a
// macvlan (bridge mode) on it for each netdev VF, named as the fake sysfs names the VFs; the
// DPDK PF's VFs have no netdevs. PF-side settings go to a Recorder.
const (
	netPF    = "ltpf0" // PF whose VFs are netdevs
	dpdkPF   = "ltpf1" // PF whose VFs are bound to vfio-pci
	origMTU  = 1500    // the VF netdevs' MTU before ADD
	pfMTU    = 9000    // the PF's, the most a macvlan on it can have
	resource = "loom.dev/sriov_a"
)

// pluginsDir is where `make test` installed the reference plugins.
func pluginsDir(t testing.TB) string {
	t.Helper()
	netnstest.RequireRoot(t)
	dir := os.Getenv("LOOM_CNI_PLUGINS_DIR")
	if dir == "" {
		t.Skip("LOOM_CNI_PLUGINS_DIR is not set: run through `make test`, which installs the reference plugins")
	}
	return dir
}

type testbed struct {
	t        testing.TB
	node     string
	tree     *sriovtest.Tree
	rec      *vf.Recorder
	att      *attach.Attachment
	dataDir  string // host-local's
	recPath  string
	stateDir string
	plugins  string
}

func newTestbed(t testing.TB, vfs int) *testbed {
	t.Helper()
	plugins := pluginsDir(t)
	node, _ := netnstest.New(t)
	tree, err := sriovtest.Write(t.TempDir(),
		sriovtest.PF{Name: netPF, TotalVFs: vfs, NumVFs: vfs},
		sriovtest.PF{Name: dpdkPF, VFDriver: sriovtest.DPDKDriver, TotalVFs: 2, NumVFs: 2})
	if err != nil {
		t.Fatal(err)
	}
	b := &testbed{t: t, node: node, tree: tree, dataDir: t.TempDir(), plugins: plugins,
		recPath: filepath.Join(t.TempDir(), "vf-state.json"), stateDir: t.TempDir()}
	b.rec = vf.NewRecorder(b.recPath)
	h := b.handle(node)
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: netPF, MTU: pfMTU}, PeerName: netPF + "p"}); err != nil {
		t.Fatal(err)
	}
	pf := b.mustLink(node, netPF)
	for _, name := range []string{netPF, netPF + "p"} {
		if err := h.LinkSetUp(b.mustLink(node, name)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range vfs {
		b.addStandIn(vfName(i), pf.Attrs().Index, fmt.Sprintf("02:00:00:00:%02x:01", i))
	}
	b.att = b.attachment(b.rec)
	return b
}

// attachment returns an Attachment for the testbed that configures PFs through pf.
func (b *testbed) attachment(pf vf.Configurator) *attach.Attachment {
	return attach.New(attach.Config{
		SysfsRoot: b.tree.Root, PF: pf, StateDir: b.stateDir, CNIPath: []string{b.plugins},
		HostNetns: netnstest.Path(b.node), Logger: slog.New(slog.NewTextHandler(testWriter{b.t}, nil)),
	})
}

func vfName(i int) string { return fmt.Sprintf("%sv%d", netPF, i) }

// addStandIn creates a macvlan standing in for a VF netdev in the node.
func (b *testbed) addStandIn(name string, parent int, mac string) {
	b.t.Helper()
	hw, _ := net.ParseMAC(mac)
	h := b.handle(b.node)
	l := &netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: name, ParentIndex: parent, MTU: origMTU, HardwareAddr: hw},
		Mode: netlink.MACVLAN_MODE_BRIDGE}
	if err := h.LinkAdd(l); err != nil {
		b.t.Fatalf("add vf stand-in %s: %v", name, err)
	}
	// A netns deleted a moment ago may still hold an up stand-in with the same MAC: the
	// kernel dismantles namespaces in the background.
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := h.LinkSetUp(b.mustLink(b.node, name))
		if err == nil {
			return
		}
		if !errors.Is(err, unix.EADDRINUSE) || time.Now().After(deadline) {
			b.t.Fatalf("set vf stand-in %s up: %v", name, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// handle returns a netlink handle in the namespace, closed when the test ends.
func (b *testbed) handle(nsName string) *netlink.Handle {
	b.t.Helper()
	nsh, err := netns.GetFromName(nsName)
	if err != nil {
		b.t.Fatalf("open netns %s: %v", nsName, err)
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(h.Close)
	return h
}

// link returns the link named name in the namespace, nil when there is none.
func (b *testbed) link(nsName, name string) netlink.Link {
	b.t.Helper()
	l, err := b.handle(nsName).LinkByName(name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil
	}
	if err != nil {
		b.t.Fatalf("find %s in %s: %v", name, nsName, err)
	}
	return l
}

func (b *testbed) mustLink(nsName, name string) netlink.Link {
	b.t.Helper()
	l := b.link(nsName, name)
	if l == nil {
		b.t.Fatalf("no %s in netns %s", name, nsName)
	}
	return l
}

// call is the call for interface ifname of a pod with netns podNS, on VF index of pf, with
// plugin as the loom-sriov plugin's configuration (without type and deviceID).
func (b *testbed) call(containerID, podNS, pf string, index int, cniVersion, plugin string) delegate.Call {
	conf := fmt.Sprintf(`{"cniVersion":%q,"name":"sriov-a","plugins":[{"type":"loom-sriov","deviceID":%q%s}]}`,
		cniVersion, b.tree.VFAddress(pf, index), plugin)
	return delegate.Call{
		Spec: delegate.Spec{Network: "default/sriov-a", Ifname: "net1", Kind: attach.Kind,
			Config: json.RawMessage(conf), Resource: resource},
		ContainerID: delegate.ContainerID(containerID), Netns: netnstest.Path(podNS),
		Pod: delegate.PodRef{Namespace: "default", Name: "pod-" + containerID, UID: delegate.PodUID("uid-" + containerID)},
	}
}

func (b *testbed) ipam(subnet string) string {
	return fmt.Sprintf(`,"ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":%q}]],"routes":[{"dst":"10.78.0.0/16"}]}`,
		b.dataDir, subnet)
}

func (b *testbed) pfState(pf string, index int) vf.State {
	b.t.Helper()
	s, err := b.rec.State(pf, index)
	if err != nil {
		b.t.Fatal(err)
	}
	return s
}

// assertReturned checks that VF index of netPF is back in the node as it was, and that its
// settings on the PF are the defaults again.
func (b *testbed) assertReturned(index int) {
	b.t.Helper()
	l := b.link(b.node, vfName(index))
	if l == nil {
		b.t.Fatalf("%s is not back in the node", vfName(index))
	}
	a := l.Attrs()
	if want := fmt.Sprintf("02:00:00:00:%02x:01", index); a.HardwareAddr.String() != want || a.MTU != origMTU || a.Flags&net.FlagUp == 0 {
		b.t.Errorf("%s came back with mac %s, mtu %d, flags %v; want mac %s, mtu %d, up",
			vfName(index), a.HardwareAddr, a.MTU, a.Flags, want, origMTU)
	}
	if s := b.pfState(netPF, index); s != vf.Default() {
		b.t.Errorf("pf holds %+v for vf %d after DEL, want the defaults", s, index)
	}
}

func (b *testbed) add(call delegate.Call) *current.Result {
	b.t.Helper()
	res, err := b.att.Add(context.Background(), call)
	if err != nil {
		b.t.Fatalf("add %s: %v", call.ContainerID, err)
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		b.t.Fatal(err)
	}
	return r
}

func (b *testbed) del(call delegate.Call, prev types.Result) {
	b.t.Helper()
	if err := b.att.Del(context.Background(), call, prev); err != nil {
		b.t.Fatalf("del %s: %v", call.ContainerID, err)
	}
}

// assertNoAllocations checks that host-local holds no address in the network.
func (b *testbed) assertNoAllocations() {
	b.t.Helper()
	entries, _ := os.ReadDir(filepath.Join(b.dataDir, "sriov-a"))
	for _, e := range entries {
		if net.ParseIP(e.Name()) != nil {
			b.t.Errorf("host-local still holds %s", e.Name())
		}
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func TestAddCheckDel(t *testing.T) {
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			b := newTestbed(t, 2)
			pod, _ := netnstest.New(t)
			call := b.call("c1", pod, netPF, 1, v, `,"vlan":100,"vlanQoS":2,"link_state":"enable","max_tx_rate":1000,"mtu":9000,
				"capabilities":{"mac":true}`+b.ipam("10.77.0.0/24"))
			call.CapabilityArgs = map[string]any{"mac": "02:11:22:33:44:55"}
			ctx := context.Background()

			raw, err := b.att.Add(ctx, call)
			if err != nil {
				t.Fatal(err)
			}
			if raw.Version() != v {
				t.Errorf("result version %s, want %s", raw.Version(), v)
			}
			res, err := current.NewResultFromResult(raw)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Interfaces) != 1 || *res.Interfaces[0] != (current.Interface{Name: "net1", Mac: "02:11:22:33:44:55", Sandbox: call.Netns}) {
				t.Errorf("result interfaces %+v", res.Interfaces)
			}
			if len(res.IPs) != 1 || !strings.HasPrefix(res.IPs[0].Address.String(), "10.77.0.") {
				t.Fatalf("result ips %+v", res.IPs)
			}

			// The VF left the node and is the pod's net1, with the pod's MAC, the network's
			// MTU and the address IPAM gave.
			if b.link(b.node, vfName(1)) != nil {
				t.Error("the vf is still in the node")
			}
			l := b.mustLink(pod, "net1")
			if a := l.Attrs(); a.HardwareAddr.String() != "02:11:22:33:44:55" || a.MTU != 9000 || a.Flags&net.FlagUp == 0 {
				t.Errorf("net1 in the pod: mac %s, mtu %d, flags %v", a.HardwareAddr, a.MTU, a.Flags)
			}
			if out := netnstest.Run(t, pod, "ip", "-o", "addr", "show", "net1"); !strings.Contains(out, res.IPs[0].Address.String()) {
				t.Errorf("net1 lacks %s: %s", &res.IPs[0].Address, out)
			}
			if out := netnstest.Run(t, pod, "ip", "route", "show", "10.78.0.0/16"); !strings.Contains(out, "via 10.77.0.1 dev net1") {
				t.Errorf("no route to 10.78.0.0/16 via the gateway: %q", out)
			}
			want := vf.State{MAC: "02:11:22:33:44:55", VLAN: 100, QoS: 2, SpoofChk: true, LinkState: vf.LinkEnable, MaxTxRate: 1000}
			if s := b.pfState(netPF, 1); s != want {
				t.Errorf("pf holds %+v, want %+v", s, want)
			}
			info, err := b.att.DeviceInfo(call, raw)
			if err != nil {
				t.Fatal(err)
			}
			wantInfo := fmt.Sprintf(`{"type":"pci","version":"1.1.0","pci":{"pci-address":%q,"pf-pci-address":%q}}`,
				b.tree.VFAddress(netPF, 1), b.tree.PFAddress(netPF))
			if string(info) != wantInfo {
				t.Errorf("device info %s, want %s", info, wantInfo)
			}

			if err := b.att.Check(ctx, call, raw); err != nil {
				t.Errorf("check: %v", err)
			}
			// Someone changes the VF's VLAN on the PF behind Loom's back.
			changed := want
			changed.VLAN = 5
			if err := b.rec.Set(netPF, 1, changed); err != nil {
				t.Fatal(err)
			}
			if err := b.att.Check(ctx, call, raw); err == nil {
				t.Error("check passed with the vlan changed on the pf")
			}

			b.del(call, raw)
			if b.link(pod, "net1") != nil {
				t.Error("net1 is still in the pod after DEL")
			}
			b.assertReturned(1)
			b.assertNoAllocations()
			b.del(call, raw) // DEL again is harmless
			b.assertReturned(1)
		})
	}
}

func TestTwoPodsOnVFsOfOnePFTalk(t *testing.T) {
	b := newTestbed(t, 2)
	podA, _ := netnstest.New(t)
	podB, _ := netnstest.New(t)
	callA := b.call("a", podA, netPF, 0, "1.0.0", b.ipam("10.77.1.0/24"))
	callB := b.call("b", podB, netPF, 1, "1.0.0", b.ipam("10.77.1.0/24"))
	resA := b.add(callA)
	resB := b.add(callB)
	netnstest.Run(t, podA, "ping", "-c", "1", "-W", "2", resB.IPs[0].Address.IP.String())
	netnstest.Run(t, podB, "ping", "-c", "1", "-W", "2", resA.IPs[0].Address.IP.String())
	b.del(callA, resA)
	b.del(callB, resB)
	b.assertReturned(0)
	b.assertReturned(1)
}

// When a pod's netns is deleted before DEL, the kernel hands a real VF back to the host
// under its in-pod name, and sysfs lists it there. DEL finds it by the VF's address and
// renames it back.
func TestDelAfterTheNetnsIsGone(t *testing.T) {
	b := newTestbed(t, 2)
	pod := volatileNetns(t)
	call := b.call("c1", pod, netPF, 0, "1.0.0", `,"vlan":7`+b.ipam("10.77.2.0/24"))
	res := b.add(call)

	if out, err := exec.Command("ip", "netns", "del", pod).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del %s: %v: %s", pod, err, out)
	}
	// The stand-in died with the namespace; play the kernel returning the VF as net1.
	b.addStandIn("net1", b.mustLink(b.node, netPF).Attrs().Index, res.Interfaces[0].Mac)
	addr := b.tree.VFAddress(netPF, 0)
	if err := b.tree.Bind(addr, "iavf", "net1"); err != nil {
		t.Fatal(err)
	}

	b.del(call, res)
	if b.link(b.node, "net1") != nil {
		t.Error("net1 is still in the node: the returned VF was not renamed")
	}
	b.assertReturned(0)
	b.assertNoAllocations()

	// A VF found nowhere (a stand-in that died, a VF removed) does not stop DEL from
	// restoring the PF and dropping the claim.
	pod2 := volatileNetns(t)
	call2 := b.call("c2", pod2, netPF, 1, "1.0.0", `,"vlan":8`)
	b.add(call2)
	if out, err := exec.Command("ip", "netns", "del", pod2).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del %s: %v: %s", pod2, err, out)
	}
	b.del(call2, nil)
	if s := b.pfState(netPF, 1); s != vf.Default() {
		t.Errorf("pf holds %+v for vf 1 after DEL, want the defaults", s)
	}
	pod3, _ := netnstest.New(t)
	b.addStandIn(vfName(1), b.mustLink(b.node, netPF).Attrs().Index, "02:00:00:00:01:01")
	b.add(b.call("c3", pod3, netPF, 1, "1.0.0", "")) // the claim is gone
}

// volatileNetns creates a network namespace that the test deletes itself.
func volatileNetns(t *testing.T) string {
	t.Helper()
	netnstest.RequireRoot(t)
	name := fmt.Sprintf("loomt-%d-gone-%s", os.Getpid(), strings.NewReplacer("/", "-").Replace(t.Name()))
	if len(name) > 64 {
		name = name[:64]
	}
	name = fmt.Sprintf("%s-%d", name, volatileCount)
	volatileCount++
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if _, err := os.Stat(netnstest.Path(name)); err == nil {
			exec.Command("ip", "netns", "del", name).Run()
		}
	})
	return name
}

var volatileCount int

func TestAClaimedVFIsRefused(t *testing.T) {
	b := newTestbed(t, 1)
	podA, _ := netnstest.New(t)
	podB, _ := netnstest.New(t)
	callA := b.call("a", podA, netPF, 0, "1.0.0", `,"vlan":10`+b.ipam("10.77.3.0/24"))
	callB := b.call("b", podB, netPF, 0, "1.0.0", `,"vlan":20`+b.ipam("10.77.3.0/24"))
	resA := b.add(callA)
	stateA := b.pfState(netPF, 0)

	_, err := b.att.Add(context.Background(), callB)
	if !errors.Is(err, attach.ErrInUse) {
		t.Fatalf("add of a claimed vf: %v, want ErrInUse", err)
	}
	t.Logf("refused: %v", err)
	// The orchestrator runs DEL after a failed ADD: it must not touch pod a's VF.
	b.del(callB, nil)
	if err := b.att.Check(context.Background(), callA, resA); err != nil {
		t.Errorf("pod a's vf after pod b's ADD and DEL: %v", err)
	}
	if s := b.pfState(netPF, 0); s != stateA {
		t.Errorf("pf holds %+v, want pod a's %+v", s, stateA)
	}
	if b.link(podB, "net1") != nil {
		t.Error("pod b got an interface")
	}

	// A runtime retrying ADD for pod a gets the VF again.
	resA = b.add(callA)
	if err := b.att.Check(context.Background(), callA, resA); err != nil {
		t.Errorf("check after ADD again: %v", err)
	}
	b.del(callA, resA)
	b.assertReturned(0)
	b.assertNoAllocations()
}

func TestAFailedAddGivesTheVFBack(t *testing.T) {
	b := newTestbed(t, 1)
	pod, _ := netnstest.New(t)

	t.Run("ipam", func(t *testing.T) {
		// The IPAM plugin runs after the VF moved into the pod.
		call := b.call("c1", pod, netPF, 0, "1.0.0", `,"vlan":10,"mtu":9000,"ipam":{"type":"loom-no-such-ipam"}`)
		if _, err := b.att.Add(context.Background(), call); err == nil {
			t.Fatal("add with a missing IPAM plugin succeeded")
		}
		if b.link(pod, "net1") != nil {
			t.Error("net1 stayed in the pod")
		}
		b.assertReturned(0)
		calls, err := b.rec.Calls()
		if err != nil {
			t.Fatal(err)
		}
		if len(calls) != 2 || calls[0].State.VLAN != 10 || calls[1].State != vf.Default() {
			t.Errorf("pf calls %+v, want the network's settings and then the saved ones", calls)
		}
		b.del(call, nil) // what the orchestrator runs after a failed ADD
	})
	t.Run("pf", func(t *testing.T) {
		b.rec.FailNext(errors.New("pf refuses"))
		call := b.call("c2", pod, netPF, 0, "1.0.0", `,"vlan":10`)
		if _, err := b.att.Add(context.Background(), call); err == nil {
			t.Fatal("add with a failing pf succeeded")
		}
		b.assertReturned(0)
	})
	// Nothing is left claimed.
	call := b.call("c3", pod, netPF, 0, "1.0.0", b.ipam("10.77.4.0/24"))
	res := b.add(call)
	b.del(call, res)
	b.assertReturned(0)
}

func TestDPDKVFsGetPFSettingsOnly(t *testing.T) {
	b := newTestbed(t, 1)
	pod, _ := netnstest.New(t)
	call := b.call("c1", pod, dpdkPF, 1, "1.0.0", `,"vlan":200,"trust":"on","mac":"02:00:00:00:aa:01"`)
	res, err := b.att.Add(context.Background(), call)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(res); string(b) != `{"cniVersion":"1.0.0"}` {
		t.Errorf("result %s, want no interface", b)
	}
	want := vf.State{MAC: "02:00:00:00:aa:01", VLAN: 200, SpoofChk: true, Trust: true, LinkState: vf.LinkAuto}
	if s := b.pfState(dpdkPF, 1); s != want {
		t.Errorf("pf holds %+v, want %+v", s, want)
	}
	if err := b.att.Check(context.Background(), call, res); err != nil {
		t.Errorf("check: %v", err)
	}
	b.del(call, res)
	if s := b.pfState(dpdkPF, 1); s != vf.Default() {
		t.Errorf("pf holds %+v after DEL, want the defaults", s)
	}

	before, _ := b.rec.Calls()
	withIPAM := b.call("c2", pod, dpdkPF, 0, "1.0.0", `,"vlan":200`+b.ipam("10.77.5.0/24"))
	if _, err := b.att.Add(context.Background(), withIPAM); err == nil {
		t.Fatal("a DPDK VF was given IPAM")
	}
	if after, _ := b.rec.Calls(); len(after) != len(before) {
		t.Errorf("the refused ADD configured the PF: %+v", after[len(before):])
	}
}

func TestGCReleasesVFsNoLiveAttachmentHolds(t *testing.T) {
	b := newTestbed(t, 2)
	podA, _ := netnstest.New(t)
	podB, _ := netnstest.New(t)
	callA := b.call("a", podA, netPF, 0, "1.0.0", `,"vlan":10`+b.ipam("10.77.6.0/24"))
	callB := b.call("b", podB, netPF, 1, "1.0.0", `,"vlan":11`+b.ipam("10.77.6.0/24"))
	resA := b.add(callA)
	b.add(callB)

	// A fresh Attachment, as after a restart of loomd: the claims are all it has.
	restarted := b.attachment(vf.NewRecorder(b.recPath))
	if err := restarted.GC(context.Background(), []delegate.Spec{callA.Spec}, []delegate.Call{callA}); err != nil {
		t.Fatal(err)
	}
	if b.link(podB, "net1") != nil {
		t.Error("GC left pod b's VF in its netns")
	}
	b.assertReturned(1)
	if err := b.att.Check(context.Background(), callA, resA); err != nil {
		t.Errorf("GC disturbed pod a's live VF: %v", err)
	}
	b.del(callA, resA)
	b.assertNoAllocations()
}
