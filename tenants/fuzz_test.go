package tenants

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"reflect"
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
		  "peers":["a","b","B"],"allowNetAdmin":true,
		  "nodeResources":{"masters":["eth0","loom.vxlan","a/b",""],"bridges":["cni0","br0"],"hostDevices":["ens1"],
		  "hostPorts":["30000-30100","4789","0","65536","5-1"],"plugins":["ptp","../x","bridge","loom"]}}}`,
		`{"metadata":{"name":"a"},"spec":{"nodeResources":{"masters":"eth0","hostPorts":[30000]}}}`,
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
	checkNodeResourcesNoWider(t, o.Spec.NodeResources, got.NodeResources)
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

// ifnamePattern is an independent reading of a Linux interface name Loom may grant.
var ifnamePattern = regexp.MustCompile(`^[^/:\s\x00]{1,15}$`)

// checkNodeResourcesNoWider checks that every node resource granted is listed in the spec,
// is what it must be (an interface name not Loom's, a port range within 1-65535 from a valid
// entry, a plain plugin name Loom does not know) and that ranges are sorted and disjoint.
func checkNodeResourcesNoWider(t *testing.T, spec *NodeResourcesSpec, got NodeResources) {
	t.Helper()
	if spec == nil {
		if !reflect.DeepEqual(got, NodeResources{}) {
			t.Fatalf("NodeResources %+v without a spec", got)
		}
		return
	}
	for _, l := range []struct {
		listed, granted []string
	}{{spec.Masters, got.Masters}, {spec.Bridges, got.Bridges}, {spec.HostDevices, got.HostDevices}} {
		for _, name := range l.granted {
			if !slices.Contains(l.listed, name) || !ifnamePattern.MatchString(name) || name == "." || name == ".." ||
				name == "lo" || name == "cni0" || strings.HasPrefix(name, "loom") {
				t.Fatalf("interface %q granted from %q", name, l.listed)
			}
		}
	}
	var want, have [65536]bool
	for _, e := range spec.HostPorts {
		m := regexp.MustCompile(`^([0-9]{1,5})(?:-([0-9]{1,5}))?$`).FindStringSubmatch(e)
		if m == nil {
			continue
		}
		if m[2] == "" {
			m[2] = m[1]
		}
		lo, _ := strconv.Atoi(m[1])
		hi, _ := strconv.Atoi(m[2])
		if lo < 1 || hi > 65535 || lo > hi {
			continue
		}
		for p := lo; p <= hi; p++ {
			want[p] = true
		}
	}
	for i, r := range got.HostPorts {
		if r.Min < 1 || r.Max > 65535 || r.Min > r.Max || (i > 0 && r.Min <= got.HostPorts[i-1].Max+1) {
			t.Fatalf("host ports %v are not sorted disjoint ranges within 1-65535", got.HostPorts)
		}
		for p := r.Min; p <= r.Max; p++ {
			have[p] = true
		}
	}
	if want != have {
		t.Fatalf("host ports %v differ from the valid entries of %q", got.HostPorts, spec.HostPorts)
	}
	for _, p := range got.Plugins {
		if !slices.Contains(spec.Plugins, p) || !plainName.MatchString(p) || strings.Contains(p, "..") || p == "loom" ||
			slices.Contains([]string{"macvlan", "ipvlan", "vlan", "macvtap", "bridge", "ovs", "host-device", "portmap"}, p) {
			t.Fatalf("plugin %q granted from %q", p, spec.Plugins)
		}
	}
}

// plainName is an independent reading of a plain plugin name.
var plainName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// FuzzCheckNetworkNode feeds arbitrary configurations of a NAD in the namespace of a tenant
// granted nothing of the nodes. Whatever CheckNetwork allows must, as read independently
// (encoding/json, keys as written), have only plain plugin types that keep to the pod: no
// plugin of a type that moves, bridges or takes a node device, maps a host port or is unknown.
func FuzzCheckNetworkNode(f *testing.F) {
	for _, seed := range []string{
		`{"type":"macvlan","master":"eth0"}`, `{"type":"macvlan","master":"net1","linkInContainer":true}`,
		`{"plugins":[{"type":"bridge"},{"type":"portmap","runtimeConfig":{"portMappings":[{"hostPort":4789}]}}]}`,
		`{"type":"tuning","delegates":[{"type":"host-device","device":"eth0"}]}`, `{"type":"../x"}`, `{"TYPE":"/x"}`,
		`{"type":"dummy","ipam":{"type":"host-local","dataDir":"/"}}`, `{"type":"sriov","deviceID":"0000:00:01.0"}`,
		`{"plugins":[{"type":"loopback"},{"type":"sbr"}]}`, `{"type":"dummy","delegate":{"type":"ptp"}}`,
	} {
		f.Add(seed)
	}
	d := NewDirectory([]Tenant{{Name: "a", Selector: labels.SelectorFromSet(labels.Set{"t": "a"}), VFQuota: -1}},
		map[string]map[string]string{"ns": {"t": "a"}})
	podOnly := []string{"loopback", "dummy", "tuning", "sbr", "vrf", "bandwidth", "static", "host-local", "dhcp", "loom-ipam", "sriov", "loom-sriov", "ib-sriov"}
	f.Fuzz(func(t *testing.T, config string) {
		n, err := NetworkOf(nad("ns", "net", config, nil))
		if err != nil || n.NodeConfig {
			return
		}
		if d.CheckNetwork(n) != nil {
			return
		}
		var top map[string]any
		if json.Unmarshal([]byte(config), &top) != nil {
			t.Fatalf("allowed %q, which encoding/json does not read", config)
		}
		var visit func(obj map[string]any, path string)
		visit = func(obj map[string]any, path string) {
			if typ, ok := obj["type"]; ok {
				s, isString := typ.(string)
				has := func(keys ...string) bool {
					return slices.ContainsFunc(keys, func(k string) bool { _, ok := obj[k]; return ok })
				}
				inPod := slices.Contains([]string{"macvlan", "ipvlan", "vlan", "macvtap"}, s) && obj["linkInContainer"] == true
				// portmap with its ports from the annotation, host-device with its device from a pool
				fromPod := (s == "portmap" && !has("conditionsV4", "conditionsV6", "externalSetMarkChain")) ||
					(s == "host-device" && !has("device", "hwaddr", "kernelpath", "pciBusID"))
				if !isString || !plainName.MatchString(s) || (!slices.Contains(podOnly, s) && !inPod && !fromPod) {
					t.Fatalf("allowed %s type %v in %s", path, typ, config)
				}
				if rc, ok := obj["runtimeConfig"]; ok {
					m, _ := rc.(map[string]any)
					for k, v := range m {
						if l, _ := v.([]any); s != "portmap" || k != "portMappings" || len(l) > 0 {
							t.Fatalf("allowed %s runtimeConfig %v in %s", path, rc, config)
						}
					}
				}
			}
			for _, k := range []string{"ipam", "delegate"} {
				if o, ok := obj[k].(map[string]any); ok {
					visit(o, path+"."+k)
				}
			}
			for _, k := range []string{"plugins", "delegates"} {
				if l, ok := obj[k].([]any); ok && (k != "plugins" || path == "") {
					for i, item := range l {
						if o, ok := item.(map[string]any); ok {
							visit(o, path+"."+k+"["+strconv.Itoa(i)+"]")
						}
					}
				}
			}
		}
		visit(top, "")
	})
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
