package policy

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// benchTable is the host table of a node in a cluster of 10,000 pods: ten tenants, each with
// ten address blocks (100 prefixes in interval sets) and a policy peer set of 1,000 pod
// addresses (10,000 addresses in hash sets), and 100 local pods behind their tenant's guard
// and isolated by a policy with a set, an Any and a CIDR rule. With extra, one more local pod
// is there: its endpoint, and its address in three peer sets.
func benchTable(extra bool) Table {
	t := Table{Sets: map[string]AddrSet{"u_primary": {Prefixes: renderPrefixes("10.0.0.0/8")}}}
	for i := range 10 {
		var blocks []netip.Prefix
		for j := range 10 {
			blocks = append(blocks, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), byte(j), 0}), 26))
		}
		var pods []netip.Addr
		for j := range 1000 {
			pods = append(pods, netip.AddrFrom4([4]byte{10, byte(100 + i), byte(j / 200), byte(j % 200)}))
		}
		if extra && i < 3 {
			pods = append(pods, netip.AddrFrom4([4]byte{10, byte(100 + i), 250, 1}))
		}
		t.Sets[fmt.Sprintf("t_%d", i)] = AddrSet{Prefixes: blocks}
		t.Sets[fmt.Sprintf("p_%d", i)] = AddrSet{Addrs: pods}
	}
	n := 100
	if extra {
		n++
	}
	for i := range n {
		g := Guard{Universe: "u_primary", Allowed: fmt.Sprintf("t_%d", i%10)}
		t.Endpoints = append(t.Endpoints, EndpointRules{
			Interface: fmt.Sprintf("loom%011x", i),
			Egress:    Direction{Guard: g},
			Ingress: Direction{Guard: g, Isolated: true, Rules: []Rule{
				{Peer: Peer{Set: fmt.Sprintf("p_%d", i%10)}, Ports: []Port{{Protocol: "TCP", Port: 80}}, Policy: "bench/web"},
				{Peer: Peer{Any: true}, Ports: []Port{{Protocol: "UDP", Port: 53}}, Policy: "bench/dns"},
				{Peer: renderCIDR("192.168.0.0/16", "192.168.1.0/24"), Policy: "bench/office"},
			}},
		})
	}
	return t
}

// BenchmarkApplyOnePod adds or removes one pod of a node that knows 10,000: each operation
// is one Apply writing one pod's difference, alternately its arrival and its departure,
// which are also reported apart (a departure deletes elements and chains, and the kernel
// waits for an RCU grace period before it acknowledges a transaction that deletes).
func BenchmarkApplyOnePod(b *testing.B) {
	nft := nftForTest(b)
	ctx := context.Background()
	a := NewApplier(nft, applyNetns(b), nil)
	without, with := Render(benchTable(false), HostTable), Render(benchTable(true), HostTable)
	if err := a.Apply(ctx, without); err != nil {
		b.Fatal(err)
	}
	var spent [2]time.Duration
	var count [2]int
	for i := 0; b.Loop(); i++ {
		want := with
		if i%2 == 1 {
			want = without
		}
		start := time.Now()
		if err := a.Apply(ctx, want); err != nil {
			b.Fatal(err)
		}
		spent[i%2] += time.Since(start)
		count[i%2]++
	}
	b.ReportMetric(float64((spent[0]+spent[1]).Microseconds())/1000/float64(b.N), "ms/op")
	for i, name := range []string{"add-ms/op", "remove-ms/op"} {
		if count[i] > 0 {
			b.ReportMetric(float64(spent[i].Microseconds())/1000/float64(count[i]), name)
		}
	}
}

// BenchmarkFullReplace10k writes the whole table of a node that knows 10,000 pods.
func BenchmarkFullReplace10k(b *testing.B) {
	nft := nftForTest(b)
	ctx := context.Background()
	a := NewApplier(nft, applyNetns(b), nil)
	want := Render(benchTable(false), HostTable)
	start := time.Now()
	for b.Loop() {
		a.Reset()
		if err := a.Apply(ctx, want); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/1000/float64(b.N), "ms/op")
}

// BenchmarkRender10k renders the table of a node that knows 10,000 pods.
func BenchmarkRender10k(b *testing.B) {
	t := benchTable(false)
	for b.Loop() {
		Render(t, HostTable)
	}
}

// BenchmarkUpdateScriptOnePod computes one pod's transaction against a 10,000-pod table.
func BenchmarkUpdateScriptOnePod(b *testing.B) {
	without, with := Render(benchTable(false), HostTable), Render(benchTable(true), HostTable)
	for b.Loop() {
		if _, ok := updateScript(without, with); !ok {
			b.Fatal("update refused")
		}
	}
}
