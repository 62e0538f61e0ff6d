package policy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

// fakeWriters records, per network namespace and table family, the table last applied, as
// the kernel would hold it; a namespace listed in fail refuses every write.
type fakeWriters struct {
	mu     sync.Mutex
	tables map[string]*NftTable // by netns + "|" + family; nil: deleted
	fail   map[string]bool
}

type fakeWriter struct {
	w   *fakeWriters
	key string
	ns  string
}

func (f *fakeWriters) open(netns, family string) TableWriter {
	return &fakeWriter{w: f, key: netns + "|" + family, ns: netns}
}

func (f *fakeWriters) table(netns, family string) *NftTable {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tables[netns+"|"+family]
}

func (w *fakeWriter) Apply(_ context.Context, want NftTable) error {
	w.w.mu.Lock()
	defer w.w.mu.Unlock()
	if w.w.fail[w.ns] {
		return errors.New("write refused")
	}
	t := want.clone()
	w.w.tables[w.key] = &t
	return nil
}

func (w *fakeWriter) Verify(context.Context) error { return nil }
func (w *fakeWriter) Reset()                       {}
func (w *fakeWriter) Delete(context.Context) error {
	w.w.mu.Lock()
	defer w.w.mu.Unlock()
	delete(w.w.tables, w.key)
	return nil
}

func chainNames(t *NftTable) []string {
	if t == nil {
		return nil
	}
	var names []string
	for _, c := range t.Chains {
		names = append(names, c.Name)
	}
	return names
}

// The engine, without root: an admitted pod's primary rules go into the node's table, its
// secondary rules and every interface's link rules into its own namespace's two tables; a
// released pod's go; a pod whose namespace refuses writes fails its own Admit only.
func TestEngineWritesEveryTable(t *testing.T) {
	ctx := context.Background()
	fw := &fakeWriters{tables: map[string]*NftTable{}, fail: map[string]bool{}}
	src := &staticSource{changed: make(chan struct{}, 1), snap: Snapshot{
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:244::/56")},
		Tenants:      []Tenant{{Name: "a"}, {Name: "b"}},
		Namespaces:   []Namespace{{Name: "ns-a", Tenant: "a"}, {Name: "ns-b", Tenant: "b"}},
		Networks:     []Network{{ID: "ns-a/lan", Subnets: []netip.Prefix{netip.MustParsePrefix("192.168.9.0/24")}}},
	}}
	e := NewEngineWith("n1", "", src, fw.open, slog.New(slog.NewTextHandler(io.Discard, nil)))
	// The engine forgets a pod whose network namespace is gone: give each one a file.
	netns := func(name string) string {
		path := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	web := engineLocalPod("c1", "ns-a", "web", "a", "loom00000000001", "10.244.1.2")
	web.Netns = netns("web")
	web.Pod.Endpoints[0].MAC = MAC{0x0a, 0x58, 0, 0, 0, 1}
	web.Pod.Endpoints = append(web.Pod.Endpoints, Endpoint{Network: "ns-a/lan", Interface: "net1",
		IPs: []netip.Addr{netip.MustParseAddr("192.168.9.2")}, MAC: MAC{0x0a, 0x58, 0, 0, 9, 2}})
	if err := e.Admit(ctx, web); err != nil {
		t.Fatal(err)
	}
	if got := chainNames(fw.table("", "")); !slices.Contains(got, "eg_loom00000000001") {
		t.Errorf("node table chains %v, want the pod veth's", got)
	}
	if got := chainNames(fw.table(web.Netns, "")); !slices.Contains(got, "in_net1") {
		t.Errorf("pod inet table chains %v, want net1's", got)
	}
	if got, want := chainNames(fw.table(web.Netns, nftLinkFamily)), []string{"l2eg_eth0", "l2eg_net1", "l2in_net1"}; !slices.Equal(got, want) {
		t.Errorf("pod link table chains %v, want %v", got, want)
	}

	// A primary-only pod has link rules and no inet table of its own.
	job := engineLocalPod("c2", "ns-b", "job", "b", "loom00000000002", "10.244.1.3")
	job.Netns = netns("job")
	if err := e.Admit(ctx, job); err != nil {
		t.Fatal(err)
	}
	if tbl := fw.table(job.Netns, ""); tbl != nil {
		t.Errorf("a primary-only pod got an inet table in its namespace: %v", chainNames(tbl))
	}
	if got := chainNames(fw.table(job.Netns, nftLinkFamily)); !slices.Equal(got, []string{"l2eg_eth0"}) {
		t.Errorf("primary-only pod link chains %v, want l2eg_eth0", got)
	}

	// A namespace that refuses writes fails that pod's Admit and no other.
	bad := engineLocalPod("c3", "ns-b", "bad", "b", "loom00000000003", "10.244.1.4")
	bad.Netns = netns("bad")
	fw.fail[bad.Netns] = true
	if err := e.Admit(ctx, bad); err == nil {
		t.Error("Admit of a pod whose namespace refuses its rules succeeded")
	}
	other := engineLocalPod("c4", "ns-b", "other", "b", "loom00000000004", "10.244.1.5")
	other.Netns = netns("other")
	if err := e.Admit(ctx, other); err != nil {
		t.Errorf("another pod's refused table failed this pod's Admit: %v", err)
	}

	if err := e.Release(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if got := chainNames(fw.table("", "")); slices.Contains(got, "eg_loom00000000001") {
		t.Errorf("node table still has the released pod's chains: %v", got)
	}
	e.cleanup.Wait() // a released pod's tables go beside the caller
	if fw.table(web.Netns, "") != nil || fw.table(web.Netns, nftLinkFamily) != nil {
		t.Error("the released pod's namespace keeps its tables")
	}

	// Admitted again into the same namespace right after its release (a retried ADD), the
	// pod keeps its new tables: the removal of the old ones never comes after them.
	for range 20 {
		if err := e.Release(ctx, "c1"); err != nil {
			t.Fatal(err)
		}
		if err := e.Admit(ctx, web); err != nil {
			t.Fatal(err)
		}
	}
	e.cleanup.Wait()
	if fw.table(web.Netns, "") == nil || fw.table(web.Netns, nftLinkFamily) == nil {
		t.Error("a pod admitted again right after its release lost its tables to the old ones' removal")
	}
}
