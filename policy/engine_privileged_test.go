package policy

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// staticSource is a Source that never changes unless the test says so.
type staticSource struct {
	snap    Snapshot
	changed chan struct{}
}

func (s *staticSource) Snapshot() Snapshot       { return s.snap }
func (s *staticSource) Changed() <-chan struct{} { return s.changed }

func engineLocalPod(id, ns, name, tenant, veth, addr string) LocalPod {
	return LocalPod{ContainerID: id, Pod: Pod{
		PodKey: PodKey{ns, name}, Labels: map[string]string{"app": name}, Tenant: tenant,
		Endpoints: []Endpoint{{Network: Primary, Interface: "eth0", HostInterface: veth, IPs: []netip.Addr{netip.MustParseAddr(addr)}}},
	}}
}

// The engine writes a pod's chains when it is admitted, drops them when it is released,
// replaces its pods on Restore, and rewrites a table deleted by hand on its next repair.
func TestEngineAdmitReleaseRestore(t *testing.T) {
	nft := nftForTest(t)
	host := applyNetns(t)
	ctx := context.Background()
	src := &staticSource{changed: make(chan struct{}, 1), snap: Snapshot{
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")},
		Tenants:      []Tenant{{Name: "a"}},
		Namespaces:   []Namespace{{Name: "ns-a", Tenant: "a"}, {Name: "infra"}},
		Pods: []Pod{{PodKey: PodKey{"ns-a", "remote"}, Node: "n2", Tenant: "a",
			Endpoints: []Endpoint{{Network: Primary, Interface: "eth0", IPs: []netip.Addr{netip.MustParseAddr("10.244.2.9")}}}}},
	}}
	e := NewEngine("n1", nft, host, src, slog.New(slog.NewTextHandler(io.Discard, nil)))
	listing := func() string { return applyListing(t, nft, host) }

	if err := e.Restore(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.Admit(ctx, engineLocalPod("c1", "ns-a", "web", "a", "loom00000000001", "10.244.1.2")); err != nil {
		t.Fatal(err)
	}
	if err := e.Admit(ctx, engineLocalPod("c2", "infra", "dns", "", "loom00000000002", "10.244.1.3")); err != nil {
		t.Fatal(err)
	}
	l := listing()
	for _, want := range []string{"eg_loom00000000001", "in_loom00000000001", "10.244.2.9", "eg_loom00000000002"} {
		if !strings.Contains(l, want) {
			t.Errorf("after two Admits the table lacks %q:\n%s", want, l)
		}
	}
	if err := e.Release(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if err := e.Release(ctx, "c1"); err != nil {
		t.Errorf("releasing twice: %v", err)
	}
	if l = listing(); strings.Contains(l, "loom00000000001") {
		t.Errorf("released pod's rules remain:\n%s", l)
	}
	// A restart finds only c3 in the ledger: c2's rules go, c3's come.
	if err := e.Restore(ctx, []LocalPod{engineLocalPod("c3", "ns-a", "api", "a", "loom00000000003", "10.244.1.4")}); err != nil {
		t.Fatal(err)
	}
	if l = listing(); strings.Contains(l, "loom00000000002") || !strings.Contains(l, "eg_loom00000000003") {
		t.Errorf("after Restore the table should hold c3 only:\n%s", l)
	}
	if st := e.Stats(); st.LocalPods != 1 || st.LastError != "" {
		t.Errorf("stats %+v", st)
	}

	// Someone deletes the table; the engine's repair brings it back.
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { e.Run(runCtx, 100*time.Millisecond); close(done) }()
	defer func() { cancel(); <-done }()
	applyExec(t, host, nft, "delete", "table", "inet", "loom")
	deadline := time.Now().Add(5 * time.Second)
	for {
		if out, err := applyExecErr(host, nft, "list", "table", "inet", "loom"); err == nil && strings.Contains(out, "eg_loom00000000003") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the engine did not repair the deleted table")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if e.Stats().Repairs == 0 {
		t.Error("repair not counted")
	}
}

// A pod whose table cannot be written does not fail another pod's Admit, and a pod whose
// network namespace is gone (torn down while loomd was not looking) is forgotten.
func TestEngineOnePodsTroubleStaysItsOwn(t *testing.T) {
	nft := nftForTest(t)
	host := applyNetns(t)
	ctx := context.Background()
	src := &staticSource{changed: make(chan struct{}, 1), snap: Snapshot{
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")},
		Tenants:      []Tenant{{Name: "a"}},
		Namespaces:   []Namespace{{Name: "ns-a", Tenant: "a"}},
	}}
	e := NewEngine("n1", nft, host, src, slog.New(slog.NewTextHandler(io.Discard, nil)))
	// broken has a secondary interface in a "namespace" that is a plain file: its table
	// can never be written.
	notNetns := filepath.Join(t.TempDir(), "not-a-netns")
	if err := os.WriteFile(notNetns, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	broken := engineLocalPod("c1", "ns-a", "broken", "a", "loom00000000001", "10.244.1.2")
	broken.Netns = notNetns
	broken.Pod.Endpoints = append(broken.Pod.Endpoints, Endpoint{Network: "ns-a/net", Interface: "net1",
		IPs: []netip.Addr{netip.MustParseAddr("192.168.5.2")}})
	if err := e.Admit(ctx, broken); err == nil {
		t.Fatal("a pod whose table cannot be written was admitted")
	}
	if err := e.Restore(ctx, []LocalPod{broken}); err == nil {
		t.Fatal("Restore reported no error for a table it could not write")
	}
	if err := e.Admit(ctx, engineLocalPod("c2", "ns-a", "web", "a", "loom00000000002", "10.244.1.3")); err != nil {
		t.Fatalf("another pod's unwritable table failed this pod's Admit: %v", err)
	}
	if err := os.Remove(notNetns); err != nil {
		t.Fatal(err)
	}
	if err := e.Admit(ctx, engineLocalPod("c3", "ns-a", "api", "a", "loom00000000003", "10.244.1.4")); err != nil {
		t.Fatal(err)
	}
	if st := e.Stats(); st.LocalPods != 2 || st.LastError != "" {
		t.Errorf("the pod whose namespace is gone is still known: %+v", st)
	}
	if l := applyListing(t, nft, host); strings.Contains(l, "loom00000000001") {
		t.Errorf("the vanished pod's rules remain:\n%s", l)
	}
}
