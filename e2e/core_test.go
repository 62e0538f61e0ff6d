package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/version"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/loom-cni/loom/e2e/sim"
	"github.com/loom-cni/loom/e2e/sim/simtest"
)

func TestMain(m *testing.M) { os.Exit(simtest.Main(m)) }

// macvlanStatic is a macvlan on the node's underlay whose addresses the pod asks for.
const macvlanStatic = `{"cniVersion":"1.0.0","type":"macvlan","master":"eth0","mode":"bridge",
  "ipam":{"type":"static"},"capabilities":{"ips":true,"mac":true}}`

func bridgeHostLocal(bridge, subnet string) string {
	return fmt.Sprintf(`{"cniVersion":"1.1.0","type":"bridge","bridge":%q,
	  "ipam":{"type":"host-local","ranges":[[{"subnet":%q}]]}}`, bridge, subnet)
}

func macvlanHostLocal(master, subnet string) string {
	return fmt.Sprintf(`{"cniVersion":"1.1.0","type":"macvlan","master":%q,"mode":"bridge",
	  "ipam":{"type":"host-local","ranges":[[{"subnet":%q}]]}}`, master, subnet)
}

// TestCore runs the core suite on one two-node cluster. Subtests run in order and each
// cleans up after itself; the disruptive ones (loomd and API server outages) come last.
func TestCore(t *testing.T) {
	c := simtest.Start(t, func(o *sim.Options) {
		o.LoomdConfig = map[string]any{"namespaceIsolation": true, "globalNamespaces": []string{"e2e-global"}}
	})
	for _, tc := range []struct {
		name string
		f    func(*testing.T, *sim.Cluster)
	}{
		{"DefaultPlusThreeSecondaries", testDefaultPlusThreeSecondaries},
		{"FailureAtThirdSecondaryLeavesNothing", testFailureLeavesNothing},
		{"BadInputIsRejectedClearly", testBadInput},
		{"SameNetworkTwiceAndDefaultOverride", testSameNetworkTwiceAndOverride},
		{"CNIVersionsAndIdempotentDel", testCNIVersions},
		{"GCReleasesWhatTheRuntimeNoLongerLists", testGC},
		{"LostLedgerRecord", testLostLedgerRecord},
		{"Churn200Pods", testChurn},
		{"LoomdKilledBetweenAddAndDel", testLoomdKilled},
		{"LoomdDownDelFromLedger", testLoomdDown},
		{"CnitoolAndAPIServerDown", testCnitoolAPIServerDown},
	} {
		if !t.Run(tc.name, func(t *testing.T) { tc.f(t, c) }) {
			t.Logf("%s failed; the cluster's state may affect the subtests after it", tc.name)
		}
	}
}

func testDefaultPlusThreeSecondaries(t *testing.T, c *sim.Cluster) {
	e := newEnv(t, c, "e2e-multi")
	e.nad("mv-a", macvlanStatic)
	e.nad("br-b", bridgeHostLocal("br-e2eb", "172.31.1.0/24"))
	e.nad("mv-c", macvlanHostLocal("eth0", "172.31.2.0/24"))
	e.pod(podSpec{name: "p1", node: "node1", networks: `[
	  {"name": "mv-a", "interface": "data0", "ips": ["192.168.77.11/24"], "mac": "02:00:00:77:00:11"},
	  {"name": "br-b"},
	  {"name": "mv-c", "namespace": "e2e-multi", "interface": "net9"}]`})
	e.pod(podSpec{name: "p2", node: "node2", networks: `[{"name": "mv-a", "ips": ["192.168.77.12/24"]}]`})
	p1 := e.running("p1")
	e.running("p2")

	st := e.status("p1")
	if len(st) != 4 {
		t.Fatalf("network-status has %d entries, want 4: %+v", len(st), st)
	}
	defaults := 0
	for _, s := range st {
		if s.Default {
			defaults++
		}
	}
	if defaults != 1 || !st[0].Default || st[0].Interface != "eth0" || len(st[0].DefaultRoute) != 1 {
		t.Errorf("default entry wrong (want exactly one, eth0, with its default-route): %+v", st)
	}
	want := []struct{ name, ifname, ip, mac string }{
		{"e2e-multi/mv-a", "data0", "192.168.77.11", "02:00:00:77:00:11"},
		{"e2e-multi/br-b", "net2", "172.31.1.", ""},
		{"e2e-multi/mv-c", "net9", "172.31.2.", ""},
	}
	for i, w := range want {
		s := st[i+1]
		if s.Name != w.name || s.Interface != w.ifname || len(s.IPs) != 1 || !strings.HasPrefix(s.IPs[0], w.ip) || (w.mac != "" && s.Mac != w.mac) {
			t.Errorf("status entry %d = %+v, want %+v", i+1, s, w)
		}
	}
	if p1.Status.PodIP != st[0].IPs[0] {
		t.Errorf("pod IP %s is not the default network's %v", p1.Status.PodIP, st[0].IPs)
	}

	addrs := e.podAddrs("p1")
	for _, s := range st {
		if !slices.Contains(addrs[s.Interface], s.IPs[0]) {
			t.Errorf("interface %s in the pod has %v, network-status says %v", s.Interface, addrs[s.Interface], s.IPs)
		}
	}
	rec := e.ledgerRecord("p1")
	if len(rec.Attachments) != 4 || rec.Pod.Name != "p1" || rec.Pod.UID != "" && string(rec.Pod.UID) != string(p1.UID) {
		t.Errorf("ledger record = %+v", rec)
	}
	for _, a := range rec.Attachments {
		if a.State != "added" {
			t.Errorf("ledger attachment %s/%s in state %s", a.Network, a.Ifname, a.State)
		}
	}

	e.ping("p1", "192.168.77.12")          // macvlan, across nodes
	e.ping("p1", e.status("p2")[0].IPs[0]) // default network, across nodes

	// CHECK covers every attachment: break the third secondary behind loom's back.
	sb, _, err := c.PodSandbox(e.ns, "p1")
	if err != nil {
		t.Fatal(err)
	}
	check := loomCall{command: "CHECK", containerID: sb.ContainerID, netns: sb.NetNS, args: podArgs(p1, sb.ContainerID), cniVersion: "1.1.0"}
	if out, checkErr := e.invokeLoom("node1", check); checkErr != nil {
		t.Fatalf("CHECK of a healthy pod: %v: %s", checkErr, out)
	}
	e.exec("p1", "ip", "link", "del", "net9")
	out, err := e.invokeLoom("node1", check)
	if err == nil || !strings.Contains(out, "net9") || !strings.Contains(out, "e2e-multi/mv-c") {
		t.Errorf("CHECK after net9 vanished: err=%v out=%s, want an error naming net9 and its network", err, out)
	}

	e.deletePod("p1")
	e.deletePod("p2")
	waitClean(t, c)
}

func testFailureLeavesNothing(t *testing.T, c *sim.Cluster) {
	e := newEnv(t, c, "e2e-fail")
	e.nad("ok1", bridgeHostLocal("br-e2ef", "172.31.3.0/24"))
	e.nad("ok2", macvlanHostLocal("eth0", "172.31.4.0/24"))
	e.nad("bad", macvlanHostLocal("nope0", "172.31.5.0/24"))
	e.pod(podSpec{name: "doomed", node: "node1", networks: "ok1, ok2, bad"})
	p := e.failed("doomed")
	for _, want := range []string{"e2e-fail/doomed", `"e2e-fail/bad"`, "net3", "Link not found"} {
		if !strings.Contains(p.Status.Message, want) {
			t.Errorf("failure message %q does not mention %s", p.Status.Message, want)
		}
	}
	// Nothing of the default network, ok1 or ok2 is left: links, addresses, records.
	waitClean(t, c)
	e.deletePod("doomed")
}

func testBadInput(t *testing.T, c *sim.Cluster) {
	e := newEnv(t, c, "e2e-bad")
	other := newEnv(t, c, "e2e-other")
	global := newEnv(t, c, "e2e-global")
	e.nad("good", bridgeHostLocal("br-e2eg", "172.31.6.0/24"))
	other.nad("theirs", bridgeHostLocal("br-e2eo", "172.31.7.0/24"))
	global.nad("shared", bridgeHostLocal("br-e2es", "172.31.8.0/24"))

	for _, tc := range []struct {
		name, networks string
		want           []string
	}{
		{"unknown", "nosuch", []string{`"e2e-bad/nosuch"`, "does not exist", "create"}},
		{"malformed", `[{"name": "good"`, []string{"k8s.v1.cni.cncf.io/networks"}},
		{"bad-ip", `[{"name":"good","ips":["10.0.0.300/24"]}]`, []string{"good", "10.0.0.300"}},
		{"bad-mac", `[{"name":"good","mac":"01:00:5e:00:00:01"}]`, []string{"good", "01:00:5e:00:00:01"}},
		{"bad-ifname", "good@this-name-is-too-long", []string{"good", "this-name-is-too-long"}},
		{"dup-ifname", "good@net5, good@net5", []string{"net5"}},
		{"ifname-of-default", "good@eth0", []string{"eth0"}},
		{"other-namespace", "e2e-other/theirs", []string{`"e2e-other/theirs"`, "namespace isolation", "globalNamespaces"}},
		{"ips-without-capability", `[{"name":"good","ips":["172.31.6.9/24"]}]`, []string{"good", "capabilit"}},
		{"claim-with-ips", `[{"name":"good","ips":["172.31.6.9/24"],"ipam-claim-reference":"c"}]`, []string{"good", "ipam-claim-reference"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "bad-" + tc.name
			e.pod(podSpec{name: name, node: "node1", networks: tc.networks})
			p := e.failed(name)
			for _, w := range append(tc.want, "e2e-bad/"+name) {
				if !strings.Contains(p.Status.Message, w) {
					t.Errorf("message %q does not mention %q", p.Status.Message, w)
				}
			}
			e.deletePod(name)
		})
	}
	// A global namespace's network is allowed under isolation.
	e.pod(podSpec{name: "uses-global", node: "node1", networks: "e2e-global/shared"})
	e.running("uses-global")
	e.deletePod("uses-global")
	waitClean(t, c)
}

func testSameNetworkTwiceAndOverride(t *testing.T, c *sim.Cluster) {
	e := newEnv(t, c, "e2e-twice")
	e.nad("br", bridgeHostLocal("br-e2et", "172.31.9.0/24"))
	e.nad("alt-default", bridgeHostLocal("br-e2ed", "172.31.10.0/24"))
	e.pod(podSpec{name: "twice", node: "node2", networks: "br, br",
		annotations: map[string]string{"v1.multus-cni.io/default-network": "e2e-twice/alt-default"}})
	e.running("twice")
	st := e.status("twice")
	if len(st) != 3 || st[0].Name != "e2e-twice/alt-default" || !strings.HasPrefix(st[0].IPs[0], "172.31.10.") {
		t.Fatalf("status = %+v, want the overridden default network first", st)
	}
	if st[1].Interface != "net1" || st[2].Interface != "net2" || st[1].IPs[0] == st[2].IPs[0] {
		t.Errorf("same network twice should give two attachments with their own addresses: %+v", st[1:])
	}
	e.deletePod("twice")
	waitClean(t, c)
}

// testCNIVersions calls loom as runtimes of every CNI version would, and DEL twice.
func testCNIVersions(t *testing.T, c *sim.Cluster) {
	e := newEnv(t, c, "e2e-versions")
	if out, err := e.invokeLoom("node1", loomCall{command: "STATUS", cniVersion: "1.1.0"}); err != nil {
		t.Errorf("STATUS of a ready node: %v: %s", err, out)
	}
	e.nad("br", bridgeHostLocal("br-e2ev", "172.31.11.0/24"))
	p := e.pod(podSpec{name: "raw", node: "node1", networks: "br", unmanaged: true})
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			id := "versions" + strings.ReplaceAll(v, ".", "")
			netns, remove := e.nodeNetns("node1", "e2e-"+id)
			defer remove()
			call := loomCall{command: "ADD", containerID: id, netns: netns, args: podArgs(p, id), cniVersion: v}
			out, err := e.invokeLoom("node1", call)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			res, err := version.NewResult(v, []byte(out))
			if err != nil {
				t.Fatalf("ADD printed no %s result: %v: %s", v, err, out)
			}
			if res.Version() != v || !strings.Contains(out, `"10.244.`) || !strings.Contains(out, `/32"`) {
				t.Errorf("result %s: version %s, want %s with a primary network address (a /32 of 10.244.0.0/16)", out, res.Version(), v)
			}
			call.command = "DEL"
			for i := 0; i < 2; i++ {
				if out, err := e.invokeLoom("node1", call); err != nil {
					t.Fatalf("DEL %d: %v: %s", i+1, err, out)
				}
			}
		})
	}
	waitClean(t, c)
}

func testGC(t *testing.T, c *sim.Cluster) {
	e := newEnv(t, c, "e2e-gc")
	e.nad("br", bridgeHostLocal("br-e2egc", "172.31.12.0/24"))
	e.pod(podSpec{name: "live", node: "node1", networks: "br"})
	e.running("live")
	p := e.pod(podSpec{name: "leaked", node: "node1", networks: "br", unmanaged: true})
	netns, removeNetns := e.nodeNetns("node1", "e2e-leaked")
	if out, err := e.invokeLoom("node1", loomCall{command: "ADD", containerID: "leaked1", netns: netns, args: podArgs(p, "leaked1"), cniVersion: "1.1.0"}); err != nil {
		t.Fatalf("ADD: %v: %s", err, out)
	}
	// The runtime's view: only its own sandboxes are valid.
	sb, _, err := c.PodSandbox(e.ns, "live")
	if err != nil {
		t.Fatal(err)
	}
	valid := []map[string]string{{"containerID": sb.ContainerID, "ifname": "eth0"}}
	gc := loomCall{command: "GC", cniVersion: "1.1.0", conf: map[string]any{"cni.dev/valid-attachments": valid}}
	if out, err := e.invokeLoom("node1", gc); err != nil {
		t.Fatalf("GC: %v: %s", err, out)
	}
	n, _ := c.Node("node1")
	if _, err := os.Stat(n.LoomStateDir() + "/ledger/leaked1.json"); !os.IsNotExist(err) {
		t.Errorf("GC left the unlisted container's ledger record: %v", err)
	}
	e.ledgerRecord("live") // still there
	e.ping("live", e.status("live")[1].IPs[0])
	removeNetns()
	e.deletePod("live")
	e.deletePod("leaked")
	waitClean(t, c)
}

// testLostLedgerRecord: DEL of a pod whose ledger record is gone still releases every
// attachment, resolved again from the pod in loomd's cache.
func testLostLedgerRecord(t *testing.T, c *sim.Cluster) {
	e := newEnv(t, c, "e2e-lost")
	e.runningOnBridgeAndMacvlan("amnesia", "node2", "br-e2el", 13)
	sb, node, err := c.PodSandbox(e.ns, "amnesia")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(node.LoomStateDir(), "ledger", sb.ContainerID+".json")); err != nil {
		t.Fatal(err)
	}
	e.deletePod("amnesia")
	waitClean(t, c)
}

func testChurn(t *testing.T, c *sim.Cluster) {
	e := newEnv(t, c, "e2e-churn")
	e.nad("br", bridgeHostLocal("br-e2ec", "172.31.16.0/22"))
	const n = 200
	start := time.Now()
	for i := 0; i < n; i++ {
		e.pod(podSpec{name: fmt.Sprintf("churn-%03d", i), networks: "br"})
	}
	for i := 0; i < n; i++ {
		e.running(fmt.Sprintf("churn-%03d", i))
	}
	t.Logf("%d pods running in %s", n, time.Since(start).Round(time.Millisecond))
	start = time.Now()
	if err := c.Client().CoreV1().Pods(e.ns).DeleteCollection(e.ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if err := c.WaitPodGone(e.ctx, e.ns, fmt.Sprintf("churn-%03d", i)); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d pods deleted in %s", n, time.Since(start).Round(time.Millisecond))
	waitClean(t, c)
}

func testLoomdKilled(t *testing.T, c *sim.Cluster) {
	e := newEnv(t, c, "e2e-killed")
	e.runningOnBridgeAndMacvlan("survivor", "node1", "br-e2ek", 20)
	want := e.status("survivor")
	// Someone tampers with the annotation; loomd, once restarted, writes it again from the
	// ledger.
	patch := []byte(`{"metadata":{"annotations":{"k8s.v1.cni.cncf.io/network-status":"[]"}}}`)
	if _, err := c.Client().CoreV1().Pods(e.ns).Patch(e.ctx, "survivor", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	st, err := c.NodeStatus("node1")
	if err != nil || st.Loomd.PID == 0 {
		t.Fatalf("loomd of node1: %+v %v", st, err)
	}
	if err := syscall.Kill(st.Loomd.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := waitLoomdRestarted(c, "node1", st.Loomd.PID); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for got := e.status("survivor"); !reflect.DeepEqual(got, want); got = e.status("survivor") {
		if time.Now().After(deadline) {
			t.Fatalf("network-status after restart = %+v, want it restored to %+v", got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.deletePod("survivor")
	waitClean(t, c)
}

func waitLoomdRestarted(c *sim.Cluster, node string, oldPID int) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		st, err := c.NodeStatus(node)
		if err == nil && st.Loomd.PID != 0 && st.Loomd.PID != oldPID && st.Loomd.State == "ready" {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("loomd on %s did not come back", node)
}

func testLoomdDown(t *testing.T, c *sim.Cluster) {
	e := newEnv(t, c, "e2e-down")
	e.runningOnBridgeAndMacvlan("orphan", "node2", "br-e2edn", 22)
	if err := c.StopLoomd("node2"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.StartLoomd(context.Background(), "node2"); err != nil {
			t.Errorf("start loomd again: %v", err)
		}
	})
	status := loomCall{command: "STATUS", cniVersion: "1.1.0"}
	if out, err := e.invokeLoom("node2", status); err == nil || !strings.Contains(out, `"code": 50`) {
		t.Errorf("STATUS with loomd down: err=%v out=%s, want CNI error 50 (plugin not available)", err, out)
	}
	// With loomd down the runtime's DEL reaches only the loom binary, which releases
	// everything from the ledger itself.
	e.deletePod("orphan")
	waitClean(t, c)
}

func testCnitoolAPIServerDown(t *testing.T, c *sim.Cluster) {
	e := newEnv(t, c, "e2e-cnitool")
	e.nad("br", bridgeHostLocal("br-e2ect", "172.31.24.0/24"))
	p := e.pod(podSpec{name: "tool", node: "node1", networks: "br", unmanaged: true})
	netns, removeNetns := e.nodeNetns("node1", "e2e-cnitool")
	cnitool := os.Getenv("LOOM_CNITOOL")
	if cnitool == "" {
		t.Skip("LOOM_CNITOOL is not set: run through make test")
	}
	run := func(args ...string) string {
		t.Helper()
		argv := append([]string{"env", "CNI_PATH=/opt/cni/bin", "NETCONFPATH=/etc/cni/net.d",
			fmt.Sprintf("CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;K8S_POD_UID=%s", p.Namespace, p.Name, p.UID),
			cnitool}, args...)
		out, err := c.NodeExec(e.ctx, "node1", argv...)
		if err != nil {
			t.Fatalf("cnitool %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return out
	}
	out := run("add", "loom", netns)
	var res struct {
		IPs []struct{ Address string } `json:"ips"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.IPs) == 0 {
		t.Fatalf("cnitool add printed %q (%v), want a result with addresses", out, err)
	}
	run("check", "loom", netns)
	if st := e.status("tool"); len(st) != 2 {
		t.Errorf("network-status after cnitool add = %+v", st)
	}
	if err := c.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.StartAPIServer(context.Background()); err != nil {
			t.Errorf("start the API server again: %v", err)
		}
	})
	start := time.Now()
	run("del", "loom", netns)
	t.Logf("DEL with the API server down took %s", time.Since(start).Round(time.Millisecond))
	run("del", "loom", netns)
	removeNetns()
	if left, err := leftovers(c); err != nil || len(left) > 0 {
		// cnitool keeps its own libcni cache under /var/lib/cni; it removed it on DEL.
		t.Errorf("after DEL with the API server down: %v %v", left, err)
	}
}
