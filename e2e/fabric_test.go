package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/retry"

	"github.com/loom-cni/loom/e2e/sim"
	"github.com/loom-cni/loom/e2e/sim/simtest"
	"github.com/loom-cni/loom/fabric"
	"github.com/loom-cni/loom/fabric/ipam"
)

// TestFabric runs Loom's primary network in each of its modes on a three-node cluster whose
// nodes sit on two underlay subnets (node1 and node2 on A, node3 on B, a router between).
func TestFabric(t *testing.T) {
	for _, mode := range []sim.Mode{sim.ModeVXLAN, sim.ModeBGP, sim.ModeVXLANCrossSubnet} {
		t.Run(string(mode), func(t *testing.T) { testFabricMode(t, mode) })
	}
}

func testFabricMode(t *testing.T, mode sim.Mode) {
	c := simtest.Start(t, func(o *sim.Options) {
		o.Mode = mode
		o.Nodes = 3
	})
	f := &fabricEnv{env: newEnv(t, c, "e2e-fabric"), mode: mode}
	f.pod(podSpec{name: "a1", node: "node1"})
	f.pod(podSpec{name: "a2", node: "node1"})
	f.pod(podSpec{name: "b", node: "node2"})
	f.pod(podSpec{name: "c", node: "node3"})
	for _, p := range []string{"a1", "a2", "b", "c"} {
		f.running(p)
	}
	steps := []struct {
		name string
		f    func(*testing.T)
	}{
		{"PodToPodPingAndTCP", f.testConnectivity},
		{"DataplaneEntries", f.testDataplane},
		{"LoomdRestartKeepsPodsConnected", f.testLoomdRestart},
	}
	if mode != sim.ModeBGP {
		steps = append(steps, struct {
			name string
			f    func(*testing.T)
		}{"VXLANFromAPodIsDropped", f.testVXLANInjection})
	}
	switch mode {
	case sim.ModeBGP:
		steps = append(steps, struct {
			name string
			f    func(*testing.T)
		}{"BIRDRouteReflectorInterop", f.testBIRD})
	case sim.ModeVXLAN:
		steps = append(steps, []struct {
			name string
			f    func(*testing.T)
		}{{"LoomIPAMOnASecondaryNetwork", f.testLoomIPAM}, {"ControllerReleasesLeakedAddress", f.testControllerReleasesLeak},
			{"Churn500PodsLeakNoAddress", f.testChurn500}}...)
	}
	steps = append(steps, struct {
		name string
		f    func(*testing.T)
	}{"NodeRemovalWithdrawsItsBlocks", f.testNodeRemoval})
	for _, s := range steps {
		if !t.Run(s.name, s.f) {
			t.Logf("%s failed; the cluster's state may affect the steps after it", s.name)
		}
	}
}

type fabricEnv struct {
	*env
	mode sim.Mode
}

// ip returns a pod's primary address from its network-status.
func (f *fabricEnv) ip(pod string) string {
	f.t.Helper()
	for _, s := range f.status(pod) {
		if s.Default && len(s.IPs) > 0 {
			return s.IPs[0]
		}
	}
	f.t.Fatalf("pod %s has no primary address in its network-status", pod)
	return ""
}

// tcp sends 1 MiB over TCP from one pod to another with iperf3.
func (f *fabricEnv) tcp(from, to string) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(f.ctx, 20*time.Second)
	defer cancel()
	server, err := f.c.PodCmd(ctx, f.ns, to, "iperf3", "-s", "-1", "-B", f.ip(to), "-p", "5201")
	if err != nil {
		f.t.Fatal(err)
	}
	if err = server.Start(); err != nil {
		f.t.Fatal(err)
	}
	defer server.Wait()
	var out string
	for range 50 {
		out, err = f.c.PodExec(ctx, f.ns, from, "iperf3", "-c", f.ip(to), "-p", "5201", "-n", "1M")
		if err == nil || !strings.Contains(out, "Connection refused") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		server.Process.Kill()
		f.t.Fatalf("TCP from %s to %s (%s): %v: %s", from, to, f.ip(to), err, out)
	}
}

// waitRoute waits until from reaches to: a block a node has just claimed reaches the other
// nodes a moment later (an informer event, or a BGP update through the route reflector).
func (f *fabricEnv) waitRoute(from, to string) {
	f.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := f.c.PodExec(f.ctx, f.ns, from, "ping", "-n", "-c", "1", "-W", "1", f.ip(to))
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("%s does not reach %s (%s) within 15 s: %v: %s", from, to, f.ip(to), err, out)
		}
	}
}

func (f *fabricEnv) testConnectivity(t *testing.T) {
	pairs := [][2]string{{"a1", "a2"}, {"a1", "b"}, {"a1", "c"}, {"c", "b"}, {"b", "a2"}}
	for _, pair := range pairs {
		f.waitRoute(pair[0], pair[1])
	}
	for _, pair := range pairs {
		f.ping(pair[0], f.ip(pair[1]))
		f.tcp(pair[0], pair[1])
	}
	if got := f.podAddrs("a1")["eth0"]; len(got) != 1 || !strings.HasPrefix(got[0], "10.244.") {
		t.Errorf("a1's eth0 carries %v, want one address of the cluster CIDR 10.244.0.0/16", got)
	}
	var links []struct {
		MTU int `json:"mtu"`
	}
	if err := json.Unmarshal([]byte(f.exec("a1", "ip", "-j", "link", "show", "eth0")), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -j link show eth0 in a1: %v", err)
	}
	want := 1450
	if f.mode == sim.ModeBGP {
		want = 1500
	}
	if mtu := links[0].MTU; mtu != want {
		t.Errorf("pod MTU in %s mode = %d, want %d", f.mode, mtu, want)
	}
}

// blocksOf returns the CIDRs of a node's IPBlocks.
func (f *fabricEnv) blocksOf(node string) []string {
	f.t.Helper()
	var out []string
	for _, b := range f.ipBlocks() {
		if b.Spec.Node == node {
			out = append(out, b.Spec.CIDR)
		}
	}
	return out
}

func (f *fabricEnv) ipBlocks() []ipam.IPBlock {
	f.t.Helper()
	return listIPBlocks(f.t, f.c)
}

func listIPBlocks(t *testing.T, c *sim.Cluster) []ipam.IPBlock {
	t.Helper()
	dyn, err := dynamic.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	list, err := dyn.Resource(ipam.GVR).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list IPBlocks: %v", err)
	}
	var out []ipam.IPBlock
	for i := range list.Items {
		b, err := ipam.FromUnstructured(&list.Items[i])
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, *b)
	}
	return out
}

// routes returns `ip route` lines of a node for dst.
func (f *fabricEnv) routes(node, dst string) string {
	f.t.Helper()
	out, err := f.c.NodeExec(f.ctx, node, "ip", "route", "show", "exact", dst)
	if err != nil {
		f.t.Fatalf("ip route on %s: %v: %s", node, err, out)
	}
	return strings.TrimSpace(out)
}

func (f *fabricEnv) testDataplane(t *testing.T) {
	peers := map[string]string{"node2": "node2", "node3": "node3"}
	for peer := range peers {
		for _, block := range f.blocksOf(peer) {
			r := f.routes("node1", block)
			var want *regexp.Regexp
			switch {
			case f.mode == sim.ModeBGP:
				want = regexp.MustCompile(`via \S+ dev eth0 proto bgp`)
			case f.mode == sim.ModeVXLANCrossSubnet && peer == "node2":
				want = regexp.MustCompile(`via \S+ dev eth0 proto 108`)
			default:
				want = regexp.MustCompile(`via \S+ dev loom\.vxlan proto 108 onlink`)
			}
			if !want.MatchString(r) {
				t.Errorf("node1's route to %s's block %s = %q, want it to match %q", peer, block, r, want)
			}
		}
	}
	if f.mode == sim.ModeBGP {
		return
	}
	fdb, err := f.c.NodeExec(f.ctx, "node1", "bridge", "fdb", "show", "dev", "loom.vxlan")
	if err != nil {
		t.Fatal(err)
	}
	node3, _ := f.c.Node("node3")
	if !strings.Contains(fdb, "dst "+node3.UnderlayIP.String()) {
		t.Errorf("node1's FDB lacks node3's VTEP (dst %s):\n%s", node3.UnderlayIP, fdb)
	}
	node2, _ := f.c.Node("node2")
	if hasNode2 := strings.Contains(fdb, "dst "+node2.UnderlayIP.String()); hasNode2 == (f.mode == sim.ModeVXLANCrossSubnet) {
		t.Errorf("node1's FDB has node2's VTEP = %v in %s mode:\n%s", hasNode2, f.mode, fdb)
	}

	// Someone removes node2's VTEP MAC from its Node: node2's loomd publishes it again, and
	// the other nodes keep node2's entries meanwhile, so its pods stay reachable.
	nodes := f.c.Client().CoreV1().Nodes()
	patch := []byte(`{"metadata":{"annotations":{"loom.dev/vtep-mac":null}}}`)
	lost, sent := f.pingDuring("a1", "b", func() {
		if _, err := nodes.Patch(f.ctx, "node2", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			n, err := nodes.Get(f.ctx, "node2", metav1.GetOptions{})
			if err == nil && n.Annotations["loom.dev/vtep-mac"] != "" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("node2's loomd did not publish its VTEP MAC again")
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	if lost > 0 {
		t.Errorf("removing node2's VTEP MAC annotation lost %d of %d echo requests between a1 and b; want none", lost, sent)
	}
}

// pingDuring pings from one pod to another every 50 ms while disrupt runs, and returns how
// many of the echo requests went unanswered.
func (f *fabricEnv) pingDuring(from, to string, disrupt func()) (lost, sent int) {
	f.t.Helper()
	cmd, err := f.c.PodCmd(f.ctx, f.ns, from, "ping", "-n", "-i", "0.05", "-W", "1", "-w", "600", f.ip(to))
	if err != nil {
		f.t.Fatal(err)
	}
	var out strings.Builder
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	// A disruption that fails the test must not leave the ping running in the pod.
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	time.Sleep(time.Second)
	disrupt()
	time.Sleep(2 * time.Second)
	cmd.Process.Signal(syscall.SIGINT)
	cmd.Wait()
	m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(out.String())
	if m == nil {
		f.t.Fatalf("ping from %s to %s printed no summary:\n%s", from, to, out.String())
	}
	tx, _ := strconv.Atoi(m[1])
	rx, _ := strconv.Atoi(m[2])
	if tx > rx {
		// Whatever ping printed besides the replies (ICMP errors, the summary) tells why.
		var notes []string
		for _, line := range strings.Split(out.String(), "\n") {
			if line != "" && !strings.Contains(line, " bytes from ") {
				notes = append(notes, line)
			}
		}
		f.t.Logf("ping from %s to %s:\n%s", from, to, strings.Join(notes, "\n"))
	}
	return tx - rx, tx
}

func (f *fabricEnv) testLoomdRestart(t *testing.T) {
	for _, node := range []string{"node2", "node3"} {
		target := map[string]string{"node2": "b", "node3": "c"}[node]
		lost, sent := f.pingDuring("a1", target, func() {
			if err := f.c.StopLoomd(node); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
			if err := f.c.StartLoomd(f.ctx, node); err != nil {
				t.Fatal(err)
			}
		})
		t.Logf("restarting loomd on %s: %d of %d echo requests from a1 to %s lost", node, lost, sent, target)
		if lost > 0 {
			t.Errorf("restarting loomd on %s lost %d of %d echo requests between a1 and %s; want none", node, lost, sent, target)
		}
	}
	// A pod started after the restart reaches the old ones.
	f.pod(podSpec{name: "late", node: "node3"})
	f.running("late")
	f.ping("late", f.ip("a1"))
	f.ping("a2", f.ip("late"))
	f.deletePod("late")
}

func (f *fabricEnv) testBIRD(t *testing.T) {
	r := f.c.Router()
	route := f.routes("node1", r.ExternalNet.String())
	if !strings.Contains(route, "proto bgp") {
		t.Errorf("node1's route to %s (announced by BIRD) = %q, want a bgp route", r.ExternalNet, route)
	}
	for _, p := range []string{"a1", "c"} {
		f.ping(p, r.ExternalIP.String())
	}
	// BIRD learned every node's blocks and installed them in the router: no encapsulation
	// anywhere on the path.
	out, err := f.c.Birdc(f.ctx, "show", "route")
	if err != nil {
		t.Fatalf("birdc show route: %v: %s", err, out)
	}
	for _, node := range []string{"node1", "node2", "node3"} {
		for _, b := range f.blocksOf(node) {
			if !strings.Contains(string(out), b) {
				t.Errorf("BIRD has no route for %s's block %s:\n%s", node, b, out)
			}
		}
	}
	// Besides the route reflector, node1 meshes with the other nodes, across the router too
	// (a session that the loomd restarts above broke may take a few seconds to return).
	deadline := time.Now().Add(30 * time.Second)
	for _, peer := range []string{"node2", "node3"} {
		n, _ := f.c.Node(peer)
		for {
			sessions, err := f.c.NodeExec(f.ctx, "node1", "ss", "-Htn", "state", "established", "( sport = :179 or dport = :179 )")
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(sessions, " "+n.UnderlayIP.String()+":") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node1 has no BGP session with %s (%s):\n%s", peer, n.UnderlayIP, sessions)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	links, _ := f.c.NodeExec(f.ctx, "node1", "ip", "-o", "link", "show", "type", "vxlan")
	if strings.TrimSpace(links) != "" {
		t.Errorf("bgp mode created VXLAN links on node1: %s", links)
	}
}

func (f *fabricEnv) testLoomIPAM(t *testing.T) {
	f.nad("pool-net", `{"cniVersion":"1.0.0","type":"macvlan","master":"eth0","mode":"bridge",
	  "ipam":{"type":"loom-ipam","range":"192.168.60.0/24","blockSize":28,"gateway":"192.168.60.1"}}`)
	f.pod(podSpec{name: "s1", node: "node1", networks: "pool-net"})
	f.pod(podSpec{name: "s2", node: "node2", networks: "pool-net"})
	f.pod(podSpec{name: "s3", node: "node1", networks: "pool-net"})
	addrs := map[string]netip.Addr{}
	for _, p := range []string{"s1", "s2", "s3"} {
		f.running(p)
		got := f.podAddrs(p)["net1"]
		if len(got) != 1 {
			t.Fatalf("pod %s's net1 carries %v, want one address", p, got)
		}
		addrs[p] = netip.MustParseAddr(got[0])
		if !netip.MustParsePrefix("192.168.60.0/24").Contains(addrs[p]) || addrs[p] == netip.MustParseAddr("192.168.60.1") {
			t.Errorf("pod %s got %s, want an address of 192.168.60.0/24 other than the gateway", p, addrs[p])
		}
	}
	block := func(a netip.Addr) netip.Prefix { p, _ := a.Prefix(28); return p }
	if block(addrs["s1"]) != block(addrs["s3"]) || block(addrs["s1"]) == block(addrs["s2"]) {
		t.Errorf("addresses %v: want s1 and s3 (node1) in one /28 block and s2 (node2) in another", addrs)
	}
	f.ping("s1", addrs["s2"].String())
	f.ping("s2", addrs["s3"].String())
	for _, p := range []string{"s1", "s2", "s3"} {
		f.deletePod(p)
	}
	f.waitAllocationsMatchPods(t)
}

func (f *fabricEnv) testChurn500(t *testing.T) {
	const n = 500
	start := time.Now()
	for i := range n {
		f.pod(podSpec{name: fmt.Sprintf("churn-%03d", i)})
	}
	for i := range n {
		f.running(fmt.Sprintf("churn-%03d", i))
	}
	t.Logf("%d pods running in %s", n, time.Since(start).Round(time.Millisecond))
	f.waitAllocationsMatchPods(t)
	start = time.Now()
	for i := range n {
		if err := f.c.Client().CoreV1().Pods(f.ns).Delete(f.ctx, fmt.Sprintf("churn-%03d", i), metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		if err := f.c.WaitPodGone(f.ctx, f.ns, fmt.Sprintf("churn-%03d", i)); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d pods deleted in %s", n, time.Since(start).Round(time.Millisecond))
	f.waitAllocationsMatchPods(t)
}

// waitAllocationsMatchPods waits until the pod allocations recorded in the IPBlocks are
// exactly the pods that exist, one per pod interface on Loom's networks.
func (f *fabricEnv) waitAllocationsMatchPods(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		pods, err := f.c.Client().CoreV1().Pods("").List(f.ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		exist := map[string]bool{}
		for _, p := range pods.Items {
			exist[string(p.UID)] = true
		}
		var stray []string
		held := map[string]bool{}
		for _, b := range f.ipBlocks() {
			for _, a := range b.Spec.Allocations {
				if a.Owner.Kind != ipam.OwnerPod {
					continue
				}
				held[a.Owner.UID] = true
				if !exist[a.Owner.UID] {
					stray = append(stray, fmt.Sprintf("%s (%s/%s in %s)", a.IP, a.Owner.Namespace, a.Owner.Name, b.Name))
				}
			}
		}
		var missing []string
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning && !held[string(p.UID)] {
				missing = append(missing, p.Namespace+"/"+p.Name)
			}
		}
		if len(stray) == 0 && len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("IPBlocks hold %d allocations of pods that do not exist:\n  %s\nand none of running pods %v",
				len(stray), strings.Join(stray, "\n  "), missing)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (f *fabricEnv) testNodeRemoval(t *testing.T) {
	gone := f.blocksOf("node3")
	if len(gone) == 0 {
		t.Fatal("node3 owns no block")
	}
	f.deletePod("c")
	if err := f.c.RemoveNode(f.ctx, "node3"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, node := range []string{"node1", "node2"} {
		for _, block := range gone {
			for r := f.routes(node, block); r != ""; r = f.routes(node, block) {
				if time.Now().After(deadline) {
					t.Fatalf("%s still routes node3's block %s: %s", node, block, r)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
		if f.mode != sim.ModeBGP {
			node3UL := "198.19."
			for {
				fdb, _ := f.c.NodeExec(f.ctx, node, "bridge", "fdb", "show", "dev", "loom.vxlan")
				if !strings.Contains(fdb, "dst "+node3UL) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s still has an FDB entry for node3:\n%s", node, fdb)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
	}
	for len(f.blocksOf("node3")) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("node3's IPBlocks %v were not released", f.blocksOf("node3"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	f.ping("a1", f.ip("b"))
	if slices.ContainsFunc(f.c.Nodes(), func(n sim.Node) bool { return n.Name == "node3" }) {
		t.Error("the cluster still lists node3")
	}
}

// testControllerReleasesLeak plants an allocation for a pod that does not exist in one of
// node1's blocks, as a DEL that never came leaves it, and waits for loom-controller to
// release it.
func (f *fabricEnv) testControllerReleasesLeak(t *testing.T) {
	dyn, err := dynamic.NewForConfig(f.c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	var name, ghost string
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var target *ipam.IPBlock
		for _, b := range f.ipBlocks() {
			if b.Spec.Node == "node1" {
				target = &b
				break
			}
		}
		if target == nil {
			return fmt.Errorf("node1 owns no block")
		}
		prefix := netip.MustParsePrefix(target.Spec.CIDR)
		used := map[string]bool{}
		for _, a := range target.Spec.Allocations {
			used[a.IP] = true
		}
		ghost = ""
		for a := prefix.Addr().Next(); prefix.Contains(a); a = a.Next() {
			if !used[a.String()] {
				ghost = a.String()
			}
		}
		name = target.Name
		target.Spec.Allocations = append(target.Spec.Allocations, ipam.Allocation{
			IP: ghost,
			Owner: ipam.Owner{Kind: ipam.OwnerPod, Namespace: f.ns, Name: "ghost", UID: "00000000-0000-4000-8000-00000000dead",
				ContainerID: "ghost", Ifname: "eth0"},
			Since: metav1.NewTime(time.Now().Add(-time.Hour)),
		})
		u, convErr := target.ToUnstructured()
		if convErr != nil {
			return convErr
		}
		_, updErr := dyn.Resource(ipam.GVR).Update(f.ctx, u, metav1.UpdateOptions{})
		return updErr
	})
	if err != nil {
		t.Fatalf("plant a leaked allocation: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		held := false
		for _, b := range f.ipBlocks() {
			for _, a := range b.Spec.Allocations {
				held = held || b.Name == name && a.IP == ghost
			}
		}
		if !held {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the leaked allocation of %s in %s is still there", ghost, name)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// testVXLANInjection has pod a1 send its node's VTEP a hand-built VXLAN packet (RFC 7348)
// whose inner frame goes from pod b, on node2, to pod a2, on node1 — from an ordinary UDP
// socket, no capability needed — and checks with a packet capture in a2 that it does not
// arrive, while the same packet sent by node2 does (so it is well-formed, and the guard tells
// the senders apart).
func (f *fabricEnv) testVXLANInjection(t *testing.T) {
	node1, err := f.c.Node("node1")
	if err != nil {
		t.Fatal(err)
	}
	macOf := func(node string) net.HardwareAddr {
		n, err := f.c.Client().CoreV1().Nodes().Get(f.ctx, node, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		mac, err := net.ParseMAC(n.Annotations[fabric.AnnotationVTEPMAC])
		if err != nil {
			t.Fatalf("node %s's VTEP MAC: %v", node, err)
		}
		return mac
	}
	src, dst := netip.MustParseAddr(f.ip("b")), netip.MustParseAddr(f.ip("a2"))
	packet := func(msg string) []byte {
		return vxlanPacket(macOf("node2"), macOf("node1"), src, dst, 7000, []byte(msg))
	}
	to := fmt.Sprintf("/dev/udp/%s/4789", node1.UnderlayIP)
	for _, c := range []struct {
		from   string
		send   func(ctx context.Context) (*exec.Cmd, error)
		arrive bool
	}{
		// bash opens /dev/udp/HOST/PORT as a connected UDP socket; cat writes the packet in one
		// write, one datagram.
		{"pod a1", func(ctx context.Context) (*exec.Cmd, error) {
			return f.c.PodCmd(ctx, f.ns, "a1", "bash", "-c", "cat >"+to)
		}, false},
		{"node2", func(ctx context.Context) (*exec.Cmd, error) {
			return f.c.NodeCmd(ctx, "node2", "bash", "-c", "cat >"+to)
		}, true},
	} {
		msg := "vxlan from " + c.from
		arrived := f.captureIn("a2", "udp port 7000", func(ctx context.Context) {
			cmd, err := c.send(ctx)
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stdin = bytes.NewReader(packet(msg))
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("send %s: %v: %s", msg, err, out)
			}
		})
		if arrived != c.arrive {
			t.Errorf("%s to node1's VTEP, inner %s → %s: arrived %v, want %v", c.from, src, dst, arrived, c.arrive)
		}
	}
}

// captureIn starts a capture of one packet matching filter on pod's eth0, runs send once the
// capture listens, and reports whether a packet to pod's port 7000 was captured within three
// seconds.
func (f *fabricEnv) captureIn(pod, filter string, send func(ctx context.Context)) bool {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(f.ctx, 10*time.Second)
	defer cancel()
	capture, err := f.c.PodCmd(ctx, f.ns, pod, "timeout", "3", "tcpdump", "-n", "-l", "-i", "eth0", "-c", "1", filter)
	if err != nil {
		f.t.Fatal(err)
	}
	var out bytes.Buffer
	capture.Stdout = &out
	stderr, err := capture.StderrPipe()
	if err != nil {
		f.t.Fatal(err)
	}
	if err = capture.Start(); err != nil {
		f.t.Fatal(err)
	}
	// tcpdump says "listening on" once its packet socket is open.
	listening, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		said := false
		for sc.Scan() {
			if !said && strings.Contains(sc.Text(), "listening on") {
				said = true
				close(listening)
			}
		}
		if !said {
			close(listening)
		}
	}()
	<-listening
	send(ctx)
	<-done
	err = capture.Wait()
	return err == nil && strings.Contains(out.String(), " > "+f.ip(pod)+".7000")
}

// vxlanPacket is the UDP payload of a VXLAN packet of VNI 1 (RFC 7348, section 5) carrying
// an Ethernet frame from srcMAC to dstMAC with an IPv4 UDP datagram from src to dst:port.
func vxlanPacket(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, port int, payload []byte) []byte {
	udp := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], uint16(port))
	binary.BigEndian.PutUint16(udp[2:], uint16(port))
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], payload) // checksum 0: none, which IPv4 allows
	ip := make([]byte, 20)
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
	copy(ip[12:], src.AsSlice())
	copy(ip[16:], dst.AsSlice())
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(ip[i])<<8 | uint32(ip[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	frame := append(append(append([]byte{}, dstMAC...), srcMAC...), 0x08, 0x00)
	vxlan := []byte{0x08, 0, 0, 0, 0, 0, 1, 0}
	return append(append(append(vxlan, frame...), ip...), udp...)
}
