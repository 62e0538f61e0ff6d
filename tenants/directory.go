package tenants

import (
	"cmp"
	"maps"
	"slices"

	"k8s.io/apimachinery/pkg/labels"
)

// Directory knows the tenants and which namespace belongs to which. It is a value built from
// values and never changes; build a new one when a Tenant or a namespace's labels change.
// Its methods are safe for concurrent use.
type Directory struct {
	tenants map[Name]Tenant
	sorted  []Tenant
	// owner maps every namespace selected by exactly one tenant to it.
	owner map[string]Name
	// claims maps every namespace selected by several tenants to them, sorted.
	claims  map[string][]Name
	members map[Name][]string
	known   map[string]bool
	// bridges and hostDevices map every node interface granted as such to the tenants that
	// grant it, sorted: one tenant may use it only when it is the only one.
	bridges     map[string][]Name
	hostDevices map[string][]Name
}

// NewDirectory builds the directory of the tenants ts over the namespaces given by name with
// their labels. Of two tenants with the same name, the first is kept.
func NewDirectory(ts []Tenant, namespaces map[string]map[string]string) *Directory {
	d := &Directory{
		tenants: make(map[Name]Tenant, len(ts)),
		owner:   map[string]Name{},
		claims:  map[string][]Name{},
		members: map[Name][]string{},
		known:   make(map[string]bool, len(namespaces)),

		bridges:     map[string][]Name{},
		hostDevices: map[string][]Name{},
	}
	for _, t := range ts {
		if _, dup := d.tenants[t.Name]; dup {
			continue
		}
		if t.Selector == nil {
			t.Selector = labels.Nothing()
		}
		d.tenants[t.Name] = t
		d.sorted = append(d.sorted, t)
	}
	slices.SortFunc(d.sorted, func(a, b Tenant) int { return cmp.Compare(a.Name, b.Name) })
	for _, t := range d.sorted {
		for _, b := range t.NodeResources.Bridges {
			d.bridges[b] = append(d.bridges[b], t.Name)
		}
		for _, dev := range t.NodeResources.HostDevices {
			d.hostDevices[dev] = append(d.hostDevices[dev], t.Name)
		}
	}

	for ns, l := range namespaces {
		d.known[ns] = true
		var by []Name
		for _, t := range d.sorted {
			if t.Selector.Matches(labels.Set(l)) {
				by = append(by, t.Name)
			}
		}
		switch len(by) {
		case 0:
		case 1:
			d.owner[ns] = by[0]
			d.members[by[0]] = append(d.members[by[0]], ns)
		default:
			d.claims[ns] = by
		}
	}
	for _, m := range d.members {
		slices.Sort(m)
	}
	return d
}

// TenantOf returns the tenant namespace belongs to. It returns false for a namespace of the
// platform, for one unknown to the directory, and also for a conflicted one: check Conflicted
// before treating a namespace as the platform's (CheckPod does).
func (d *Directory) TenantOf(namespace string) (Tenant, bool) {
	n, ok := d.owner[namespace]
	if !ok {
		return Tenant{}, false
	}
	return d.tenants[n], true
}

// Platform reports whether namespace is known and selected by no tenant.
func (d *Directory) Platform(namespace string) bool {
	_, owned := d.owner[namespace]
	_, claimed := d.claims[namespace]
	return d.known[namespace] && !owned && !claimed
}

// Known reports whether namespace was among those the directory was built from. A caller
// that can see a namespace it does not know yet (an informer behind) may prefer to wait.
func (d *Directory) Known(namespace string) bool { return d.known[namespace] }

// Conflicted returns the tenants, sorted, that all select namespace, when more than one
// does: the namespace belongs to none of them and every access from it is denied.
func (d *Directory) Conflicted(namespace string) []Name { return slices.Clone(d.claims[namespace]) }

// Conflicts returns the namespaces that t selects along with other tenants, each with those
// other tenants: what t's NamespacesConflict condition reports.
func (d *Directory) Conflicts(t Name) map[string][]Name {
	out := map[string][]Name{}
	for ns, by := range d.claims {
		if slices.Contains(by, t) {
			out[ns] = slices.DeleteFunc(slices.Clone(by), func(n Name) bool { return n == t })
		}
	}
	return out
}

// Members returns the namespaces that belong to t, sorted. Namespaces t shares with another
// tenant are not among them.
func (d *Directory) Members(t Name) []string { return slices.Clone(d.members[t]) }

// Tenant returns the tenant named n.
func (d *Directory) Tenant(n Name) (Tenant, bool) {
	t, ok := d.tenants[n]
	return t, ok
}

// Tenants returns every tenant, sorted by name.
func (d *Directory) Tenants() []Tenant { return slices.Clone(d.sorted) }

// Peers reports whether tenants a and b, both known and distinct, name each other as peers.
func (d *Directory) Peers(a, b Name) bool {
	ta, okA := d.tenants[a]
	tb, okB := d.tenants[b]
	return okA && okB && a != b && slices.Contains(ta.Peers, b) && slices.Contains(tb.Peers, a)
}

// SRIOVPools returns the SR-IOV pools that any tenant lists, sorted: resource names whose
// devices are VFs, which a tenant's VF quota counts.
func (d *Directory) SRIOVPools() []string {
	var out []string
	for _, t := range d.sorted {
		for _, p := range t.SRIOVPools {
			if !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	slices.Sort(out)
	return out
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
