package tenants

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
)

// FuzzParse feeds arbitrary JSON to Parse, the way an informer (FromUnstructured) and a
// webhook (json.Unmarshal) would decode a Tenant. Parse must not panic, and whatever
// problems it finds, the Tenant must allow nothing the input did not list validly.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		`{}`, `{"spec":null}`, `{"metadata":{"name":"a"},"spec":{}}`,
		`{"metadata":{"name":"a"},"spec":{"namespaceSelector":{"matchLabels":{"tenant":"a"}},
		  "sharedNetworks":["infra/x","bad","a/b/c"],"vlans":["100-199","42","5000","0","7-3","x","1-4094"],
		  "sriov":{"pools":["loom.dev/a","b","kubernetes.io/x"],"vfQuota":-3},
		  "addressPools":[{"name":"p","cidr":"10.0.0.0/16"},{"name":"q","cidr":"10.0.1.0/24"},{"name":"r","cidr":"10.1.0.1/24","blockSize":40}],
		  "peers":["a","b","B"],"allowNetAdmin":true}}`,
		`{"metadata":{"name":"a"},"spec":{"namespaceSelector":{}}}`,
		`{"metadata":{"name":"a"},"spec":{"namespaceSelector":{"matchExpressions":[{"key":"k","operator":"In"}]}}}`,
		`{"metadata":{"name":"a"},"spec":{"namespaceSelector":{"matchExpressions":[{"key":"k","operator":"Exists"}]},"vlans":["0010-0020","4094"]}}`,
		`{"spec":{"vlans":[1,2]}}`, `{"spec":{"sriov":{"vfQuota":1e3}}}`, `[]`, `null`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var m map[string]any
		if json.Unmarshal(data, &m) == nil && m != nil {
			if o, err := FromUnstructured(&unstructured.Unstructured{Object: m}); err == nil {
				got, problems := Parse(o)
				checkNoWider(t, o, got, problems)
			}
		}
		var o Object
		if json.Unmarshal(data, &o) == nil {
			got, problems := Parse(&o)
			checkNoWider(t, &o, got, problems)
		}
	})
}

// vlanEntry is an independent reading of a valid spec.vlans entry.
var vlanEntry = regexp.MustCompile(`^([0-9]+)(?:-([0-9]+))?$`)

func referenceVLANs(entry string) (lo, hi int, ok bool) {
	m := vlanEntry.FindStringSubmatch(entry)
	if m == nil {
		return 0, 0, false
	}
	if m[2] == "" {
		m[2] = m[1]
	}
	lo, errLo := strconv.Atoi(m[1])
	hi, errHi := strconv.Atoi(m[2])
	return lo, hi, errLo == nil && errHi == nil && 1 <= lo && lo <= hi && hi <= 4094
}

func checkNoWider(t *testing.T, o *Object, got Tenant, problems []Problem) {
	t.Helper()
	hasProblem := func(field string) bool {
		return slices.ContainsFunc(problems, func(p Problem) bool { return p.Field == field })
	}
	for _, p := range problems {
		if p.Field == "" || p.Message == "" {
			t.Fatalf("problem without field or message: %+v", p)
		}
	}

	// VLANs: exactly the union of the valid entries, in sorted, disjoint ranges.
	var want, have [4096]bool
	for i, e := range o.Spec.VLANs {
		lo, hi, ok := referenceVLANs(e)
		if !ok {
			if !hasProblem(index("spec.vlans", i)) {
				t.Fatalf("vlans[%d] %q is invalid but has no problem", i, e)
			}
			continue
		}
		for v := lo; v <= hi; v++ {
			want[v] = true
		}
	}
	for i, r := range got.VLANs {
		if r.Min < 1 || r.Max > 4094 || r.Min > r.Max || (i > 0 && r.Min <= got.VLANs[i-1].Max+1) {
			t.Fatalf("VLANs %v are not sorted disjoint ranges within 1-4094", got.VLANs)
		}
		for v := r.Min; v <= r.Max; v++ {
			have[v] = true
		}
	}
	if want != have {
		t.Fatalf("VLANs %v differ from the valid entries of %q", got.VLANs, o.Spec.VLANs)
	}

	var pools []string
	var quota *int
	if o.Spec.SRIOV != nil {
		pools, quota = o.Spec.SRIOV.Pools, o.Spec.SRIOV.VFQuota
	}
	for _, p := range got.SRIOVPools {
		if !slices.Contains(pools, p) || !strings.Contains(p, "/") {
			t.Fatalf("pool %q not validly listed in %q", p, pools)
		}
	}
	switch {
	case quota == nil && got.VFQuota != -1:
		t.Fatalf("VFQuota = %d without a quota", got.VFQuota)
	case quota != nil && (got.VFQuota < 0 || got.VFQuota > max(*quota, 0)):
		t.Fatalf("VFQuota = %d from %d", got.VFQuota, *quota)
	}

	for _, ref := range got.SharedNetworks {
		if !slices.Contains(o.Spec.SharedNetworks, ref.String()) {
			t.Fatalf("shared network %s not listed in %q", ref, o.Spec.SharedNetworks)
		}
	}
	for i, p := range got.AddressPools {
		listed := slices.ContainsFunc(o.Spec.AddressPools, func(s AddressPoolSpec) bool {
			c, err := netip.ParsePrefix(s.CIDR)
			return err == nil && s.Name == p.Name && c == p.CIDR
		})
		if !listed || !p.CIDR.Addr().Is4() || p.CIDR != p.CIDR.Masked() || p.BlockSize < p.CIDR.Bits() || p.BlockSize > 32 {
			t.Fatalf("address pool %+v not validly listed in %+v", p, o.Spec.AddressPools)
		}
		for _, q := range got.AddressPools[:i] {
			if q.CIDR.Overlaps(p.CIDR) {
				t.Fatalf("address pools %s and %s overlap", q.CIDR, p.CIDR)
			}
		}
	}
	for _, p := range got.Peers {
		if !slices.Contains(o.Spec.Peers, string(p)) || string(p) == o.Name {
			t.Fatalf("peer %q not validly listed in %q", p, o.Spec.Peers)
		}
	}
	if got.AllowNetAdmin != o.Spec.AllowNetAdmin {
		t.Fatal("AllowNetAdmin changed")
	}

	if got.Selector == nil {
		t.Fatal("no selector")
	}
	if hasProblem("spec.namespaceSelector") {
		probe := labels.Set{}
		if s := o.Spec.NamespaceSelector; s != nil {
			for k, v := range s.MatchLabels {
				probe[k] = v
			}
		}
		if got.Selector.Matches(probe) || got.Selector.Matches(labels.Set{}) {
			t.Fatalf("a selector with a problem selects %v", probe)
		}
	} else if got.Selector.Empty() {
		t.Fatal("a selector without a problem selects every namespace")
	}
}

// FuzzNetworkOf feeds arbitrary configurations to NetworkOf. It must not panic, and every
// VLAN a plugin of the configuration sets must be among the VLANs it reports.
func FuzzNetworkOf(f *testing.F) {
	for _, seed := range []string{
		``, ` `, `{}`, `{"type":"sriov","vlan":100}`, `{"type":"vlan","vlanId":4094}`,
		`{"plugins":[{"type":"vlan","VLANID":3},{"type":"bridge","vlanTrunk":[{"id":5},{"minID":7,"maxID":9}]}]}`,
		`{"type":"sriov","vlan":"100"}`, `{"type":"sriov","vlan":1e3}`, `{"type":"sriov","vlan":1.0}`,
		`{"plugins":"x"}`, `{"plugins":[1]}`, `{"type":"ovs","trunk":[{"minID":4000,"maxID":4094}]}`, `[]`, `{"a":1}{}`,
	} {
		f.Add(seed, "loom.dev/pool_a")
	}
	f.Fuzz(func(t *testing.T, config, resourceName string) {
		n, err := NetworkOf(nad("ns", "net", config, map[string]string{ResourceNameAnnotation: resourceName}))
		if err != nil {
			return
		}
		if n.ResourceName != resourceName || n.Ref != (NetworkRef{"ns", "net"}) {
			t.Fatalf("NetworkOf() = %+v", n)
		}
		if strings.TrimSpace(config) == "" {
			if !n.NodeConfig || len(n.VLANs) != 0 {
				t.Fatalf("empty config: %+v", n)
			}
			return
		}
		for i, v := range n.VLANs {
			if v < 1 || v > 4094 || (i > 0 && v <= n.VLANs[i-1]) {
				t.Fatalf("VLANs %v are not sorted distinct IDs within 1-4094", n.VLANs)
			}
		}
		for _, v := range referenceConfigVLANs(t, config) {
			if !slices.Contains(n.VLANs, v) {
				t.Fatalf("VLAN %d of %s missing from %v", v, config, n.VLANs)
			}
		}
	})
}

// referenceConfigVLANs reads the "vlan" and "vlanId" keys of a configuration and its plugins
// as a Go plugin decoding into an int field would.
func referenceConfigVLANs(t *testing.T, config string) []int {
	dec := json.NewDecoder(bytes.NewReader([]byte(config)))
	var top map[string]json.RawMessage
	if dec.Decode(&top) != nil {
		t.Fatalf("NetworkOf accepted %q, which is not a JSON object", config)
	}
	objects := []map[string]json.RawMessage{top}
	var list struct {
		Plugins []map[string]json.RawMessage `json:"plugins"`
	}
	if json.Unmarshal([]byte(config), &list) == nil {
		objects = append(objects, list.Plugins...)
	}
	var out []int
	for _, obj := range objects {
		for k, raw := range obj {
			if !strings.EqualFold(k, "vlan") && !strings.EqualFold(k, "vlanId") {
				continue
			}
			var v int
			if json.Unmarshal(raw, &v) == nil && v != 0 {
				out = append(out, v)
			}
		}
	}
	return out
}
