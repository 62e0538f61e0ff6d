package ipam

import (
	"context"
	"net/netip"
	"reflect"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"
)

func testBlock(pool Pool, cidr, node string, allocs ...Allocation) IPBlock {
	b := newIPBlock(pool, netip.MustParsePrefix(cidr), node)
	b.Spec.Allocations = allocs
	return b
}

func podAlloc(ip, uid, containerID string, since time.Time) Allocation {
	return Allocation{
		IP: ip,
		Owner: Owner{Kind: OwnerPod, Namespace: "ns", Name: "pod-" + uid, UID: uid,
			ContainerID: containerID, Ifname: "eth0"},
		Since: metav1.NewTime(since),
	}
}

func TestUnstructuredRoundTrip(t *testing.T) {
	pool := Pool{Name: "blue", CIDR: netip.MustParsePrefix("10.244.0.0/16"), BlockSize: 26, Tenant: "blue-team"}
	since := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	b := testBlock(pool, "10.244.0.64/26", "node-a",
		podAlloc("10.244.0.65", "1", "c1", since),
		Allocation{IP: "10.244.0.66", Owner: Owner{Kind: OwnerNode, Name: "vtep"}, Since: metav1.NewTime(since)})
	b.ResourceVersion = "42"

	u, err := b.ToUnstructured()
	if err != nil {
		t.Fatal(err)
	}
	if u.GetAPIVersion() != "loom.dev/v1alpha1" || u.GetKind() != "IPBlock" || u.GetName() != "blue.10-244-0-64-26" {
		t.Errorf("ToUnstructured() = %s %s %s", u.GetAPIVersion(), u.GetKind(), u.GetName())
	}
	wantLabels := map[string]string{LabelPool: "blue", LabelNode: "node-a", LabelTenant: "blue-team"}
	if !reflect.DeepEqual(u.GetLabels(), wantLabels) {
		t.Errorf("labels = %v, want %v", u.GetLabels(), wantLabels)
	}
	allocs := u.Object["spec"].(map[string]any)["allocations"].([]any)
	first := allocs[0].(map[string]any)
	if first["since"] != "2025-03-01T12:00:00Z" || first["owner"].(map[string]any)["containerID"] != "c1" {
		t.Errorf("first allocation = %v", first)
	}
	if _, ok := allocs[1].(map[string]any)["owner"].(map[string]any)["containerID"]; ok {
		t.Errorf("node allocation carries a containerID: %v", allocs[1])
	}

	back, err := FromUnstructured(u)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []any{nil, u.Object, (*unstructured.Unstructured)(nil), "x"} {
		if _, err := FromUnstructured(bad); err == nil {
			t.Errorf("FromUnstructured(%T) succeeded", bad)
		}
	}
	if !specEqual(back.Spec, b.Spec) || back.Name != b.Name || back.ResourceVersion != "42" {
		t.Errorf("round trip = %+v\nwant %+v", back, b)
	}
}

func TestDeepCopy(t *testing.T) {
	pool := Pool{Name: "p", CIDR: netip.MustParsePrefix("10.0.0.0/16"), BlockSize: 26}
	b := testBlock(pool, "10.0.0.0/26", "n", podAlloc("10.0.0.1", "1", "c1", time.Now()))
	c := b.DeepCopy()
	c.Labels[LabelNode] = "other"
	c.Spec.Allocations[0].IP = "10.0.0.2"
	if b.Labels[LabelNode] != "n" || b.Spec.Allocations[0].IP != "10.0.0.1" {
		t.Errorf("DeepCopy() shares memory with the original: %+v", b)
	}
}

func newFakeKubeStore(t *testing.T) (Store, *dynamicfake.FakeDynamicClient) {
	t.Helper()
	client := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{GVR: "IPBlockList"})
	return NewKubeStore(client), client
}

func TestKubeStore(t *testing.T) {
	ctx := context.Background()
	store, client := newFakeKubeStore(t)
	p1 := Pool{Name: "p1", CIDR: netip.MustParsePrefix("10.0.0.0/16"), BlockSize: 26}
	p2 := Pool{Name: "p2", CIDR: netip.MustParsePrefix("10.1.0.0/16"), BlockSize: 26}
	for _, b := range []IPBlock{
		testBlock(p1, "10.0.0.0/26", "a", podAlloc("10.0.0.1", "1", "c1", time.Now().Truncate(time.Second))),
		testBlock(p1, "10.0.0.64/26", "b"),
		testBlock(p2, "10.1.0.0/26", "a"),
	} {
		if _, err := store.Create(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := store.Create(ctx, testBlock(p1, "10.0.0.64/26", "a")); !apierrors.IsAlreadyExists(err) {
		t.Errorf("Create() of an existing block = %v, want AlreadyExists", err)
	}

	for _, tt := range []struct {
		filter Filter
		want   []string
	}{
		{Filter{}, []string{"p1.10-0-0-0-26", "p1.10-0-0-64-26", "p2.10-1-0-0-26"}},
		{Filter{Pool: "p1"}, []string{"p1.10-0-0-0-26", "p1.10-0-0-64-26"}},
		{Filter{Node: "a"}, []string{"p1.10-0-0-0-26", "p2.10-1-0-0-26"}},
		{Filter{Pool: "p1", Node: "b"}, []string{"p1.10-0-0-64-26"}},
		{Filter{Pool: "p3"}, nil},
	} {
		blocks, err := store.List(ctx, tt.filter)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, b := range blocks {
			names = append(names, b.Name)
		}
		if !sameSet(names, tt.want) {
			t.Errorf("List(%+v) = %v, want %v", tt.filter, names, tt.want)
		}
	}

	got, err := store.Get(ctx, "p1.10-0-0-0-26")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Spec.Allocations) != 1 || got.Spec.Allocations[0].Owner.ContainerID != "c1" {
		t.Errorf("Get() = %+v", got)
	}
	got.Spec.Allocations = nil
	if _, err = store.Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	if got, _ = store.Get(ctx, "p1.10-0-0-0-26"); len(got.Spec.Allocations) != 0 {
		t.Errorf("Update() did not store the change: %+v", got)
	}
	if _, err := store.Get(ctx, "nope"); !apierrors.IsNotFound(err) {
		t.Errorf("Get() of a missing block = %v, want NotFound", err)
	}

	client.ClearActions()
	if err := store.Delete(ctx, "p1.10-0-0-0-26", "7"); err != nil {
		t.Fatal(err)
	}
	del := client.Actions()[0].(k8stesting.DeleteActionImpl)
	if rv := del.DeleteOptions.Preconditions; rv == nil || *rv.ResourceVersion != "7" {
		t.Errorf("Delete() sent preconditions %+v, want resourceVersion 7", rv)
	}
	if err := store.Delete(ctx, "p1.10-0-0-0-26", ""); !apierrors.IsNotFound(err) {
		t.Errorf("Delete() of a missing block = %v, want NotFound", err)
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]int{}
	for _, s := range a {
		m[s]++
	}
	for _, s := range b {
		if m[s]--; m[s] < 0 {
			return false
		}
	}
	return true
}

// specEqual compares block specs, times by instant rather than by location.
func specEqual(a, b IPBlockSpec) bool {
	aa, ba := a.Allocations, b.Allocations
	a.Allocations, b.Allocations = nil, nil
	if !reflect.DeepEqual(a, b) || len(aa) != len(ba) {
		return false
	}
	for i := range aa {
		if !aa[i].same(ba[i]) {
			return false
		}
	}
	return true
}
