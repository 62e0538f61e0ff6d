package main

// Design notes.
//
// The question is what the node's table costs a packet when the engine knows a large
// cluster, so the only difference between the sides of a comparison is the table: the same
// two pods, plumbed as Loom plumbs them (routed /32 on veths named loom…, through a node
// namespace that forwards), measured with the bench node's compiled table in the node's
// namespace and without it. The table is the real one: the bench node's share of the
// made-up cluster's pods (their veths do not exist, but their map elements, chains and sets
// do) plus the bench pods, the server isolated by a policy that lets the client in on the
// ports of iperf3 and sockperf only; and, as loomd writes for every pod, each bench pod's
// link rules on its eth0, which every frame it sends passes.
//
// A third side, measured in the same rounds without a target, explains the other two: a
// table of one rule that lets established traffic through, as Loom's table does first. It
// turns connection tracking on in the node's namespace and does nothing else, so it tells
// the cost of connection tracking, which every replied packet of a stateful policy pays
// (and which a node that runs kube-proxy pays anyway), from the cost of Loom's rules and
// sets.
//
// As in fabricbench (whose design notes explain why), no absolute figure is compared with
// anything: each round measures every side back to back, in an order that reverses from one
// round to the next, and a verdict is the median of the paired ratios. Switching sides is an
// Apply or a Delete of the whole table by the same Applier loomd uses; it happens between
// measurements and is not timed.
//
// Before anything is measured, the table must be seen to work: without it every probe
// passes; with it the client still connects to the server, but its ping does not (only TCP
// is allowed), and a pod of another tenant on the same node reaches neither the server
// (policy) nor the client (the tenant guard). If any of that is not so, the benchmark fails:
// a table that enforces nothing costs nothing.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/loom-cni/loom/e2e/perf"
	"github.com/loom-cni/loom/policy"
)

type datapathOptions struct {
	commonOptions
	log        *slog.Logger
	tputRounds int
	tput       time.Duration
	rrRounds   int
	rr         time.Duration
	cpu        string
}

// The tenants of the bench pods: the client and the server share benchTenant, the intruder
// is in otherTenant, which is not benchTenant's peer.
const (
	benchTenant = 0
	otherTenant = 2
)

// benchPod is a pod the datapath benchmark plugs for real.
type benchPod struct {
	name   string
	tenant int
	slot   int
	role   string
}

var benchPods = []benchPod{
	{name: "bench-client", tenant: benchTenant, slot: firstBenchSlot, role: "bench-client"},
	{name: "bench-server", tenant: benchTenant, slot: firstBenchSlot + 1, role: "bench-server"},
	// The intruder carries the client's label: only its namespace and tenant keep it out.
	{name: "bench-intruder", tenant: otherTenant, slot: firstBenchSlot, role: "bench-client"},
}

func runDatapath(ctx context.Context, o datapathOptions) error {
	if o.tputRounds < 1 || o.rrRounds < 1 {
		return errors.New("datapath: the numbers of rounds must be positive")
	}
	c, err := synthesize(o.shape)
	if err != nil {
		return err
	}
	nss := &namespaces{prefix: o.prefix}
	defer nss.removeAll()
	node, eps, err := plugBenchPods(ctx, nss, c)
	if err != nil {
		return err
	}
	client, server, intruder := eps[0], eps[1], eps[2]
	c.snap.Policies = append(c.snap.Policies, benchPolicy(tenantNamespace(benchTenant)))

	start := time.Now()
	rs := policy.Compile(c.snap, benchNode)
	compiled := time.Since(start)
	table := policy.Render(rs.Host, policy.HostTable)
	fmt.Printf("datapath under policy: %d tenants, %d pods on %d nodes known; %s's table (compiled in %.1f ms): %s\n",
		o.shape.tenants, len(c.snap.Pods), o.shape.nodes, benchNode, ms(compiled), describeTable(table))

	applier := &nodeTables{host: policy.NewApplier(o.nft, node, o.log), hostTable: table}
	for i, bp := range benchPods {
		key := policy.PodKey{Namespace: tenantNamespace(bp.tenant), Name: bp.name}
		applier.links = append(applier.links, policy.NewLinkApplier(o.nft, eps[i].netns, o.log))
		applier.linkTables = append(applier.linkTables, policy.RenderLinks(rs.Pods[key]))
	}
	stopServers, err := perf.StartServers(ctx, o.cpu, server.Endpoint)
	if err != nil {
		return err
	}
	defer stopServers()
	if err = checkEnforced(ctx, applier, client, server, intruder); err != nil {
		return err
	}
	sides := []side{
		{"no table", func(ctx context.Context) error {
			return errors.Join(applier.delete(ctx), conntrackOnly(ctx, o.nft, node, false))
		}},
		{"table", func(ctx context.Context) error {
			return errors.Join(conntrackOnly(ctx, o.nft, node, false), applier.apply(ctx))
		}},
		{"conntrack only", func(ctx context.Context) error {
			return errors.Join(applier.delete(ctx), conntrackOnly(ctx, o.nft, node, true))
		}},
	}
	fmt.Printf("%d rounds of iperf3 (%s, one TCP stream), %d of sockperf TCP ping-pong (%s, both ends on CPU %s)\n",
		o.tputRounds, o.tput, o.rrRounds, o.rr, o.cpu)
	tput, err := measureRounds(ctx, o.tputRounds, sides, func(ctx context.Context) (float64, error) {
		return perf.Throughput(ctx, client.Endpoint, server.Endpoint, o.tput)
	})
	if err != nil {
		return err
	}
	rtt, err := measureLatency(ctx, o, sides, client, server)
	if err != nil {
		return err
	}
	reportDatapath(sides, tput, rtt)
	return nil
}

// nodeTables are what the node's side of the comparison writes: the node's table and, in each
// bench pod's namespace, the pod's link rules, as loomd writes them for every pod.
type nodeTables struct {
	host       *policy.Applier
	hostTable  policy.NftTable
	links      []*policy.Applier
	linkTables []policy.NftTable
}

func (n *nodeTables) apply(ctx context.Context) error {
	errs := []error{n.host.Apply(ctx, n.hostTable)}
	for i, a := range n.links {
		errs = append(errs, a.Apply(ctx, n.linkTables[i]))
	}
	return errors.Join(errs...)
}

func (n *nodeTables) delete(ctx context.Context) error {
	errs := []error{n.host.Delete(ctx)}
	for _, a := range n.links {
		errs = append(errs, a.Delete(ctx))
	}
	return errors.Join(errs...)
}

// plugBenchPods makes the node namespace, forwarding, and the bench pods' namespaces plugged
// into it; it adds the bench pods to the cluster on the bench node and returns the node
// namespace's path and the pods, in the order of benchPods.
func plugBenchPods(ctx context.Context, nss *namespaces, c *cluster) (string, []endpoint, error) {
	node, err := nss.add(ctx, "node")
	if err != nil {
		return "", nil, err
	}
	if out, err := nsCmd(ctx, node, "sysctl", "-qw", "net.ipv4.ip_forward=1").CombinedOutput(); err != nil {
		return "", nil, fmt.Errorf("turn forwarding on in %s: %w: %s", node, err, out)
	}
	var eps []endpoint
	for _, bp := range benchPods {
		p := c.newPod(bp.tenant, bp.slot, bp.name, benchNode, map[string]string{"role": bp.role})
		c.snap.Pods = append(c.snap.Pods, p)
		path, err := nss.add(ctx, bp.name)
		if err != nil {
			return "", nil, err
		}
		ip := p.Endpoints[0].IPs[0]
		if err = plugPod(node, path, containerID(p.PodKey), ip); err != nil {
			return "", nil, fmt.Errorf("plug pod %s: %w", p.PodKey, err)
		}
		eps = append(eps, endpoint{perf.InNetns(bp.name, path, ip), path})
	}
	return node, eps, nil
}

// benchPolicy isolates the bench server: it takes the bench client's TCP on the ports of
// iperf3 and sockperf, and nothing else.
func benchPolicy(ns string) policy.Policy {
	tcp := corev1.ProtocolTCP
	iperf, sockperf := intstr.FromInt32(perf.IperfPort), intstr.FromInt32(perf.SockperfPort)
	return policy.FromNetworkPolicy(&networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bench-server"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"role": "bench-server"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "bench-client"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &iperf}, {Protocol: &tcp, Port: &sockperf}},
			}},
		},
	})
}

// probe is one check of the table's effect: whether from reaches to, by ping or by a TCP
// connection to the sockperf server's port.
type probe struct {
	what     string
	from, to endpoint
	tcp      bool
}

func (p probe) passes(ctx context.Context, timeout time.Duration) bool {
	if p.tcp {
		return connects(p.from, p.to.IP, perf.SockperfPort, timeout)
	}
	return perf.Ping(ctx, p.from.Endpoint, p.to.Endpoint, timeout) == nil
}

// connects says whether from can open a TCP connection to ip:port within timeout. The
// socket is made on a thread inside from's namespace, and stays there.
func connects(from endpoint, ip netip.Addr, port int, timeout time.Duration) bool {
	err := ns.WithNetNSPath(from.netns, func(ns.NetNS) error {
		conn, err := net.DialTimeout("tcp", netip.AddrPortFrom(ip, uint16(port)).String(), timeout)
		if err != nil {
			return err
		}
		return conn.Close()
	})
	return err == nil
}

// checkEnforced fails unless every probe passes without the table and the table blocks
// exactly what it should. It leaves the table applied.
func checkEnforced(ctx context.Context, a *nodeTables, client, server, intruder endpoint) error {
	probes := []probe{
		{"client→server TCP", client, server, true},
		{"client→server ping", client, server, false},
		{"intruder→server TCP", intruder, server, true},
		{"intruder→client ping", intruder, client, false},
	}
	if err := a.delete(ctx); err != nil {
		return err
	}
	// Without the table, everything passes; the server may still be starting.
	for _, p := range probes {
		deadline := time.Now().Add(15 * time.Second)
		for !p.passes(ctx, time.Second) {
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("without the table, %s (%s → %s) does not pass: the set-up is broken", p.what, p.from.IP, p.to.IP)
			}
			perf.Sleep(ctx, 200*time.Millisecond)
		}
	}
	if err := a.apply(ctx); err != nil {
		return err
	}
	want := []bool{true, false, false, false}
	got := make([]bool, len(probes))
	var wg sync.WaitGroup
	for i, p := range probes {
		wg.Go(func() { got[i] = p.passes(ctx, 2*time.Second) })
	}
	wg.Wait()
	var errs []error
	for i, p := range probes {
		verdict := map[bool]string{true: "passes", false: "is blocked"}
		fmt.Printf("  with the table, %-22s %s\n", p.what, verdict[got[i]])
		if got[i] != want[i] {
			errs = append(errs, fmt.Errorf("with the table, %s %s, want it %s", p.what, verdict[got[i]], verdict[want[i]]))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("the policy is not enforced as compiled: %w", errors.Join(errs...))
	}
	return nil
}

// side is one state of the node's namespace that traffic is measured in.
type side struct {
	label string
	set   func(context.Context) error
}

// referenceTable is the table of the conntrack-only side: its one rule is the first of
// Loom's forward chain.
const referenceTable = "loombench"

// conntrackOnly adds the conntrack-only side's table to the node's namespace, or removes
// it; either way it does so whether or not the table is there.
func conntrackOnly(ctx context.Context, nft, netns string, on bool) error {
	script := "add table inet " + referenceTable + "\ndelete table inet " + referenceTable + "\n"
	if on {
		script += "table inet " + referenceTable + " {\n" +
			"\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n" +
			"\t\tct state established,related accept\n\t}\n}\n"
	}
	cmd := nsCmd(ctx, netns, nft, "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("write table %s in %s: %w: %s", referenceTable, netns, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// measureRounds measures each side once per round, after making it the kernel's state, and
// returns each side's figures by round, indexed like sides: figures[i][r] and figures[0][r]
// were measured in the same round. The order within a round reverses from one round to the
// next, so a drift of the machine favours no side.
func measureRounds(ctx context.Context, rounds int, sides []side, measure func(context.Context) (float64, error)) ([][]float64, error) {
	figures := make([][]float64, len(sides))
	for r := range rounds {
		for k := range sides {
			i := k
			if r%2 == 1 {
				i = len(sides) - 1 - k
			}
			if err := sides[i].set(ctx); err != nil {
				return nil, err
			}
			v, err := measure(ctx)
			if err != nil {
				return nil, err
			}
			figures[i] = append(figures[i], v)
		}
	}
	return figures, nil
}

// measureLatency runs the latency rounds with o.cpu emptied of every other thread, and gives
// every thread its CPUs back whatever happens.
func measureLatency(ctx context.Context, o datapathOptions, sides []side, client, server endpoint) ([][]float64, error) {
	defer perf.IsolateCPU(o.cpu)()
	return measureRounds(ctx, o.rrRounds, sides, func(ctx context.Context) (float64, error) {
		return perf.LatencyP50(ctx, client.Endpoint, server.Endpoint, o.rr, o.cpu)
	})
}

// reportDatapath prints every side's figures, the ratios by round and the verdicts. sides
// are no table, table and conntrack only, in that order.
func reportDatapath(sides []side, tput, rtt [][]float64) {
	for i, sd := range sides {
		fmt.Printf("  %-14s throughput %s Gbit/s   p50 RTT %s µs\n", sd.label, perf.Join(tput[i], "%.2f"), perf.Join(rtt[i], "%.1f"))
	}
	ratio := func(label string, a, b int) (float64, float64) {
		tr, lr := perf.PairedRatios(tput[a], tput[b]), perf.PairedRatios(rtt[a], rtt[b])
		fmt.Printf("  %-30s by round: throughput %s (median %.3f), p50 RTT %s (median %.3f)\n",
			label, perf.Join(tr, "%.3f"), perf.Median(tr), perf.Join(lr, "%.3f"), perf.Median(lr))
		return perf.Median(tr), perf.Median(lr)
	}
	tr, lr := ratio("table / no table", 1, 0)
	ratio("conntrack only / no table", 2, 0)
	ctr, clr := ratio("table / conntrack only", 1, 2)
	// Two baselines. A bare namespace tracks no connections; a Kubernetes node does (kube-proxy
	// and any NAT turn conntrack on), and the policy's own cost is what it adds to that.
	perf.Verdict("policy-datapath-throughput-vs-none", tr, "ratio", ">=", 0.95)
	perf.Verdict("policy-datapath-latency-p50-vs-none", lr, "ratio", "<=", 1.1)
	perf.Verdict("policy-datapath-throughput-vs-conntrack-node", ctr, "ratio", ">=", 0.95)
	perf.Verdict("policy-datapath-latency-p50-vs-conntrack-node", clr, "ratio", "<=", 1.1)
}

// describeTable says how big a rendered table is.
func describeTable(t policy.NftTable) string {
	elems, mapElems, rules := 0, 0, 0
	for _, s := range t.Sets {
		elems += len(s.Elements)
	}
	for _, m := range t.Maps {
		mapElems += len(m.Elements)
	}
	for _, c := range t.Chains {
		rules += len(c.Rules)
	}
	return fmt.Sprintf("%d sets (%d elements), %d maps (%d elements), %d chains (%d rules), %d bytes of nft",
		len(t.Sets), elems, len(t.Maps), mapElems, len(t.Chains), rules, len(t.String()))
}
