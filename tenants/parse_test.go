package tenants

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

func ptr[T any](v T) *T { return &v }

// validSpec is a spec with every field set and no problem.
func validSpec() Spec {
	return Spec{
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tenant": "a"}},
		SharedNetworks:    []string{"shared/net-x", "infra/storage.v1"},
		VLANs:             []string{"100-199", "42"},
		SRIOV:             &SRIOVSpec{Pools: []string{"loom.dev/sriov_net_a"}, VFQuota: ptr(4)},
		AddressPools:      []AddressPoolSpec{{Name: "a-main", CIDR: "10.244.16.0/20"}, {Name: "a-big", CIDR: "10.8.0.0/16", BlockSize: 24}},
		Peers:             []string{"b"},
		AllowNetAdmin:     true,
	}
}

func TestParseValid(t *testing.T) {
	o := &Object{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Spec: validSpec()}
	got, problems := Parse(o)
	if len(problems) != 0 {
		t.Fatalf("Parse() problems = %v, want none", problems)
	}
	want := Tenant{
		Name:           "a",
		SharedNetworks: []NetworkRef{{"shared", "net-x"}, {"infra", "storage.v1"}},
		VLANs:          []VLANRange{{42, 42}, {100, 199}},
		SRIOVPools:     []string{"loom.dev/sriov_net_a"},
		VFQuota:        4,
		AddressPools: []AddressPool{
			{Name: "a-main", CIDR: netip.MustParsePrefix("10.244.16.0/20"), BlockSize: 26},
			{Name: "a-big", CIDR: netip.MustParsePrefix("10.8.0.0/16"), BlockSize: 24},
		},
		Peers:         []Name{"b"},
		AllowNetAdmin: true,
	}
	sel := got.Selector
	got.Selector = nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Parse() =\n%+v\nwant\n%+v", got, want)
	}
	if !sel.Matches(labels.Set{"tenant": "a"}) || sel.Matches(labels.Set{"tenant": "b"}) {
		t.Errorf("selector %v does not select tenant=a only", sel)
	}
}

func TestParseDefaults(t *testing.T) {
	o := &Object{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Spec: Spec{
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tenant": "a"}},
		SRIOV:             &SRIOVSpec{Pools: []string{"loom.dev/p"}},
		AddressPools:      []AddressPoolSpec{{Name: "tiny", CIDR: "10.0.0.0/28"}},
		VLANs:             []string{"10-20", "15-30", "31", "40-40", "0010"},
		SharedNetworks:    []string{"x/y", "x/y"},
		Peers:             []string{"b", "b"},
	}}
	got, problems := Parse(o)
	if len(problems) != 0 {
		t.Fatalf("Parse() problems = %v, want none", problems)
	}
	if got.VFQuota != -1 {
		t.Errorf("VFQuota = %d, want -1 (no limit) when left out", got.VFQuota)
	}
	if got.AddressPools[0].BlockSize != 28 {
		t.Errorf("block size of a /28 = %d, want 28 (the CIDR's own length)", got.AddressPools[0].BlockSize)
	}
	if want := []VLANRange{{10, 31}, {40, 40}}; !reflect.DeepEqual(got.VLANs, want) {
		t.Errorf("VLANs = %v, want merged %v", got.VLANs, want)
	}
	if len(got.SharedNetworks) != 1 || len(got.Peers) != 1 {
		t.Errorf("duplicates kept: %v %v", got.SharedNetworks, got.Peers)
	}
	if none, _ := Parse(&Object{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Spec: Spec{
		NamespaceSelector: o.Spec.NamespaceSelector}}); none.VFQuota != -1 || len(none.SRIOVPools) != 0 {
		t.Errorf("without sriov: pools %v quota %d, want none and -1", none.SRIOVPools, none.VFQuota)
	}
}

// TestParseProblems checks every problem Parse reports, and that each leaves the entry out.
func TestParseProblems(t *testing.T) {
	tests := []struct {
		name   string
		edit   func(o *Object)
		field  string
		msg    string // a part of the message
		verify func(t *testing.T, got Tenant)
	}{
		{name: "name not a label", edit: func(o *Object) { o.Name = "a.b" }, field: "metadata.name", msg: `"a.b" is not a DNS label`},
		{
			name: "selector missing", edit: func(o *Object) { o.Spec.NamespaceSelector = nil },
			field: "spec.namespaceSelector", msg: "missing", verify: selectsNothing,
		},
		{
			name: "selector empty", edit: func(o *Object) { o.Spec.NamespaceSelector = &metav1.LabelSelector{} },
			field: "spec.namespaceSelector", msg: "would select every namespace", verify: selectsNothing,
		},
		{
			name: "selector bad operator",
			edit: func(o *Object) {
				o.Spec.NamespaceSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "x", Operator: "Near"}}
			},
			field: "spec.namespaceSelector", msg: "not a valid label selector", verify: selectsNothing,
		},
		{
			name:  "selector bad key",
			edit:  func(o *Object) { o.Spec.NamespaceSelector.MatchLabels = map[string]string{"bad key": "x"} },
			field: "spec.namespaceSelector", msg: "not a valid label selector", verify: selectsNothing,
		},
		{
			name: "selector In without values",
			edit: func(o *Object) {
				o.Spec.NamespaceSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "x", Operator: metav1.LabelSelectorOpIn}}
			},
			field: "spec.namespaceSelector", msg: "not a valid label selector", verify: selectsNothing,
		},
		{
			name: "shared network without namespace", edit: func(o *Object) { o.Spec.SharedNetworks[1] = "net-y" },
			field: "spec.sharedNetworks[1]", msg: `"net-y" is not namespace/name`,
			verify: func(t *testing.T, got Tenant) {
				if !reflect.DeepEqual(got.SharedNetworks, []NetworkRef{{"shared", "net-x"}}) {
					t.Errorf("SharedNetworks = %v, want the valid one only", got.SharedNetworks)
				}
			},
		},
		{name: "shared network bad namespace", edit: func(o *Object) { o.Spec.SharedNetworks[0] = "Shared/x" }, field: "spec.sharedNetworks[0]", msg: "not a DNS label"},
		{name: "shared network bad name", edit: func(o *Object) { o.Spec.SharedNetworks[0] = "shared/x_y" }, field: "spec.sharedNetworks[0]", msg: "not a DNS subdomain"},
		{name: "shared network three parts", edit: func(o *Object) { o.Spec.SharedNetworks[0] = "a/b/c" }, field: "spec.sharedNetworks[0]", msg: "not a DNS subdomain"},
		{
			name: "vlan out of range", edit: func(o *Object) { o.Spec.VLANs[1] = "5000" },
			field: "spec.vlans[1]", msg: `"5000" is outside 1-4094`,
			verify: func(t *testing.T, got Tenant) {
				if !reflect.DeepEqual(got.VLANs, []VLANRange{{100, 199}}) {
					t.Errorf("VLANs = %v, want the valid range only", got.VLANs)
				}
			},
		},
		{name: "vlan zero", edit: func(o *Object) { o.Spec.VLANs[1] = "0" }, field: "spec.vlans[1]", msg: "outside 1-4094"},
		{name: "vlan 4095", edit: func(o *Object) { o.Spec.VLANs[1] = "4000-4095" }, field: "spec.vlans[1]", msg: "outside 1-4094"},
		{name: "vlan huge", edit: func(o *Object) { o.Spec.VLANs[1] = "99999999999999999999999" }, field: "spec.vlans[1]", msg: "outside 1-4094"},
		{name: "vlan reversed", edit: func(o *Object) { o.Spec.VLANs[0] = "199-100" }, field: "spec.vlans[0]", msg: "ends before it starts"},
		{name: "vlan word", edit: func(o *Object) { o.Spec.VLANs[0] = "all" }, field: "spec.vlans[0]", msg: "not a VLAN ID or range"},
		{name: "vlan negative", edit: func(o *Object) { o.Spec.VLANs[0] = "-5" }, field: "spec.vlans[0]", msg: "not a VLAN ID or range"},
		{name: "vlan open range", edit: func(o *Object) { o.Spec.VLANs[0] = "100-" }, field: "spec.vlans[0]", msg: "not a VLAN ID or range"},
		{name: "vlan spaces", edit: func(o *Object) { o.Spec.VLANs[0] = "100 - 199" }, field: "spec.vlans[0]", msg: "not a VLAN ID or range"},
		{name: "vlan plus", edit: func(o *Object) { o.Spec.VLANs[0] = "+100" }, field: "spec.vlans[0]", msg: "not a VLAN ID or range"},
		{name: "vlan two dashes", edit: func(o *Object) { o.Spec.VLANs[0] = "1-2-3" }, field: "spec.vlans[0]", msg: "not a VLAN ID or range"},
		{
			name: "sriov pool without domain", edit: func(o *Object) { o.Spec.SRIOV.Pools = []string{"sriov_net_a"} },
			field: "spec.sriov.pools[0]", msg: "not a resource name",
			verify: func(t *testing.T, got Tenant) {
				if len(got.SRIOVPools) != 0 {
					t.Errorf("SRIOVPools = %v, want none", got.SRIOVPools)
				}
			},
		},
		{name: "sriov pool kubernetes.io", edit: func(o *Object) { o.Spec.SRIOV.Pools = []string{"kubernetes.io/vf"} }, field: "spec.sriov.pools[0]", msg: "kubernetes.io domain"},
		{name: "sriov pool bad name", edit: func(o *Object) { o.Spec.SRIOV.Pools = []string{"loom.dev/a b"} }, field: "spec.sriov.pools[0]", msg: "not a resource name"},
		{
			name: "vf quota negative", edit: func(o *Object) { o.Spec.SRIOV.VFQuota = ptr(-1) },
			field: "spec.sriov.vfQuota", msg: "-1 is negative",
			verify: func(t *testing.T, got Tenant) {
				if got.VFQuota != 0 {
					t.Errorf("VFQuota = %d, want 0", got.VFQuota)
				}
			},
		},
		{
			name: "pool bad name", edit: func(o *Object) { o.Spec.AddressPools[0].Name = "A" },
			field: "spec.addressPools[0].name", msg: `"A" is not a DNS label`,
			verify: func(t *testing.T, got Tenant) {
				if len(got.AddressPools) != 1 || got.AddressPools[0].Name != "a-big" {
					t.Errorf("AddressPools = %v, want a-big only", got.AddressPools)
				}
			},
		},
		{name: "pool bad cidr", edit: func(o *Object) { o.Spec.AddressPools[0].CIDR = "10.244.16.0" }, field: "spec.addressPools[0].cidr", msg: "not a CIDR"},
		{name: "pool ipv6", edit: func(o *Object) { o.Spec.AddressPools[0].CIDR = "fd00::/64" }, field: "spec.addressPools[0].cidr", msg: "not IPv4"},
		{name: "pool host bits", edit: func(o *Object) { o.Spec.AddressPools[0].CIDR = "10.244.16.1/20" }, field: "spec.addressPools[0].cidr", msg: "use 10.244.16.0/20"},
		{name: "pool too small", edit: func(o *Object) { o.Spec.AddressPools[0].CIDR = "10.244.16.0/31" }, field: "spec.addressPools[0].cidr", msg: "too small"},
		{name: "block larger than pool", edit: func(o *Object) { o.Spec.AddressPools[0].BlockSize = 19 }, field: "spec.addressPools[0].blockSize", msg: "do not fit"},
		{name: "block over 32", edit: func(o *Object) { o.Spec.AddressPools[0].BlockSize = 33 }, field: "spec.addressPools[0].blockSize", msg: "do not fit"},
		{name: "block too large", edit: func(o *Object) { o.Spec.AddressPools[1].BlockSize = 20 }, field: "spec.addressPools[1].blockSize", msg: "too large"},
		{name: "too many blocks", edit: func(o *Object) { o.Spec.AddressPools[1].CIDR, o.Spec.AddressPools[1].BlockSize = "10.0.0.0/8", 32 }, field: "spec.addressPools[1].blockSize", msg: "more than 1048576 blocks"},
		{name: "pool name twice", edit: func(o *Object) { o.Spec.AddressPools[1].Name = "a-main" }, field: "spec.addressPools[1].name", msg: "already the name"},
		{name: "pools overlap", edit: func(o *Object) { o.Spec.AddressPools[1].CIDR = "10.244.0.0/16" }, field: "spec.addressPools[1].cidr", msg: "overlaps pool a-main"},
		{
			name: "peer not a name", edit: func(o *Object) { o.Spec.Peers = []string{"B"} },
			field: "spec.peers[0]", msg: "not a tenant name",
			verify: func(t *testing.T, got Tenant) {
				if len(got.Peers) != 0 {
					t.Errorf("Peers = %v, want none", got.Peers)
				}
			},
		},
		{name: "peer is itself", edit: func(o *Object) { o.Spec.Peers = []string{"b", "a"} }, field: "spec.peers[1]", msg: "the tenant itself"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := &Object{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Spec: validSpec()}
			tt.edit(o)
			got, problems := Parse(o)
			if len(problems) != 1 {
				t.Fatalf("Parse() problems = %v, want exactly one", problems)
			}
			p := problems[0]
			if p.Field != tt.field || !strings.Contains(p.Message, tt.msg) {
				t.Errorf("problem = %q, want field %s and a message with %q", p, tt.field, tt.msg)
			}
			if p.Error() != p.Field+": "+p.Message || p.String() != p.Error() {
				t.Errorf("Error() = %q, String() = %q", p.Error(), p.String())
			}
			if tt.verify != nil {
				tt.verify(t, got)
			}
		})
	}
}

func selectsNothing(t *testing.T, got Tenant) {
	t.Helper()
	for _, l := range []labels.Set{nil, {}, {"tenant": "a"}, {"x": "y"}} {
		if got.Selector.Matches(l) {
			t.Errorf("selector %v selects %v, want nothing", got.Selector, l)
		}
	}
}

func TestVLANRange(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want VLANRange
	}{{"1", VLANRange{1, 1}}, {"4094", VLANRange{4094, 4094}}, {"1-4094", VLANRange{1, 4094}}, {"007-08", VLANRange{7, 8}}} {
		got, err := ParseVLANRange(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseVLANRange(%q) = %v, %v, want %v", tt.in, got, err, tt.want)
		}
	}
	r := VLANRange{100, 199}
	for v, want := range map[int]bool{99: false, 100: true, 150: true, 199: true, 200: false} {
		if r.Contains(v) != want {
			t.Errorf("%v.Contains(%d) = %v", r, v, !want)
		}
	}
	if r.String() != "100-199" || (VLANRange{42, 42}).String() != "42" {
		t.Errorf("String() = %q, %q", r, VLANRange{42, 42})
	}
}

func TestConditions(t *testing.T) {
	ok := ValidCondition(3, nil)
	if ok.Type != ConditionValid || ok.Status != metav1.ConditionTrue || ok.ObservedGeneration != 3 {
		t.Errorf("ValidCondition(no problems) = %+v", ok)
	}
	bad := ValidCondition(4, []Problem{{"spec.vlans[1]", `"5000" is outside 1-4094`}, {"spec.peers[0]", "x"}})
	if bad.Status != metav1.ConditionFalse || bad.Reason != ReasonInvalidSpec ||
		!strings.Contains(bad.Message, `spec.vlans[1]: "5000" is outside 1-4094; spec.peers[0]: x`) {
		t.Errorf("ValidCondition(problems) = %+v", bad)
	}
	long := ValidCondition(1, []Problem{{"spec.vlans[0]", strings.Repeat("é", 10000)}})
	if len(long.Message) > maxMessage || !strings.HasSuffix(long.Message, "…") || !strings.HasPrefix(long.Message, "spec.vlans[0]: é") {
		t.Errorf("long message: %d bytes, ends %q", len(long.Message), long.Message[len(long.Message)-8:])
	}

	none := NamespacesConflictCondition(1, nil)
	if none.Type != ConditionNamespacesConflict || none.Status != metav1.ConditionFalse {
		t.Errorf("NamespacesConflictCondition(none) = %+v", none)
	}
	c := NamespacesConflictCondition(1, map[string][]Name{"z": {"b"}, "y": {"b", "c"}})
	if c.Status != metav1.ConditionTrue ||
		!strings.HasPrefix(c.Message, "namespace y is also selected by b, c; namespace z is also selected by b;") {
		t.Errorf("NamespacesConflictCondition = %+v", c)
	}
}

func TestUnstructuredRoundTrip(t *testing.T) {
	o := &Object{ObjectMeta: metav1.ObjectMeta{Name: "a", ResourceVersion: "7"}, Spec: validSpec(),
		Status: Status{Namespaces: []string{"team-a"}, Pods: 3, Addresses: 4,
			Conditions: []metav1.Condition{ValidCondition(1, nil)}}}
	u, err := o.ToUnstructured()
	if err != nil {
		t.Fatal(err)
	}
	if u.GetAPIVersion() != "loom.dev/v1alpha1" || u.GetKind() != "Tenant" || u.GetName() != "a" {
		t.Errorf("ToUnstructured() = %s %s %s", u.GetAPIVersion(), u.GetKind(), u.GetName())
	}
	if o.APIVersion != "" {
		t.Errorf("ToUnstructured changed its receiver")
	}
	back, err := FromUnstructured(u)
	if err != nil {
		t.Fatal(err)
	}
	o.APIVersion, o.Kind = "loom.dev/v1alpha1", "Tenant"
	if !reflect.DeepEqual(back, o) {
		t.Errorf("round trip:\n%+v\nwant\n%+v", back, o)
	}
	if _, err := FromUnstructured(o); err == nil {
		t.Error("FromUnstructured(*Object) succeeded, want an error")
	}
	u.Object["spec"] = map[string]any{"vlans": "100"}
	if _, err := FromUnstructured(u); err == nil {
		t.Error("FromUnstructured(vlans: string) succeeded, want an error")
	}
}
