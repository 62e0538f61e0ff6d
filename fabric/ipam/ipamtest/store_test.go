package ipamtest

import (
	"context"
	"errors"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/loom-cni/loom/fabric/ipam"
)

func block(name, pool, node string) ipam.IPBlock {
	return ipam.IPBlock{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{ipam.LabelPool: pool, ipam.LabelNode: node}},
		Spec:       ipam.IPBlockSpec{Pool: pool, CIDR: "10.0.0.0/26", Node: node},
	}
}

func TestStoreLikeAPIServer(t *testing.T) {
	ctx := context.Background()
	s := NewStore()
	created, err := s.Create(ctx, block("p.b", "p", "n1"))
	if err != nil {
		t.Fatal(err)
	}
	if created.ResourceVersion == "" || created.UID == "" || created.CreationTimestamp.IsZero() || created.Kind != ipam.Kind {
		t.Errorf("Create() = %+v, want resourceVersion, uid, creation time and kind set", created.ObjectMeta)
	}
	checks := []struct {
		name string
		err  error
		is   func(error) bool
	}{
		{"create existing", second(s.Create(ctx, block("p.b", "p", "n2"))), apierrors.IsAlreadyExists},
		{"create with resourceVersion", second(s.Create(ctx, withRV(block("p.c", "p", "n1"), "1"))), apierrors.IsBadRequest},
		{"create invalid name", second(s.Create(ctx, block("P_B", "p", "n1"))), apierrors.IsInvalid},
		{"create invalid label", second(s.Create(ctx, block("p.d", "p", "n/1"))), apierrors.IsInvalid},
		{"update without resourceVersion", second(s.Update(ctx, block("p.b", "p", "n1"))), apierrors.IsInvalid},
		{"update missing", second(s.Update(ctx, withRV(block("p.x", "p", "n1"), "1"))), apierrors.IsNotFound},
		{"get missing", second(s.Get(ctx, "p.x")), apierrors.IsNotFound},
		{"delete missing", s.Delete(ctx, "p.x", ""), apierrors.IsNotFound},
	}
	for _, c := range checks {
		if !c.is(c.err) {
			t.Errorf("%s: %v", c.name, c.err)
		}
	}

	updated, err := s.Update(ctx, created)
	if err != nil {
		t.Fatal(err)
	}
	if updated.ResourceVersion == created.ResourceVersion || updated.UID != created.UID {
		t.Errorf("Update() = %+v, want a new resourceVersion and the same uid", updated.ObjectMeta)
	}
	if _, err := s.Update(ctx, created); !apierrors.IsConflict(err) {
		t.Errorf("Update() with a stale resourceVersion = %v, want Conflict", err)
	}
	if err := s.Delete(ctx, "p.b", created.ResourceVersion); !apierrors.IsConflict(err) {
		t.Errorf("Delete() with a stale resourceVersion = %v, want Conflict", err)
	}

	// What the store returns is a copy.
	got, _ := s.Get(ctx, "p.b")
	got.Labels[ipam.LabelNode] = "changed"
	if again, _ := s.Get(ctx, "p.b"); again.Labels[ipam.LabelNode] != "n1" {
		t.Error("changing a returned block changed the stored one")
	}

	if _, err := s.Create(ctx, block("a.b", "a", "n2")); err != nil {
		t.Fatal(err)
	}
	all, _ := s.List(ctx, ipam.Filter{})
	byNode, _ := s.List(ctx, ipam.Filter{Node: "n2"})
	byPool, _ := s.List(ctx, ipam.Filter{Pool: "p", Node: "n2"})
	if len(all) != 2 || all[0].Name != "a.b" || len(byNode) != 1 || byNode[0].Name != "a.b" || len(byPool) != 0 {
		t.Errorf("List() = %d, by node %d, by pool and node %d blocks", len(all), len(byNode), len(byPool))
	}

	if err := s.Delete(ctx, "p.b", updated.ResourceVersion); err != nil {
		t.Errorf("Delete() with the current resourceVersion = %v", err)
	}
}

func TestStoreBeforeWrite(t *testing.T) {
	ctx := context.Background()
	s := NewStore()
	boom := errors.New("boom")
	var verbs []string
	s.BeforeWrite = func(verb, name string) error {
		verbs = append(verbs, verb)
		if verb == VerbDelete {
			return boom
		}
		return nil
	}
	b, err := s.Create(ctx, block("p.b", "p", "n1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "p.b", ""); !errors.Is(err, boom) {
		t.Errorf("Delete() = %v, want the hook's error", err)
	}
	if err := s.Delete(Unhooked(ctx), "p.b", ""); err != nil {
		t.Errorf("Delete() under Unhooked = %v, want nil", err)
	}
	if len(verbs) != 3 || verbs[0] != VerbCreate || verbs[1] != VerbUpdate || verbs[2] != VerbDelete {
		t.Errorf("hook saw %v", verbs)
	}
}

func second[T any](_ T, err error) error { return err }

func withRV(b ipam.IPBlock, rv string) ipam.IPBlock {
	b.ResourceVersion = rv
	return b
}
