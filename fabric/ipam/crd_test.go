package ipam

import (
	"io/fs"
	"reflect"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/loom-cni/loom/deployments/crds"
)

// TestCRD checks that the IPBlock CustomResourceDefinition, as the simulated cluster and
// kubectl install it, defines the resource this package reads and writes, with a schema
// that is structural and matches the Go types field for field.
func TestCRD(t *testing.T) {
	b, err := fs.ReadFile(crds.Manifests, "loom.dev_ipblocks.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var crd map[string]any
	if err := yaml.UnmarshalStrict(b, &crd); err != nil {
		t.Fatal(err)
	}
	get := func(path string) any {
		t.Helper()
		var v any = crd
		for _, k := range strings.Split(path, ".") {
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("%s: %s is not an object", path, k)
			}
			v = m[k]
		}
		return v
	}
	for path, want := range map[string]any{
		"apiVersion":          "apiextensions.k8s.io/v1",
		"kind":                "CustomResourceDefinition",
		"metadata.name":       GVR.Resource + "." + Group,
		"spec.group":          Group,
		"spec.scope":          "Cluster",
		"spec.names.kind":     Kind,
		"spec.names.plural":   GVR.Resource,
		"spec.names.singular": "ipblock",
		"spec.names.listKind": Kind + "List",
	} {
		if got := get(path); got != want {
			t.Errorf("%s = %v, want %v", path, got, want)
		}
	}
	if short := get("spec.names.shortNames").([]any); !slices.Contains(short, any("ipb")) {
		t.Errorf("shortNames = %v, want ipb", short)
	}

	versions := get("spec.versions").([]any)
	if len(versions) != 1 {
		t.Fatalf("%d versions, want 1", len(versions))
	}
	v := versions[0].(map[string]any)
	if v["name"] != Version || v["served"] != true || v["storage"] != true {
		t.Errorf("version = %v %v %v, want %s served and stored", v["name"], v["served"], v["storage"], Version)
	}
	var columns []string
	for _, c := range v["additionalPrinterColumns"].([]any) {
		c := c.(map[string]any)
		columns = append(columns, c["name"].(string)+"="+c["jsonPath"].(string))
	}
	wantColumns := []string{"Node=.spec.node", "Pool=.spec.pool", "CIDR=.spec.cidr", "Tenant=.spec.tenant", "Age=.metadata.creationTimestamp"}
	if !slices.Equal(columns, wantColumns) {
		t.Errorf("printer columns = %v, want %v", columns, wantColumns)
	}

	root := v["schema"].(map[string]any)["openAPIV3Schema"].(map[string]any)
	checkStructural(t, "openAPIV3Schema", root)
	spec := root["properties"].(map[string]any)["spec"].(map[string]any)
	checkRequired(t, "spec", spec, "pool", "cidr", "node")
	checkFields(t, "spec", spec, reflect.TypeFor[IPBlockSpec]())
	items := spec["properties"].(map[string]any)["allocations"].(map[string]any)["items"].(map[string]any)
	checkRequired(t, "allocations[]", items, "ip", "owner", "since")
	checkFields(t, "allocations[]", items, reflect.TypeFor[Allocation]())
	owner := items["properties"].(map[string]any)["owner"].(map[string]any)
	checkRequired(t, "owner", owner, "kind")
	checkFields(t, "owner", owner, reflect.TypeFor[Owner]())
	kinds := owner["properties"].(map[string]any)["kind"].(map[string]any)["enum"]
	if !reflect.DeepEqual(kinds, []any{string(OwnerPod), string(OwnerNode)}) {
		t.Errorf("owner kind enum = %v, want %s and %s", kinds, OwnerPod, OwnerNode)
	}
}

// checkStructural checks what makes a schema structural: every node has a type, and
// objects other than metadata list their properties.
func checkStructural(t *testing.T, path string, s map[string]any) {
	t.Helper()
	if _, ok := s["type"].(string); !ok {
		t.Errorf("%s has no type", path)
	}
	props, _ := s["properties"].(map[string]any)
	if s["type"] == "object" && len(props) == 0 && path != "openAPIV3Schema.metadata" {
		t.Errorf("%s is an object without properties", path)
	}
	for name, p := range props {
		checkStructural(t, path+"."+name, p.(map[string]any))
	}
	if items, ok := s["items"].(map[string]any); ok {
		checkStructural(t, path+"[]", items)
	}
}

func checkRequired(t *testing.T, path string, s map[string]any, want ...string) {
	t.Helper()
	var got []string
	for _, r := range s["required"].([]any) {
		got = append(got, r.(string))
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s requires %v, want %v", path, got, want)
	}
}

// checkFields checks that the schema's properties are exactly the JSON fields of typ.
func checkFields(t *testing.T, path string, s map[string]any, typ reflect.Type) {
	t.Helper()
	var fields, props []string
	for f := range typ.Fields() {
		fields = append(fields, strings.Split(f.Tag.Get("json"), ",")[0])
	}
	for name := range s["properties"].(map[string]any) {
		props = append(props, name)
	}
	slices.Sort(fields)
	slices.Sort(props)
	if !slices.Equal(fields, props) {
		t.Errorf("%s has properties %v, want the fields of %s: %v", path, props, typ, fields)
	}
}
