package tenants

import (
	"io/fs"
	"reflect"
	"slices"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/loom-cni/loom/deployments/crds"
)

// TestCRDs decodes every CustomResourceDefinition the simulated cluster and kubectl install
// and checks what makes the API server accept one: identity, versions and a structural
// schema.
func TestCRDs(t *testing.T) {
	files, err := fs.Glob(crds.Manifests, "*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			crd := readCRD(t, f)
			if crd.get(t, "apiVersion") != "apiextensions.k8s.io/v1" || crd.get(t, "kind") != "CustomResourceDefinition" {
				t.Fatalf("not an apiextensions.k8s.io/v1 CustomResourceDefinition")
			}
			group, plural := crd.get(t, "spec.group"), crd.get(t, "spec.names.plural")
			if name := crd.get(t, "metadata.name"); name != plural.(string)+"."+group.(string) {
				t.Errorf("metadata.name = %v, want %v.%v", name, plural, group)
			}
			if scope := crd.get(t, "spec.scope"); scope != "Cluster" && scope != "Namespaced" {
				t.Errorf("scope = %v", scope)
			}
			stored := 0
			for _, v := range crd.get(t, "spec.versions").([]any) {
				v := v.(map[string]any)
				if v["storage"] == true {
					stored++
				}
				schema := v["schema"].(map[string]any)["openAPIV3Schema"].(map[string]any)
				checkStructural(t, "openAPIV3Schema", schema)
			}
			if stored != 1 {
				t.Errorf("%d stored versions, want 1", stored)
			}
		})
	}
}

func TestTenantCRD(t *testing.T) {
	crd := readCRD(t, "loom.dev_tenants.yaml")
	for path, want := range map[string]any{
		"metadata.name":       GVR.Resource + "." + Group,
		"spec.group":          Group,
		"spec.scope":          "Cluster",
		"spec.names.kind":     Kind,
		"spec.names.plural":   GVR.Resource,
		"spec.names.singular": "tenant",
		"spec.names.listKind": Kind + "List",
	} {
		if got := crd.get(t, path); got != want {
			t.Errorf("%s = %v, want %v", path, got, want)
		}
	}
	versions := crd.get(t, "spec.versions").([]any)
	if len(versions) != 1 {
		t.Fatalf("%d versions, want 1", len(versions))
	}
	v := versions[0].(map[string]any)
	if v["name"] != Version || v["served"] != true || v["storage"] != true {
		t.Errorf("version %v served %v stored %v, want %s served and stored", v["name"], v["served"], v["storage"], Version)
	}
	if _, ok := v["subresources"].(map[string]any)["status"]; !ok {
		t.Error("no status subresource")
	}
	var columns []string
	for _, c := range v["additionalPrinterColumns"].([]any) {
		c := c.(map[string]any)
		columns = append(columns, c["name"].(string)+"="+c["jsonPath"].(string))
	}
	wantColumns := []string{"Namespaces=.status.namespaces", "Pods=.status.pods", "Addresses=.status.addresses",
		`Valid=.status.conditions[?(@.type=="Valid")].status`, "Age=.metadata.creationTimestamp"}
	if !slices.Equal(columns, wantColumns) {
		t.Errorf("printer columns = %v, want %v", columns, wantColumns)
	}
	props := v["schema"].(map[string]any)["openAPIV3Schema"].(map[string]any)["properties"].(map[string]any)
	checkMatches(t, "spec", props["spec"].(map[string]any), reflect.TypeFor[Spec]())
	checkMatches(t, "status", props["status"].(map[string]any), reflect.TypeFor[Status]())
}

func TestMultiNetworkPolicyCRD(t *testing.T) {
	crd := readCRD(t, "k8s.cni.cncf.io_multi-networkpolicies.yaml")
	for path, want := range map[string]any{
		"metadata.name":       "multi-networkpolicies.k8s.cni.cncf.io",
		"spec.group":          "k8s.cni.cncf.io",
		"spec.scope":          "Namespaced",
		"spec.names.kind":     "MultiNetworkPolicy",
		"spec.names.plural":   "multi-networkpolicies",
		"spec.names.singular": "multi-networkpolicy",
	} {
		if got := crd.get(t, path); got != want {
			t.Errorf("%s = %v, want %v", path, got, want)
		}
	}
	if short := crd.get(t, "spec.names.shortNames").([]any); !slices.Equal(short, []any{"multi-policy"}) {
		t.Errorf("shortNames = %v, want [multi-policy]", short)
	}
	versions := crd.get(t, "spec.versions").([]any)
	if len(versions) != 1 {
		t.Fatalf("%d versions, want 1", len(versions))
	}
	v := versions[0].(map[string]any)
	if v["name"] != "v1beta1" || v["served"] != true || v["storage"] != true {
		t.Errorf("version %v served %v stored %v, want v1beta1 served and stored", v["name"], v["served"], v["storage"])
	}
	spec := v["schema"].(map[string]any)["openAPIV3Schema"].(map[string]any)["properties"].(map[string]any)["spec"].(map[string]any)
	// The spec is a NetworkPolicy's, field for field.
	checkMatches(t, "spec", spec, reflect.TypeFor[networkingv1.NetworkPolicySpec]())
}

type crdDoc map[string]any

func readCRD(t *testing.T, file string) crdDoc {
	t.Helper()
	b, err := fs.ReadFile(crds.Manifests, file)
	if err != nil {
		t.Fatal(err)
	}
	var crd map[string]any
	if err := yaml.UnmarshalStrict(b, &crd); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return crd
}

func (c crdDoc) get(t *testing.T, path string) any {
	t.Helper()
	var v any = map[string]any(c)
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("%s: %s is not within an object", path, k)
		}
		v = m[k]
	}
	return v
}

// checkStructural checks what makes a schema structural: every node has a type unless it is
// int-or-string or keeps unknown fields, an object lists its properties or their type (metadata
// apart), and anyOf branches say nothing but a type.
func checkStructural(t *testing.T, path string, s map[string]any) {
	t.Helper()
	_, hasType := s["type"].(string)
	if !hasType && s["x-kubernetes-int-or-string"] != true && s["x-kubernetes-preserve-unknown-fields"] != true {
		t.Errorf("%s has no type", path)
	}
	props, _ := s["properties"].(map[string]any)
	_, hasAdditional := s["additionalProperties"]
	if s["type"] == "object" && len(props) == 0 && !hasAdditional && path != "openAPIV3Schema.metadata" &&
		s["x-kubernetes-preserve-unknown-fields"] != true {
		t.Errorf("%s is an object without properties", path)
	}
	if s["type"] == "array" && s["items"] == nil {
		t.Errorf("%s is an array without items", path)
	}
	for name, p := range props {
		checkStructural(t, path+"."+name, p.(map[string]any))
	}
	if items, ok := s["items"].(map[string]any); ok {
		checkStructural(t, path+"[]", items)
	}
	if add, ok := s["additionalProperties"].(map[string]any); ok {
		checkStructural(t, path+"{}", add)
	}
	if anyOf, ok := s["anyOf"].([]any); ok {
		if s["x-kubernetes-int-or-string"] != true {
			t.Errorf("%s: anyOf outside int-or-string", path)
		}
		for _, b := range anyOf {
			if len(b.(map[string]any)) != 1 {
				t.Errorf("%s: an anyOf branch says more than its type: %v", path, b)
			}
		}
	}
}

var (
	conditionType = reflect.TypeFor[metav1.Condition]()
	timeType      = reflect.TypeFor[metav1.Time]()
	intOrString   = reflect.TypeFor[intstr.IntOrString]()
)

// checkMatches checks that schema s describes values of Go type typ exactly: the same
// fields, under their JSON names, with matching types all the way down.
func checkMatches(t *testing.T, path string, s map[string]any, typ reflect.Type) {
	t.Helper()
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	want := ""
	switch {
	case typ == timeType:
		want = "string"
	case typ == intOrString:
		if s["x-kubernetes-int-or-string"] != true {
			t.Errorf("%s is not int-or-string", path)
		}
		return
	case typ.Kind() == reflect.String:
		want = "string"
	case typ.Kind() == reflect.Bool:
		want = "boolean"
	case typ.Kind() >= reflect.Int && typ.Kind() <= reflect.Int64:
		want = "integer"
	case typ.Kind() == reflect.Slice:
		want = "array"
		checkMatches(t, path+"[]", s["items"].(map[string]any), typ.Elem())
	case typ.Kind() == reflect.Map:
		want = "object"
		add, ok := s["additionalProperties"].(map[string]any)
		if !ok {
			t.Errorf("%s: a map without additionalProperties", path)
			return
		}
		checkMatches(t, path+"{}", add, typ.Elem())
	case typ.Kind() == reflect.Struct:
		want = "object"
		props, _ := s["properties"].(map[string]any)
		var fields []string
		for f := range typ.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" || !f.IsExported() {
				continue
			}
			fields = append(fields, name)
			p, ok := props[name].(map[string]any)
			if !ok {
				t.Errorf("%s.%s: missing from the schema", path, name)
				continue
			}
			checkMatches(t, path+"."+name, p, f.Type)
		}
		for name := range props {
			if !slices.Contains(fields, name) {
				t.Errorf("%s.%s: in the schema but not in %s", path, name, typ)
			}
		}
	default:
		t.Fatalf("%s: no schema type for %s", path, typ)
	}
	if s["type"] != want {
		t.Errorf("%s: type %v, want %s for %s", path, s["type"], want, typ)
	}
	if typ == conditionType {
		if got := s["required"]; !reflect.DeepEqual(got, []any{"type", "status"}) {
			t.Errorf("%s: required %v", path, got)
		}
	}
}
