package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/loom-cni/loom/e2e/sim"
	"github.com/loom-cni/loom/e2e/sim/simtest"
	"github.com/loom-cni/loom/fabric/ipam"
	"github.com/loom-cni/loom/policy"
	"github.com/loom-cni/loom/tenants"
)

// The tenancy suite: two tenants and the platform, every pod on the primary network and on a
// macvlan network the tenants share. What each pod can reach must be exactly what the
// tenants and policies say, tried with real packets.

const (
	nsA, nsB, nsPlat = "ten-a", "ten-b", "ten-plat"
	sharedNet        = nsPlat + "/shared"
	tenantAPool      = "10.244.240.0/20"
)

type tpod struct {
	ns, name, tenant, node string
	addr                   map[string]string // network ("primary", "shared") → address
}

type tenancyEnv struct {
	t    *testing.T
	c    *sim.Cluster
	ctx  context.Context
	dyn  dynamic.Interface
	envs map[string]*env
	pods []*tpod
}

func TestTenancy(t *testing.T) {
	c := simtest.Start(t, func(o *sim.Options) {
		// node1 and node2 share underlay subnet A, which the macvlan network spans.
		o.Nodes = 3
		// A test waits seconds, not the half minute a node waits, for hand-deleted rules to return.
		o.LoomdConfig = map[string]any{"policy": map[string]any{"verifyInterval": "2s"}}
	})
	dyn, err := dynamic.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	te := &tenancyEnv{t: t, c: c, ctx: context.Background(), dyn: dyn, envs: map[string]*env{}}
	te.setUp()
	steps := []struct {
		name string
		f    func(*testing.T)
	}{
		{"TenantPoolAddresses", te.testTenantPool},
		{"DefaultMatrix", func(t *testing.T) { te.checkMatrix(t, te.tenantsOnly) }},
		{"LoomctlConnectivityAgrees", te.testLoomctlConnectivity},
		{"LoomctlTenantsTable", te.testLoomctlTenants},
		{"NetworkPolicyOnPrimary", te.testNetworkPolicy},
		{"MultiNetworkPolicyOnShared", te.testMultiNetworkPolicy},
		{"InvalidPolicyNarrowsAndIsReported", te.testInvalidPolicy},
		{"PeersBothWays", te.testPeers},
		{"ADDRejectsWhatAdmissionMissed", te.testADDDenial},
		{"RulesRepairedAndKeptAcrossRestart", te.testRepairAndRestart},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.f) {
			t.Logf("%s failed; the cluster's state may affect the steps after it", s.name)
		}
	}
}

func (te *tenancyEnv) setUp() {
	t := te.t
	for _, ns := range []string{nsA, nsB, nsPlat} {
		te.envs[ns] = newEnv(t, te.c, ns)
	}
	for ns, tenant := range map[string]string{nsA: "a", nsB: "b"} {
		patch := fmt.Sprintf(`{"metadata":{"labels":{"loom-e2e/tenant":%q}}}`, tenant)
		if _, err := te.c.Client().CoreV1().Namespaces().Patch(te.ctx, ns, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	te.tenant("a", tenantASpec())
	te.tenant("b", nil)
	te.envs[nsPlat].nad("shared", `{"cniVersion":"1.0.0","type":"macvlan","master":"eth0","mode":"bridge",
	  "ipam":{"type":"loom-ipam","range":"192.168.70.0/24","blockSize":28}}`)
	te.pods = []*tpod{
		{ns: nsA, name: "a1", tenant: "a", node: "node1"},
		{ns: nsA, name: "a2", tenant: "a", node: "node2"},
		{ns: nsB, name: "b1", tenant: "b", node: "node1"},
		{ns: nsB, name: "b2", tenant: "b", node: "node2"},
		{ns: nsPlat, name: "p1", node: "node2"},
	}
	for _, p := range te.pods {
		te.envs[p.ns].pod(podSpec{name: p.name, node: p.node, networks: sharedNet, labels: map[string]string{"app": p.name}})
	}
	for _, p := range te.pods {
		e := te.envs[p.ns]
		e.running(p.name)
		p.addr = map[string]string{}
		for _, st := range e.status(p.name) {
			if len(st.IPs) == 0 {
				continue
			}
			if st.Default {
				p.addr["primary"] = st.IPs[0]
			} else if st.Name == sharedNet {
				p.addr["shared"] = st.IPs[0]
			}
		}
		if p.addr["primary"] == "" || p.addr["shared"] == "" {
			t.Fatalf("pod %s/%s: addresses %v, want one on the primary network and one on %s", p.ns, p.name, p.addr, sharedNet)
		}
	}
	t.Cleanup(func() {
		for _, name := range []string{"a", "b"} {
			te.dyn.Resource(tenants.GVR).Delete(context.Background(), name, metav1.DeleteOptions{})
		}
	})
}

// tenantASpec is tenant a's spec beyond its namespaces: its own address pool, and the nodes'
// eth0 as a master for networks of its own (testADDDenial's "private").
func tenantASpec() map[string]any {
	return map[string]any{
		"addressPools":  []any{map[string]any{"name": "main", "cidr": tenantAPool, "blockSize": 28}},
		"nodeResources": map[string]any{"masters": []any{"eth0"}},
	}
}

// tenant creates (or replaces the spec of) a Tenant selecting the namespaces labelled with
// its name, sharing the platform's macvlan network.
func (te *tenancyEnv) tenant(name string, extra map[string]any) {
	te.t.Helper()
	spec := map[string]any{
		"namespaceSelector": map[string]any{"matchLabels": map[string]any{"loom-e2e/tenant": name}},
		"sharedNetworks":    []any{sharedNet},
	}
	for k, v := range extra {
		spec[k] = v
	}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "loom.dev/v1alpha1", "kind": "Tenant",
		"metadata": map[string]any{"name": name}, "spec": spec,
	}}
	res := te.dyn.Resource(tenants.GVR)
	cur, err := res.Get(te.ctx, name, metav1.GetOptions{})
	if err == nil {
		obj.SetResourceVersion(cur.GetResourceVersion())
		_, err = res.Update(te.ctx, obj, metav1.UpdateOptions{})
	} else {
		_, err = res.Create(te.ctx, obj, metav1.CreateOptions{})
	}
	if err != nil {
		te.t.Fatalf("write Tenant %s: %v", name, err)
	}
}

// tenantsOnly is the default rule: same tenant, or the platform on the primary network.
func (te *tenancyEnv) tenantsOnly(from, to *tpod, network string) bool {
	if from.tenant == to.tenant {
		return true
	}
	return network == "primary" && (from.tenant == "" || to.tenant == "")
}

// checkMatrix pings every pod from every other pod on both networks and compares with want.
// Rules reach remote nodes within moments, so a mismatch is tried again for a while before
// it counts.
func (te *tenancyEnv) checkMatrix(t *testing.T, want func(from, to *tpod, network string) bool) {
	t.Helper()
	type probe struct {
		from, to *tpod
		network  string
	}
	var probes []probe
	for _, from := range te.pods {
		for _, to := range te.pods {
			if from == to {
				continue
			}
			for _, n := range []string{"primary", "shared"} {
				probes = append(probes, probe{from, to, n})
			}
		}
	}
	got := map[probe]bool{}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, p := range probes {
			if v, ok := got[p]; ok && v == want(p.from, p.to, p.network) {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := te.c.PodExec(te.ctx, p.from.ns, p.from.name, "ping", "-n", "-c", "1", "-W", "1", p.to.addr[p.network])
				mu.Lock()
				got[p] = err == nil
				mu.Unlock()
			}()
		}
		wg.Wait()
		var wrong []string
		for _, p := range probes {
			if got[p] != want(p.from, p.to, p.network) {
				wrong = append(wrong, fmt.Sprintf("%s → %s on %s: reached=%v, policy says %v", p.from.name, p.to.name, p.network, got[p], want(p.from, p.to, p.network)))
			}
		}
		if len(wrong) == 0 {
			return
		}
		if time.Now().After(deadline) {
			sort.Strings(wrong)
			t.Errorf("connectivity differs from the policy:\n  %s\n%s", strings.Join(wrong, "\n  "), te.matrix(func(from, to *tpod, n string) bool { return got[probe{from, to, n}] }))
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// matrix prints who reaches whom on each network.
func (te *tenancyEnv) matrix(reach func(from, to *tpod, network string) bool) string {
	var b strings.Builder
	for _, n := range []string{"primary", "shared"} {
		fmt.Fprintf(&b, "%s (row reaches column):\n%6s", n, "")
		for _, to := range te.pods {
			fmt.Fprintf(&b, "%4s", to.name)
		}
		b.WriteString("\n")
		for _, from := range te.pods {
			fmt.Fprintf(&b, "%6s", from.name)
			for _, to := range te.pods {
				mark := "-"
				if from == to {
					mark = " "
				} else if reach(from, to, n) {
					mark = "✓"
				}
				fmt.Fprintf(&b, "%4s", mark)
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

func (te *tenancyEnv) pod(name string) *tpod {
	for _, p := range te.pods {
		if p.name == name {
			return p
		}
	}
	te.t.Fatalf("no pod %s", name)
	return nil
}

// testTenantPool: tenant a's pods draw primary addresses from a's pool, in blocks labelled a.
func (te *tenancyEnv) testTenantPool(t *testing.T) {
	pool := netip.MustParsePrefix(tenantAPool)
	for _, name := range []string{"a1", "a2"} {
		if a := netip.MustParseAddr(te.pod(name).addr["primary"]); !pool.Contains(a) {
			t.Errorf("pod %s got %s, want an address of tenant a's pool %s", name, a, pool)
		}
	}
	for _, name := range []string{"b1", "p1"} {
		if a := netip.MustParseAddr(te.pod(name).addr["primary"]); pool.Contains(a) {
			t.Errorf("pod %s of another tenant got %s inside tenant a's pool %s", name, a, pool)
		}
	}
	labelled := 0
	for _, b := range listIPBlocks(t, te.c) {
		inPool := pool.Contains(netip.MustParsePrefix(b.Spec.CIDR).Addr())
		if inPool != (b.Labels[ipam.LabelTenant] == "a") {
			t.Errorf("IPBlock %s (%s) has tenant label %q", b.Name, b.Spec.CIDR, b.Labels[ipam.LabelTenant])
		}
		if inPool {
			labelled++
		}
	}
	if labelled != 2 {
		t.Errorf("%d IPBlocks of tenant a's pool, want one per node (2)", labelled)
	}
}

// testNetworkPolicy: a NetworkPolicy isolating a2's ingress narrows the primary network only,
// and removing it restores the default.
func (te *tenancyEnv) testNetworkPolicy(t *testing.T) {
	nps := te.c.Client().NetworkingV1().NetworkPolicies(nsA)
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "a2-from-a1-tcp-only"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "a2"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "a1"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: ptr(corev1.ProtocolTCP)}},
			}},
		},
	}
	if _, err := nps.Create(te.ctx, np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// ICMP to a2 on the primary network now passes from nobody (the rule allows TCP from a1).
	te.checkMatrix(t, func(from, to *tpod, n string) bool {
		if n == "primary" && to.name == "a2" {
			return false
		}
		return te.tenantsOnly(from, to, n)
	})
	if err := nps.Delete(te.ctx, np.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	te.checkMatrix(t, te.tenantsOnly)
}

// multiPolicy creates a MultiNetworkPolicy for the shared network in tenant a's namespace,
// selecting a1, and returns what deletes it.
func (te *tenancyEnv) multiPolicy(t *testing.T, name string, spec map[string]any) (remove func()) {
	t.Helper()
	res := te.dyn.Resource(policy.MultiNetworkPolicyGVR).Namespace(nsA)
	spec["podSelector"] = map[string]any{"matchLabels": map[string]any{"app": "a1"}}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "k8s.cni.cncf.io/v1beta1", "kind": "MultiNetworkPolicy",
		"metadata": map[string]any{"name": name, "annotations": map[string]any{"k8s.v1.cni.cncf.io/policy-for": sharedNet}},
		"spec":     spec,
	}}
	if _, err := res.Create(te.ctx, obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		if err := res.Delete(te.ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// a1ClosedOnShared is the default rule with a1 unreachable on the shared network.
func (te *tenancyEnv) a1ClosedOnShared(from, to *tpod, n string) bool {
	if n == "shared" && to.name == "a1" {
		return false
	}
	return te.tenantsOnly(from, to, n)
}

// testMultiNetworkPolicy: a MultiNetworkPolicy for the shared network isolates a1's ingress
// there and leaves the primary network alone.
func (te *tenancyEnv) testMultiNetworkPolicy(t *testing.T) {
	remove := te.multiPolicy(t, "a1-shared-closed", map[string]any{"policyTypes": []any{"Ingress"}})
	te.checkMatrix(t, te.a1ClosedOnShared)
	remove()
	te.checkMatrix(t, te.tenantsOnly)
}

// testInvalidPolicy: a MultiNetworkPolicy (which, unlike a NetworkPolicy, the API server does
// not validate) whose only rule names a bad CIDR allows nothing — its pod is isolated, never
// opened — and its owner gets a Warning event saying why.
func (te *tenancyEnv) testInvalidPolicy(t *testing.T) {
	remove := te.multiPolicy(t, "a1-bad-cidr", map[string]any{
		"ingress": []any{map[string]any{"from": []any{map[string]any{"ipBlock": map[string]any{"cidr": "192.168.70.0/33"}}}}},
	})
	te.checkMatrix(t, te.a1ClosedOnShared)
	deadline := time.Now().Add(20 * time.Second)
	for {
		evs, err := te.c.Client().CoreV1().Events(nsA).List(te.ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=a1-bad-cidr"})
		if err == nil && len(evs.Items) > 0 {
			ev := evs.Items[0]
			if ev.Type != corev1.EventTypeWarning || ev.Reason != "InvalidPolicy" || !strings.Contains(ev.Message, "192.168.70.0/33") {
				t.Errorf("event %s %s %q, want a Warning InvalidPolicy naming the CIDR", ev.Type, ev.Reason, ev.Message)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no event on the invalid policy")
		}
		time.Sleep(200 * time.Millisecond)
	}
	remove()
	te.checkMatrix(t, te.tenantsOnly)
}

// testPeers: tenants that name each other as peers reach each other on every network; one
// naming the other is not enough.
func (te *tenancyEnv) testPeers(t *testing.T) {
	pool := tenantASpec()
	withPeer := func(peer string, m map[string]any) map[string]any {
		out := map[string]any{"peers": []any{peer}}
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	te.tenant("a", withPeer("b", pool))
	te.checkMatrix(t, te.tenantsOnly)
	te.tenant("b", withPeer("a", nil))
	te.checkMatrix(t, func(from, to *tpod, n string) bool {
		if from.tenant != "" && to.tenant != "" {
			return true
		}
		return te.tenantsOnly(from, to, n)
	})
	te.tenant("a", pool)
	te.tenant("b", nil)
	te.checkMatrix(t, te.tenantsOnly)
}

// testADDDenial: a platform pod in kube-system (which the webhook leaves alone) asking for a
// tenant's network is refused by the CNI ADD, with a message naming the pod, the network and
// the rule, and leaves nothing behind.
func (te *tenancyEnv) testADDDenial(t *testing.T) {
	te.envs[nsA].nad("private", `{"cniVersion":"1.0.0","type":"macvlan","master":"eth0","mode":"bridge",
	  "ipam":{"type":"host-local","subnet":"192.168.71.0/24"}}`)
	sys := &env{t: t, c: te.c, ns: "kube-system", ctx: te.ctx, nads: te.envs[nsA].nads}
	sys.pod(podSpec{name: "sneaky", node: "node1", networks: nsA + "/private"})
	defer sys.deletePod("sneaky")
	p := sys.failed("sneaky")
	msg := podMessage(p)
	for _, want := range []string{"kube-system/sneaky", nsA + "/private", "tenant"} {
		if !strings.Contains(msg, want) {
			t.Errorf("failure message %q does not mention %q", msg, want)
		}
	}
}

// testRepairAndRestart: rules deleted by hand come back, and a restarted loomd keeps them.
func (te *tenancyEnv) testRepairAndRestart(t *testing.T) {
	if out, err := te.c.NodeExec(te.ctx, "node1", "nft", "delete", "table", "inet", "loom"); err != nil {
		t.Fatalf("delete node1's table: %v: %s", err, out)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := te.c.NodeExec(te.ctx, "node1", "nft", "list", "table", "inet", "loom"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("node1's loomd did not restore its table")
		}
		time.Sleep(200 * time.Millisecond)
	}
	te.checkMatrix(t, te.tenantsOnly)
	if err := te.c.StopLoomd("node1"); err != nil {
		t.Fatal(err)
	}
	// loomd is down: its rules stay in the kernel.
	te.checkMatrix(t, te.tenantsOnly)
	if err := te.c.StartLoomd(te.ctx, "node1"); err != nil {
		t.Fatal(err)
	}
	te.checkMatrix(t, te.tenantsOnly)
}

// testLoomctlConnectivity: `loomctl connectivity` probes the same pairs with ICMP, TCP and
// UDP, expects what the tenants say, finds every probe as expected, and reports the leaks of
// a rule opened by hand.
func (te *tenancyEnv) testLoomctlConnectivity(t *testing.T) {
	run := te.loomctlConnectivity
	// counts reads the closing line, "N probes: M matched, L leaks, D drops".
	counts := func(out string) (probes, matched, leaks, drops int) {
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if _, err := fmt.Sscanf(lines[len(lines)-1], "%d probes: %d matched, %d leaks, %d drops", &probes, &matched, &leaks, &drops); err != nil {
			t.Errorf("closing line of loomctl connectivity: %v:\n%s", err, out)
		}
		return probes, matched, leaks, drops
	}
	byName := map[string]*tpod{}
	for _, p := range te.pods {
		byName[p.ns+"/"+p.name] = p
	}
	networks := map[string]string{"primary": "primary", sharedNet: "shared"}

	out, progress, err := run("-o", "json")
	if err != nil {
		t.Fatalf("loomctl connectivity: %v\n%s%s", err, progress, out)
	}
	if !strings.Contains(progress, "probed") {
		t.Errorf("loomctl connectivity reported no progress:\n%s", progress)
	}
	var results []probeResult
	if jerr := json.Unmarshal([]byte(out), &results); jerr != nil {
		t.Fatalf("loomctl connectivity -o json: %v\n%s", jerr, out)
	}
	// 5 pods, 20 ordered pairs on the primary network and on the shared one, each an
	// IPv4 address on both: ICMP, and TCP and UDP on the one port no policy names.
	if len(results) != 20*2*3 {
		t.Errorf("loomctl connectivity tried %d probes, want %d", len(results), 20*2*3)
	}
	seen := map[string]int{}
	for _, r := range results {
		from, to, n := byName[r.From], byName[r.To], networks[r.Network]
		if from == nil || to == nil || n == "" {
			t.Errorf("probe %s → %s on %s: not a pair of the suite", r.From, r.To, r.Network)
			continue
		}
		seen[r.Protocol]++
		if want := te.tenantsOnly(from, to, n); r.Allowed != want || r.Reached != want {
			t.Errorf("probe %s → %s on %s, %s to %s: expected allowed=%v, reached=%v; the tenants say %v", r.From, r.To, n, r.Protocol, r.Address, r.Allowed, r.Reached, want)
		}
	}
	if seen["ICMP"] != 40 || seen["TCP"] != 40 || seen["UDP"] != 40 {
		t.Errorf("probes by protocol: %v, want 40 each of ICMP, TCP and UDP", seen)
	}

	// Someone opens node1's forwarding to everything by hand: loomctl sees the leaks and fails.
	// The engine repairs its table every 2s, so the hole is opened again while loomctl runs.
	if o, herr := te.c.NodeExec(te.ctx, "node1", "nft", "insert", "rule", "inet", "loom", "forward", "accept"); herr != nil {
		t.Fatalf("insert a rule by hand: %v: %s", herr, o)
	}
	holeCtx, closeHole := context.WithCancel(te.ctx)
	var hole sync.WaitGroup
	hole.Go(func() {
		for {
			select {
			case <-holeCtx.Done():
				return
			case <-time.After(300 * time.Millisecond):
				te.c.NodeExec(holeCtx, "node1", "nft", "insert", "rule", "inet", "loom", "forward", "accept")
			}
		}
	})
	out, progress, err = run()
	closeHole()
	hole.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(out, "LEAK") {
		t.Errorf("loomctl connectivity with a hand-made hole: %v, want exit status 1 and a LEAK:\n%s%s", err, progress, out)
	}
	if _, _, leaks, _ := counts(out); leaks == 0 {
		t.Errorf("loomctl connectivity with a hand-made hole counts no leaks:\n%s", out)
	}
	// The engine repairs the table; loomctl agrees again.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if out, progress, err = run(); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("loomctl connectivity still differs after the repair: %v\n%s%s", err, progress, out)
		}
		time.Sleep(time.Second)
	}
	if probes, matched, _, _ := counts(out); probes != 120 || matched != 120 || !strings.Contains(out, "every one matches the policy") {
		t.Errorf("loomctl connectivity after the repair:\n%s", out)
	}
	t.Logf("loomctl connectivity:\n%s", out)
	t.Run("PortsPoliciesName", te.testLoomctlConnectivityPorts)
}

// probeResult is a probe of `loomctl connectivity -o json`.
type probeResult struct {
	From, To, Network, Protocol, Address string
	Family, Port                         int
	Allowed, Reached                     bool
}

// loomctlConnectivity runs `loomctl connectivity` on the suite's namespaces.
func (te *tenancyEnv) loomctlConnectivity(args ...string) (stdout, stderr string, err error) {
	loomctl := filepath.Join(te.c.Options().BinDir, "loomctl")
	cmd := exec.CommandContext(te.ctx, loomctl, append([]string{"connectivity", "--dir", te.c.Dir(), "-n", nsA + "," + nsB + "," + nsPlat}, args...)...)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// testLoomctlConnectivityPorts: with a NetworkPolicy naming TCP port 80 and a
// MultiNetworkPolicy naming UDP port 53, loomctl connectivity probes those ports too, on
// both protocols, and finds each probe as the NetworkPolicy documentation says.
func (te *tenancyEnv) testLoomctlConnectivityPorts(t *testing.T) {
	nps := te.dyn.Resource(networkingv1.SchemeGroupVersion.WithResource("networkpolicies")).Namespace(nsA)
	np := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
		"metadata": map[string]any{"name": "a2-from-a1-tcp-80"},
		"spec": map[string]any{
			"podSelector": map[string]any{"matchLabels": map[string]any{"app": "a2"}},
			"ingress": []any{map[string]any{
				"from":  []any{map[string]any{"podSelector": map[string]any{"matchLabels": map[string]any{"app": "a1"}}}},
				"ports": []any{map[string]any{"protocol": "TCP", "port": 80}},
			}},
		},
	}}
	if _, err := nps.Create(te.ctx, np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer nps.Delete(te.ctx, np.GetName(), metav1.DeleteOptions{})
	remove := te.multiPolicy(t, "a1-udp-53", map[string]any{
		"policyTypes": []any{"Ingress"},
		"ingress":     []any{map[string]any{"ports": []any{map[string]any{"protocol": "UDP", "port": 53}}}},
	})
	defer remove()

	// The rules reach every node within moments.
	var out, progress string
	var err error
	deadline := time.Now().Add(20 * time.Second)
	for {
		if out, progress, err = te.loomctlConnectivity("-o", "json"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("loomctl connectivity with the policies: %v\n%s%s", err, progress, out)
		}
		time.Sleep(time.Second)
	}
	var results []probeResult
	if jerr := json.Unmarshal([]byte(out), &results); jerr != nil {
		t.Fatalf("loomctl connectivity -o json: %v\n%s", jerr, out)
	}
	// 20 ordered pairs; on each network ICMP, and TCP and UDP on the policy's port and 7007.
	if len(results) != 20*(5+5) {
		t.Errorf("loomctl connectivity tried %d probes, want %d", len(results), 20*(5+5))
	}
	got := map[string]probeResult{}
	for _, r := range results {
		got[fmt.Sprintf("%s %s %s %s/%d", r.From, r.To, r.Network, r.Protocol, r.Port)] = r
	}
	for probe, want := range map[string]bool{
		// a2 is isolated for ingress on the primary network: TCP 80 from a1 only.
		"ten-a/a1 ten-a/a2 primary TCP/80":      true,
		"ten-a/a1 ten-a/a2 primary UDP/80":      false,
		"ten-a/a1 ten-a/a2 primary TCP/7007":    false,
		"ten-a/a1 ten-a/a2 primary ICMP/0":      false,
		"ten-plat/p1 ten-a/a2 primary TCP/80":   false,
		"ten-a/a2 ten-a/a1 primary UDP/80":      true,
		"ten-plat/p1 ten-a/a1 primary TCP/7007": true,
		// a1 is isolated for ingress on the shared network: UDP 53 only, within its tenant.
		"ten-a/a2 ten-a/a1 " + sharedNet + " UDP/53":   true,
		"ten-a/a2 ten-a/a1 " + sharedNet + " TCP/53":   false,
		"ten-a/a2 ten-a/a1 " + sharedNet + " UDP/7007": false,
		"ten-a/a2 ten-a/a1 " + sharedNet + " ICMP/0":   false,
		"ten-a/a1 ten-a/a2 " + sharedNet + " TCP/53":   true,
		"ten-b/b1 ten-a/a1 " + sharedNet + " UDP/53":   false,
	} {
		r, ok := got[probe]
		if !ok {
			t.Errorf("probe %s: not tried", probe)
			continue
		}
		if r.Allowed != want || r.Reached != want {
			t.Errorf("probe %s: expected allowed=%v, reached=%v; the documentation says %v", probe, r.Allowed, r.Reached, want)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// testLoomctlTenants checks `loomctl tenants` against the cluster: its table is golden, the
// pods' addresses counted on both networks.
func (te *tenancyEnv) testLoomctlTenants(t *testing.T) {
	loomctl := filepath.Join(te.c.Options().BinDir, "loomctl")
	out, err := exec.CommandContext(te.ctx, loomctl, "tenants", "--dir", te.c.Dir()).Output()
	if err != nil {
		t.Fatalf("loomctl tenants: %v\n%s", err, out)
	}
	want, err := os.ReadFile(filepath.Join("testdata", "loomctl-tenants.golden"))
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != string(want) {
		t.Errorf("loomctl tenants:\n%s\nwant (testdata/loomctl-tenants.golden):\n%s", out, want)
	}
}
