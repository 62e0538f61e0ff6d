package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/loom-cni/loom/e2e/sim"
	"github.com/loom-cni/loom/e2e/sim/simtest"
	"github.com/loom-cni/loom/tenants"
)

// The asked-for addresses suite: two tenants, each with its own "lan" NAD, both macvlan on
// the node's eth0 (one link layer, as in the demo). A pod of one tenant asking, in its
// networks annotation, for an address or MAC that a pod of the other tenant has on the other
// NAD must be refused, and leave nothing behind.

const (
	nsAcme, nsGlobex = "addr-acme", "addr-globex"
	// holderIPv4 and the others are what the globex pod asks for and gets.
	holderIPv4 = "192.168.90.7"
	holderIPv6 = "fd00:90::7"
	holderMAC  = "02:90:00:00:00:07"
)

func TestAskedAddresses(t *testing.T) {
	c := simtest.Start(t, func(o *sim.Options) { o.Nodes = 2 })
	ctx := context.Background()
	dyn, err := dynamic.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	acme, globex := newEnv(t, c, nsAcme), newEnv(t, c, nsGlobex)
	for ns, tenant := range map[string]string{nsAcme: "addr-acme", nsGlobex: "addr-globex"} {
		patch := `{"metadata":{"labels":{"loom-e2e/addr-tenant":"` + tenant + `"}}}`
		if _, err = c.Client().CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		// Both tenants may put macvlan networks on eth0.
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "loom.dev/v1alpha1", "kind": "Tenant", "metadata": map[string]any{"name": tenant},
			"spec": map[string]any{
				"namespaceSelector": map[string]any{"matchLabels": map[string]any{"loom-e2e/addr-tenant": tenant}},
				"nodeResources":     map[string]any{"masters": []any{"eth0"}},
			},
		}}
		if _, err = dyn.Resource(tenants.GVR).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create Tenant %s: %v", tenant, err)
		}
		t.Cleanup(func() { dyn.Resource(tenants.GVR).Delete(context.Background(), tenant, metav1.DeleteOptions{}) })
	}
	acme.nad("lan", macvlanStatic)
	globex.nad("lan", macvlanStatic)

	globex.pod(podSpec{name: "holder", node: "node1",
		networks: `[{"name":"lan","ips":["` + holderIPv4 + `/24","` + holderIPv6 + `/64"],"mac":"` + holderMAC + `"}]`})
	globex.running("holder")
	before := ledgerEntries(t, c, "node1")

	for _, tc := range []struct{ name, ask, taken string }{
		{"ipv4", `"ips":["` + holderIPv4 + `/24"]`, holderIPv4},
		{"ipv6", `"ips":["` + holderIPv6 + `/64"]`, holderIPv6},
		{"mac", `"ips":["192.168.90.8/24"],"mac":"` + holderMAC + `"`, holderMAC},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "taker-" + tc.name
			acme.pod(podSpec{name: name, node: "node1", networks: `[{"name":"lan",` + tc.ask + `}]`})
			p := acme.failed(name)
			t.Logf("refused: %s", p.Status.Message)
			for _, want := range []string{nsAcme + "/" + name, nsAcme + "/lan", tc.taken, nsGlobex + "/holder", nsGlobex + "/lan"} {
				if !strings.Contains(p.Status.Message, want) {
					t.Errorf("failure message %q does not mention %s", p.Status.Message, want)
				}
			}
			// Nothing of the refused pod was recorded; the holder's record is all there is.
			if after := ledgerEntries(t, c, "node1"); strings.Join(after, ",") != strings.Join(before, ",") {
				t.Errorf("node1's ledger holds %v after the refusal, want only %v", after, before)
			}
			acme.deletePod(name)
		})
	}

	// The holder kept what it has, on its interface.
	out := globex.exec("holder", "ip", "addr", "show", "net1")
	for _, want := range []string{holderIPv4 + "/24", holderIPv6 + "/64", holderMAC} {
		if !strings.Contains(out, want) {
			t.Errorf("holder's net1 lost %s:\n%s", want, out)
		}
	}
	// Another address and MAC on the same segment are given.
	acme.pod(podSpec{name: "neighbour", node: "node1",
		networks: `[{"name":"lan","ips":["192.168.90.9/24","fd00:90::9/64"],"mac":"02:90:00:00:00:09"}]`})
	acme.running("neighbour")
	acme.deletePod("neighbour")
	globex.deletePod("holder")
	// The refused pods left no link, address, record or cache entry on any node.
	waitClean(t, c)

	t.Run("loom-ipam", func(t *testing.T) { testAskedPoolAddress(t, c, acme, globex) })
}

// testAskedPoolAddress checks loom-ipam: both tenants' NADs draw from one pool (one range);
// a pod gets exactly the address it asks for, and a pod of the other tenant on another node
// asking for it is refused by the allocator, naming the holder and its node, with nothing
// allocated to it.
func testAskedPoolAddress(t *testing.T, c *sim.Cluster, acme, globex *env) {
	const pooled = `{"cniVersion":"1.0.0","type":"macvlan","master":"eth0","mode":"bridge","capabilities":{"ips":true},
	  "ipam":{"type":"loom-ipam","range":"192.168.91.0/24","blockSize":28}}`
	acme.nad("pool", pooled)
	globex.nad("pool", pooled)
	const asked = "192.168.91.5"
	globex.pod(podSpec{name: "pool-holder", node: "node1", networks: `[{"name":"pool","ips":["` + asked + `/24"]}]`})
	globex.running("pool-holder")
	if got := globex.podAddrs("pool-holder")["net1"]; len(got) != 1 || got[0] != asked {
		t.Fatalf("pool-holder's net1 has %v, want the %s it asked for", got, asked)
	}

	acme.pod(podSpec{name: "pool-taker", node: "node2", networks: `[{"name":"pool","ips":["` + asked + `/24"]}]`})
	p := acme.failed("pool-taker")
	t.Logf("refused: %s", p.Status.Message)
	for _, want := range []string{nsAcme + "/pool-taker", asked, nsGlobex + "/pool-holder", "node1"} {
		if !strings.Contains(p.Status.Message, want) {
			t.Errorf("failure message %q does not mention %s", p.Status.Message, want)
		}
	}
	for _, b := range listIPBlocks(t, c) {
		for _, a := range b.Spec.Allocations {
			if a.Owner.Name == "pool-taker" {
				t.Errorf("block %s allocates %s to the refused pod", b.Name, a.IP)
			}
		}
	}
	acme.deletePod("pool-taker")
	globex.deletePod("pool-holder")
	waitClean(t, c)
}

// ledgerEntries lists the record files of a node's ledger.
func ledgerEntries(t *testing.T, c *sim.Cluster, node string) []string {
	t.Helper()
	n, err := c.Node(node)
	if err != nil {
		t.Fatal(err)
	}
	des, err := os.ReadDir(filepath.Join(n.LoomStateDir(), "ledger"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		if strings.HasSuffix(de.Name(), ".json") {
			out = append(out, de.Name())
		}
	}
	return out
}
