// The BGP test runs GoBGP as loomd does, with Multipath TCP off (see fabric/bgp).
//
//go:debug multipathtcp=0

package metrics

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/loom-cni/loom/delegate"
	"github.com/loom-cni/loom/fabric/bgp"
	"github.com/loom-cni/loom/fabric/ipam"
	"github.com/loom-cni/loom/fabric/ipam/ipamtest"
	"github.com/loom-cni/loom/fabric/vxlan"
	"github.com/loom-cni/loom/policy"
	"github.com/loom-cni/loom/sriov"
	"github.com/loom-cni/loom/sriov/attach"
	"github.com/loom-cni/loom/sriov/sriovtest"
)

// compare checks that c reports exactly the samples of want, ignoring HELP and TYPE lines
// (their text is the collector's; the samples are what the test is about).
func compare(t *testing.T, c prometheus.Collector, want string, names ...string) {
	t.Helper()
	got := scrape(t, c, names...)
	var samples []string
	for _, line := range strings.Split(got, "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			samples = append(samples, line)
		}
	}
	if g, w := strings.Join(samples, "\n"), strings.TrimSpace(dedent(want)); g != w {
		t.Errorf("got:\n%s\nwant:\n%s", g, w)
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

// scrape returns what c reports, in the text format, of the metrics names (all when none).
func scrape(t *testing.T, c prometheus.Collector, names ...string) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if len(names) == 0 || slices.Contains(names, mf.GetName()) {
			if err := enc.Encode(mf); err != nil {
				t.Fatal(err)
			}
		}
	}
	return b.String()
}

// countingLedger counts how often the collector reads the ledger.
type countingLedger struct {
	*delegate.Ledger
	lists int
}

func (l *countingLedger) List() ([]delegate.Record, error) {
	l.lists++
	return l.Ledger.List()
}

func TestAttachmentsReadTheLedgerOnlyAfterAChange(t *testing.T) {
	l, err := delegate.OpenLedger(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	counting := &countingLedger{Ledger: l}
	c := NewAttachmentsCollector(counting)
	rec := delegate.Record{ContainerID: "c1", Attachments: []delegate.Entry{
		{Spec: delegate.Spec{Kind: "loom-primary", Plugin: "loom-primary"}, State: delegate.StateAdded},
		{Spec: delegate.Spec{Kind: attach.Kind, Plugin: attach.Kind}, State: delegate.StateAdding},
		{Spec: delegate.Spec{Kind: delegate.KindCNI, Plugin: "bridge"}, State: delegate.StatePlanned},
	}}
	if err = l.Save(rec); err != nil {
		t.Fatal(err)
	}
	want := `
		loom_attachments{network_type="loom-primary",plugin="loom-primary",state="added"} 1
		loom_attachments{network_type="loom-sriov",plugin="loom-sriov",state="adding"} 1
		loom_ledger_containers 1`
	compare(t, c, want)
	compare(t, c, want)
	if counting.lists != 1 {
		t.Errorf("the ledger was read %d times for scrapes without a change in between, want once", counting.lists)
	}
	if err = l.Remove("c1"); err != nil {
		t.Fatal(err)
	}
	compare(t, c, `
		loom_attachments{network_type="loom-primary",plugin="loom-primary",state="added"} 0
		loom_attachments{network_type="loom-sriov",plugin="loom-sriov",state="adding"} 0
		loom_ledger_containers 0`)
	if counting.lists != 2 {
		t.Errorf("the ledger was read %d times, want again after the change", counting.lists)
	}
}

// brokenLedger cannot be read.
type brokenLedger struct{ gen uint64 }

func (b *brokenLedger) List() ([]delegate.Record, error) { return nil, errors.New("permission denied") }
func (b *brokenLedger) Generation() uint64               { return b.gen }

func TestAttachmentsReportAnUnreadableLedger(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewAttachmentsCollector(&brokenLedger{}))
	if _, err := reg.Gather(); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("gather: got %v, want the ledger's error", err)
	}
}

func TestIPAM(t *testing.T) {
	alloc := ipam.NewAllocator(ipamtest.NewStore(), "node-a", nil, nil)
	ctx := context.Background()
	if err := alloc.Load(ctx); err != nil {
		t.Fatal(err)
	}
	c := NewIPAMCollector(alloc.Usage)
	compare(t, c, "")
	def := ipam.Pool{Name: "default", CIDR: netip.MustParsePrefix("10.244.0.0/16"), BlockSize: 26}
	sec := ipam.Pool{Name: "net-b", CIDR: netip.MustParsePrefix("192.168.60.0/24"), BlockSize: 28}
	allocate := func(pool ipam.Pool, n int) {
		for i := range n {
			owner := ipam.Owner{Kind: ipam.OwnerPod, Namespace: "ns", Name: "p", UID: "u",
				ContainerID: pool.Name + "-" + string(rune('a'+i)), Ifname: "eth0"}
			if _, _, err := alloc.Allocate(ctx, pool, owner); err != nil {
				t.Fatal(err)
			}
		}
	}
	allocate(def, 3)
	allocate(sec, 17) // one /28 inside the pool holds 16
	compare(t, c, `
		loom_ipam_addresses{pool="default"} 64
		loom_ipam_addresses{pool="net-b"} 32
		loom_ipam_allocated_addresses{pool="default"} 3
		loom_ipam_allocated_addresses{pool="net-b"} 17
		loom_ipam_blocks{pool="default"} 1
		loom_ipam_blocks{pool="net-b"} 2`)
	if err := alloc.Release(ctx, "default-a", "eth0"); err != nil {
		t.Fatal(err)
	}
	compare(t, c, `
		loom_ipam_allocated_addresses{pool="default"} 2
		loom_ipam_allocated_addresses{pool="net-b"} 17`, "loom_ipam_allocated_addresses")
}

// freePort returns a TCP port that is free on the loopback addresses right now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// nullSink is a bgp.RouteSink that installs nothing.
type nullSink struct{}

func (nullSink) Replace(netip.Prefix, netip.Addr) error { return nil }
func (nullSink) Delete(netip.Prefix) error              { return nil }
func (nullSink) Sweep([]netip.Prefix) error             { return nil }

// TestBGP runs two speakers on loopback addresses: node b reports an established session
// with a and the route a advertises, and a session to a peer that never answers in another
// state.
func TestBGP(t *testing.T) {
	port := freePort(t)
	a, b := netip.MustParseAddr("127.0.0.21"), netip.MustParseAddr("127.0.0.22")
	nobody := netip.MustParseAddr("127.0.0.23")
	speaker := func(self netip.Addr, peers ...netip.Addr) *bgp.Speaker {
		cfg := bgp.Config{RouterID: self, ListenAddresses: []netip.Addr{self}, ListenPort: port,
			HoldTime: 3 * time.Second, ConnectRetry: time.Second, DisableGracefulRestart: true}
		for _, p := range peers {
			cfg.Peers = append(cfg.Peers, bgp.Peer{Address: p, ASN: bgp.DefaultASN, Port: port})
		}
		sp, err := bgp.New(cfg, nullSink{}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		return sp
	}
	sa, sb := speaker(a, b), speaker(b, a, nobody)
	c := NewBGPCollector(sb.Peers)
	compare(t, c, "") // not started: no sessions
	if err := sa.Advertise(context.Background(), []netip.Prefix{netip.MustParsePrefix("10.244.1.0/26")}); err != nil {
		t.Fatal(err)
	}
	for _, sp := range []*bgp.Speaker{sa, sb} {
		if err := sp.Start(context.Background()); err != nil {
			t.Skipf("start a bgp speaker on 127.0.0.x (loopback addresses beyond 127.0.0.1 needed): %v", err)
		}
		t.Cleanup(sp.Stop)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := scrape(t, c, "loom_bgp_received_routes")
		if strings.Contains(got, `loom_bgp_received_routes{peer="127.0.0.21"} 1`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no route received from a within 20 s:\n%s", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	peers, err := sb.Peers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var nobodyState string
	for _, p := range peers {
		if p.Address == nobody {
			nobodyState = p.State
		}
	}
	if nobodyState == "" || nobodyState == "established" {
		t.Fatalf("the session to a peer that does not listen is %q", nobodyState)
	}
	compare(t, c, `
		loom_bgp_accepted_routes{peer="127.0.0.21"} 1
		loom_bgp_accepted_routes{peer="127.0.0.23"} 0
		loom_bgp_received_routes{peer="127.0.0.21"} 1
		loom_bgp_received_routes{peer="127.0.0.23"} 0
		loom_bgp_sessions{peer="127.0.0.21",state="established"} 1
		loom_bgp_sessions{peer="127.0.0.23",state="`+nobodyState+`"} 1`)
}

func TestBGPReportsAStoppedSpeaker(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewBGPCollector(func(context.Context) ([]bgp.PeerState, error) { return nil, bgp.ErrStopped }))
	if _, err := reg.Gather(); err == nil || !strings.Contains(err.Error(), bgp.ErrStopped.Error()) {
		t.Errorf("gather: got %v, want the speaker's error", err)
	}
}

func TestVXLAN(t *testing.T) {
	var st vxlan.Status
	ok := false
	c := NewVXLANCollector(func() (vxlan.Status, bool) { return st, ok })
	compare(t, c, "") // not synced yet
	st, ok = vxlan.Status{Peers: 2, DirectPeers: 1, Routes: 5, DirectRoutes: 1, Rejected: 3}, true
	compare(t, c, `
		loom_vxlan_peers{path="direct"} 1
		loom_vxlan_peers{path="vxlan"} 2
		loom_vxlan_rejected_claims 3
		loom_vxlan_routes{path="direct"} 1
		loom_vxlan_routes{path="vxlan"} 5`)
}

func TestPolicy(t *testing.T) {
	// A real engine that has not synced reports its counters at zero and no last sync.
	engine := policy.NewEngine("node-a", "nft", "", nil, slog.New(slog.DiscardHandler))
	compare(t, NewPolicyCollector(engine.Stats), `
		loom_policy_pod_tables 0
		loom_policy_pods 0
		loom_policy_repairs_total 0
		loom_policy_rules{table="node"} 0
		loom_policy_rules{table="pod"} 0
		loom_policy_sync_duration_seconds_sum 0
		loom_policy_sync_duration_seconds_count 0
		loom_policy_sync_errors_total 0`)

	st := policy.Stats{Syncs: 10, Failures: 2, SyncTime: 1500 * time.Millisecond, LastSync: 250 * time.Millisecond,
		LastSyncEnd: time.Unix(1700000000, 500e6), LastError: "pod ns/p: nft: exit status 1",
		Repairs: 1, HostRules: 40, PodRules: 12, LocalPods: 5, PodTables: 2}
	compare(t, NewPolicyCollector(func() policy.Stats { return st }), `
		loom_policy_last_sync_duration_seconds 0.25
		loom_policy_last_sync_failed 1
		loom_policy_last_sync_timestamp_seconds 1.7000000005e+09
		loom_policy_pod_tables 2
		loom_policy_pods 5
		loom_policy_repairs_total 1
		loom_policy_rules{table="node"} 40
		loom_policy_rules{table="pod"} 12
		loom_policy_sync_duration_seconds_sum 1.5
		loom_policy_sync_duration_seconds_count 10
		loom_policy_sync_errors_total 2`)
}

// TestSRIOV discovers VFs in a fake sysfs tree as the device plugins do, and reads claims
// with a real loom-sriov attachment.
func TestSRIOV(t *testing.T) {
	tree := sriovtest.New(t,
		sriovtest.PF{Name: "ens1f0", NumVFs: 4, TotalVFs: 8},
		sriovtest.PF{Name: "ens1f1", NumVFs: 2, TotalVFs: 4, VFDriver: sriovtest.DPDKDriver})
	pools := []sriov.PoolConfig{
		{Name: "loom.dev/net_a", PFs: []sriov.PFSelector{{PF: "ens1f0"}}},
		{Name: "loom.dev/dpdk", Drivers: []string{sriovtest.DPDKDriver}},
	}
	var assigned map[sriov.ResourceName][]sriov.VF
	scan := func() {
		t.Helper()
		inv, err := sriov.NewScanner(tree.Root).Scan()
		if err != nil {
			t.Fatal(err)
		}
		if assigned, err = sriov.Assign(inv, pools); err != nil {
			t.Fatal(err)
		}
	}
	stateDir := t.TempDir()
	vfs := attach.New(attach.Config{SysfsRoot: tree.Root, StateDir: stateDir})
	c := NewSRIOVCollector(func() map[sriov.ResourceName][]sriov.VF { return assigned }, vfs.Claimed)
	compare(t, c, "") // before the first scan

	// VF 0 of ens1f0 is in a pod, VF 1's link is down.
	if err := os.WriteFile(filepath.Join(stateDir, tree.VFAddress("ens1f0", 0)+".json"), []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := tree.SetOperstate("ens1f0v1", "down"); err != nil {
		t.Fatal(err)
	}
	scan()
	compare(t, c, `
		loom_sriov_vfs{pool="loom.dev/dpdk",state="attached"} 0
		loom_sriov_vfs{pool="loom.dev/dpdk",state="available"} 2
		loom_sriov_vfs{pool="loom.dev/dpdk",state="unhealthy"} 0
		loom_sriov_vfs{pool="loom.dev/net_a",state="attached"} 1
		loom_sriov_vfs{pool="loom.dev/net_a",state="available"} 2
		loom_sriov_vfs{pool="loom.dev/net_a",state="unhealthy"} 1`)

	broken := NewSRIOVCollector(func() map[sriov.ResourceName][]sriov.VF { return assigned },
		func() ([]string, error) { return nil, errors.New("list vf claims: permission denied") })
	reg := prometheus.NewRegistry()
	reg.MustRegister(broken)
	if _, err := reg.Gather(); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("gather with unreadable claims: got %v", err)
	}
}
