package tenants

import (
	"reflect"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// tenant parses a tenant selecting the namespaces labelled tenant=<name>.
func tenant(t *testing.T, name string, edit func(*Spec)) Tenant {
	t.Helper()
	s := Spec{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tenant": name}}}
	if edit != nil {
		edit(&s)
	}
	got, problems := Parse(&Object{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: s})
	if len(problems) != 0 {
		t.Fatalf("tenant %s: %v", name, problems)
	}
	return got
}

func TestDirectory(t *testing.T) {
	a := tenant(t, "a", func(s *Spec) { s.Peers = []string{"b", "c"} })
	b := tenant(t, "b", func(s *Spec) { s.Peers = []string{"a"} })
	c := tenant(t, "c", func(s *Spec) {
		s.NamespaceSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "team", Operator: metav1.LabelSelectorOpIn, Values: []string{"c", "shared"}}}}
	})
	broken, _ := Parse(&Object{ObjectMeta: metav1.ObjectMeta{Name: "d"}, Spec: Spec{NamespaceSelector: &metav1.LabelSelector{}}})
	dup := tenant(t, "a", func(s *Spec) { s.NamespaceSelector.MatchLabels = map[string]string{"x": "y"} })
	d := NewDirectory([]Tenant{c, b, a, broken, dup}, map[string]map[string]string{
		"team-a1":     {"tenant": "a"},
		"team-a2":     {"tenant": "a", "team": "a"},
		"team-b":      {"tenant": "b"},
		"team-c":      {"team": "c"},
		"both":        {"tenant": "b", "team": "shared"},
		"three":       {"tenant": "a", "team": "c", "x": "y"},
		"kube-system": {"kubernetes.io/metadata.name": "kube-system"},
		"default":     nil,
	})

	for ns, want := range map[string]Name{"team-a1": "a", "team-a2": "a", "team-b": "b", "team-c": "c"} {
		if got, ok := d.TenantOf(ns); !ok || got.Name != want {
			t.Errorf("TenantOf(%s) = %s, %v, want %s", ns, got.Name, ok, want)
		}
		if d.Platform(ns) || len(d.Conflicted(ns)) != 0 {
			t.Errorf("%s: Platform or Conflicted", ns)
		}
	}
	for _, ns := range []string{"kube-system", "default"} {
		if got, ok := d.TenantOf(ns); ok || !d.Platform(ns) || !d.Known(ns) {
			t.Errorf("%s: TenantOf = %s, %v; Platform = %v; want the platform's", ns, got.Name, ok, d.Platform(ns))
		}
	}
	if _, ok := d.TenantOf("nowhere"); ok || d.Platform("nowhere") || d.Known("nowhere") {
		t.Error("an unknown namespace is owned, known or the platform's")
	}

	if got := d.Conflicted("both"); !reflect.DeepEqual(got, []Name{"b", "c"}) {
		t.Errorf("Conflicted(both) = %v, want [b c]", got)
	}
	if _, ok := d.TenantOf("both"); ok || d.Platform("both") {
		t.Error("a conflicted namespace belongs to a tenant or the platform")
	}
	if got := d.Conflicted("three"); !reflect.DeepEqual(got, []Name{"a", "c"}) {
		t.Errorf("Conflicted(three) = %v, want [a c] (the duplicate a ignored)", got)
	}
	if got, want := d.Conflicts("c"), map[string][]Name{"both": {"b"}, "three": {"a"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("Conflicts(c) = %v, want %v", got, want)
	}
	if got := d.Conflicts("a"); !reflect.DeepEqual(got, map[string][]Name{"three": {"c"}}) {
		t.Errorf("Conflicts(a) = %v", got)
	}

	if got := d.Members("a"); !reflect.DeepEqual(got, []string{"team-a1", "team-a2"}) {
		t.Errorf("Members(a) = %v", got)
	}
	if got := d.Members("c"); !reflect.DeepEqual(got, []string{"team-c"}) {
		t.Errorf("Members(c) = %v, want team-c only (not the conflicted ones)", got)
	}
	if got := d.Members("d"); len(got) != 0 {
		t.Errorf("Members(d) = %v, want none: its selector is broken", got)
	}
	var names []Name
	for _, t := range d.Tenants() {
		names = append(names, t.Name)
	}
	if !slices.Equal(names, []Name{"a", "b", "c", "d"}) {
		t.Errorf("Tenants() = %v", names)
	}
	if got, ok := d.Tenant("a"); !ok || len(got.Peers) != 2 {
		t.Errorf("Tenant(a) = %+v, %v, want the first a", got, ok)
	}

	for _, tt := range []struct {
		a, b Name
		want bool
	}{
		{"a", "b", true}, {"b", "a", true},
		{"a", "c", false}, {"c", "a", false}, // a names c, c does not name a
		{"a", "a", false}, {"a", "nobody", false}, {"nobody", "a", false},
	} {
		if got := d.Peers(tt.a, tt.b); got != tt.want {
			t.Errorf("Peers(%s, %s) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestDirectoryZeroTenant(t *testing.T) {
	// A Tenant not built by Parse has no selector: it selects nothing rather than panicking.
	d := NewDirectory([]Tenant{{Name: "z"}}, map[string]map[string]string{"ns": {"a": "b"}})
	if _, ok := d.TenantOf("ns"); ok || !d.Platform("ns") {
		t.Error("a tenant without selector selected a namespace")
	}
}
