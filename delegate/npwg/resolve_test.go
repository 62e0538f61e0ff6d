package npwg

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/loom-cni/loom/delegate"
)

// fakeNADs is an in-memory NADLister keyed by "namespace/name". err, when set, is returned for
// every lookup, as an informer that cannot serve would.
type fakeNADs struct {
	nads map[string]*nadv1.NetworkAttachmentDefinition
	err  error
}

func (f fakeNADs) NAD(namespace, name string) (*nadv1.NetworkAttachmentDefinition, error) {
	if f.err != nil {
		return nil, f.err
	}
	if n, ok := f.nads[namespace+"/"+name]; ok {
		return n, nil
	}
	return nil, apierrors.NewNotFound(nadv1.Resource("network-attachment-definitions"), name)
}

func newNAD(ns, name, config string) *nadv1.NetworkAttachmentDefinition {
	return &nadv1.NetworkAttachmentDefinition{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + ns + "-" + name)},
		Spec:       nadv1.NetworkAttachmentDefinitionSpec{Config: config},
	}
}

const allCaps = `{"cniVersion":"0.4.0","name":"caps","plugins":[` +
	`{"type":"macvlan","ipam":{"type":"static"},"capabilities":{"ips":true,"mac":true,"infinibandGUID":true}},` +
	`{"type":"portmap","capabilities":{"portMappings":true}},{"type":"bandwidth","capabilities":{"bandwidth":true}}]}`

func testNADs() fakeNADs {
	nads := map[string]*nadv1.NetworkAttachmentDefinition{}
	for _, n := range []*nadv1.NetworkAttachmentDefinition{
		newNAD("kube-system", "loom", `{"cniVersion":"1.0.0","name":"loom","plugins":[{"type":"loom","capabilities":{"portMappings":true}}]}`),
		newNAD("kube-system", "alt", `{"type":"bridge","capabilities":{"ips":true,"mac":true}}`),
		newNAD("web", "net-a", `{"type":"macvlan","master":"eth1"}`),
		newNAD("web", "net-caps", allCaps),
		newNAD("web", "from-file", ""),
		newNAD("web", "no-file", "  "),
		newNAD("web", "broken", `{"type":"macvlan",`),
		newNAD("other", "net-b", `{"type":"ipvlan","master":"eth2"}`),
		newNAD("shared", "net-s", `{"type":"macvlan","master":"eth3"}`),
	} {
		nads[n.Namespace+"/"+n.Name] = n
	}
	return fakeNADs{nads: nads}
}

func testConfDir() fstest.MapFS {
	return fstest.MapFS{
		"00-loom.conflist": {Data: []byte(`{"cniVersion":"1.0.0","name":"loom-file","plugins":[{"type":"loom"}]}`)},
		"from-file.conf":   {Data: []byte(`{"name":"from-file","type":"host-device","device":"eth9"}`)},
	}
}

func testResolver(t *testing.T, edit func(*Config)) *Resolver {
	t.Helper()
	c := Config{NADs: testNADs(), ConfDir: testConfDir(), DefaultNetwork: "loom", CNIVersion: "1.0.0"}
	if edit != nil {
		edit(&c)
	}
	r, err := NewResolver(c)
	if err != nil {
		t.Fatalf("NewResolver: %v", err)
	}
	return r
}

func testPod(annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "app", Annotations: annotations}}
}

// summary is the identity of a Spec, what most resolution tests compare.
type summary struct {
	network, uid, ifname string
	dflt                 bool
}

func summarize(specs []delegate.Spec) []summary {
	out := make([]summary, len(specs))
	for i, s := range specs {
		out[i] = summary{s.Network, s.NetworkUID, s.Ifname, s.Default}
	}
	return out
}

var loomDefault = summary{"kube-system/loom", "uid-kube-system-loom", "eth0", true}

func TestResolve(t *testing.T) {
	tests := []struct {
		name        string
		annotations map[string]string
		config      func(*Config)
		want        []summary
	}{
		{name: "no annotations", want: []summary{loomDefault}},
		{name: "blank networks", annotations: map[string]string{nadv1.NetworkAttachmentAnnot: " "}, want: []summary{loomDefault}},
		{
			name:        "comma form with generated and requested names",
			annotations: map[string]string{nadv1.NetworkAttachmentAnnot: "net-a, other/net-b@data0, net-caps"},
			want: []summary{loomDefault,
				{"web/net-a", "uid-web-net-a", "net1", false},
				{"other/net-b", "uid-other-net-b", "data0", false},
				{"web/net-caps", "uid-web-net-caps", "net3", false}},
		},
		{
			name:        "same network twice is two attachments",
			annotations: map[string]string{nadv1.NetworkAttachmentAnnot: "net-a,net-a"},
			want: []summary{loomDefault,
				{"web/net-a", "uid-web-net-a", "net1", false}, {"web/net-a", "uid-web-net-a", "net2", false}},
		},
		{
			name:        "JSON form",
			annotations: map[string]string{nadv1.NetworkAttachmentAnnot: `[{"name":"net-b","namespace":"other","interface":"ext"},{"name":"net-a"}]`},
			want:        []summary{loomDefault, {"other/net-b", "uid-other-net-b", "ext", false}, {"web/net-a", "uid-web-net-a", "net2", false}},
		},
		{
			name:        "NAD without spec.config uses the file of its name",
			annotations: map[string]string{nadv1.NetworkAttachmentAnnot: "from-file"},
			want:        []summary{loomDefault, {"web/from-file", "uid-web-from-file", "net1", false}},
		},
		{
			name:        "per-pod default network defaults to the system namespace",
			annotations: map[string]string{DefaultNetworkAnnot: "alt", nadv1.NetworkAttachmentAnnot: "net-a"},
			want:        []summary{{"kube-system/alt", "uid-kube-system-alt", "eth0", true}, {"web/net-a", "uid-web-net-a", "net1", false}},
		},
		{
			name:        "per-pod default network in JSON with a namespace",
			annotations: map[string]string{DefaultNetworkAnnot: `[{"name":"net-a","namespace":"web","interface":"eth0"}]`},
			want:        []summary{{"web/net-a", "uid-web-net-a", "eth0", true}},
		},
		{
			name:   "default network as namespace/name",
			config: func(c *Config) { c.DefaultNetwork = "shared/net-s" },
			want:   []summary{{"shared/net-s", "uid-shared-net-s", "eth0", true}},
		},
		{
			name:   "default network from a file by base name",
			config: func(c *Config) { c.DefaultNetwork = "00-loom" },
			want:   []summary{{"loom-file", "", "eth0", true}},
		},
		{
			name:   "default network from a file by network name",
			config: func(c *Config) { c.DefaultNetwork = "loom-file" },
			want:   []summary{{"loom-file", "", "eth0", true}},
		},
		{
			name:   "default network NAD in a custom system namespace",
			config: func(c *Config) { c.SystemNamespace = "web"; c.DefaultNetwork = "net-a" },
			want:   []summary{{"web/net-a", "uid-web-net-a", "eth0", true}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			specs, err := testResolver(t, tt.config).Resolve(testPod(tt.annotations), "eth0", nil)
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if got := summarize(specs); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
			for _, s := range specs {
				if s.Kind != delegate.KindCNI {
					t.Errorf("%s: Kind = %q", s.Network, s.Kind)
				}
				list := map[string]any{}
				if err := json.Unmarshal(s.Config, &list); err != nil || list["plugins"] == nil || list["name"] == "" || list["cniVersion"] == "" {
					t.Errorf("%s: Config %s is not a conflist with name and version (%v)", s.Network, s.Config, err)
				}
			}
		})
	}
}

func TestResolveRuntimeConfigOnlyOnDefault(t *testing.T) {
	kubelet := map[string]any{"portMappings": []any{map[string]any{"hostPort": 80, "containerPort": 8080}}, "bandwidth": map[string]any{"ingressRate": 1}}
	pod := testPod(map[string]string{nadv1.NetworkAttachmentAnnot: `[{"name":"net-a"},{"name":"net-caps","mac":"02:00:00:00:00:01"}]`})
	specs, err := testResolver(t, nil).Resolve(pod, "eth0", kubelet)
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	if !reflect.DeepEqual(specs[0].CapabilityArgs, kubelet) {
		t.Errorf("default CapabilityArgs = %v, want the kubelet's %v", specs[0].CapabilityArgs, kubelet)
	}
	if specs[1].CapabilityArgs != nil {
		t.Errorf("secondary without requests got CapabilityArgs %v", specs[1].CapabilityArgs)
	}
	if want := map[string]any{"mac": "02:00:00:00:00:01"}; !reflect.DeepEqual(specs[2].CapabilityArgs, want) {
		t.Errorf("secondary CapabilityArgs = %v, want only its own request %v", specs[2].CapabilityArgs, want)
	}
	kubelet["injected"] = true
	if _, leaked := specs[0].CapabilityArgs["injected"]; leaked {
		t.Error("the default Spec shares its CapabilityArgs map with the caller")
	}
}

func TestResolveCapabilities(t *testing.T) {
	tests := []struct {
		name    string
		element string // JSON keys added to {"name": <nad>}
		wantKey string
		want    any
	}{
		{"ips", `"ips":["10.1.1.5/24"]`, "ips", []string{"10.1.1.5/24"}},
		{"mac", `"mac":"02:00:00:00:00:01"`, "mac", "02:00:00:00:00:01"},
		{"portMappings", `"portMappings":[{"hostPort":8080,"containerPort":80}]`, "portMappings",
			[]PortMapping{{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}}},
		{"bandwidth", `"bandwidth":{"ingressRate":100,"ingressBurst":200}`, "bandwidth", Bandwidth{IngressRate: 100, IngressBurst: 200}},
		{"infiniband-guid", `"infiniband-guid":"c2:cb:58:00:00:00:00:01"`, "infinibandGUID", "c2:cb:58:00:00:00:00:01"},
	}
	for _, tt := range tests {
		t.Run(tt.name+" declared", func(t *testing.T) {
			pod := testPod(map[string]string{nadv1.NetworkAttachmentAnnot: `[{"name":"net-caps",` + tt.element + `}]`})
			specs, err := testResolver(t, nil).Resolve(pod, "eth0", nil)
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if got := specs[1].CapabilityArgs; !reflect.DeepEqual(got, map[string]any{tt.wantKey: tt.want}) {
				t.Errorf("CapabilityArgs = %#v, want %s: %#v", got, tt.wantKey, tt.want)
			}
			wire, _ := json.Marshal(specs[1].CapabilityArgs[tt.wantKey])
			if tt.name == "bandwidth" && string(wire) != `{"ingressRate":100,"ingressBurst":200,"egressRate":0,"egressBurst":0}` {
				t.Errorf("bandwidth runtimeConfig = %s, not in the CNI conventions' format", wire)
			}
		})
		t.Run(tt.name+" not declared", func(t *testing.T) {
			pod := testPod(map[string]string{nadv1.NetworkAttachmentAnnot: `[{"name":"net-a",` + tt.element + `}]`})
			_, err := testResolver(t, nil).Resolve(pod, "eth0", nil)
			var e *Error
			if !errors.As(err, &e) || e.Network != "web/net-a" || !strings.Contains(e.Problem, `"`+tt.wantKey+`" capability`) {
				t.Errorf("Resolve error = %v, want an *Error about the %q capability of web/net-a", err, tt.wantKey)
			}
		})
	}
}

func TestResolveIPAMClaimReference(t *testing.T) {
	pod := testPod(map[string]string{nadv1.NetworkAttachmentAnnot: `[{"name":"net-a","ipam-claim-reference":"vm1.net-a"}]`})
	specs, err := testResolver(t, nil).Resolve(pod, "eth0", nil)
	if err != nil {
		t.Fatalf("Resolve: %v (a claim reference needs no declared capability)", err)
	}
	if got := specs[1].CapabilityArgs; !reflect.DeepEqual(got, map[string]any{"ipamClaimReference": "vm1.net-a"}) {
		t.Errorf("CapabilityArgs = %v", got)
	}
}

func TestResolveConfig(t *testing.T) {
	pod := testPod(map[string]string{nadv1.NetworkAttachmentAnnot: `[{"name":"net-a","cni-args":{"vlan":100,"mode":"x"}},{"name":"from-file"}]`})
	specs, err := testResolver(t, func(c *Config) { c.CNIVersion = "0.4.0" }).Resolve(pod, "eth0", nil)
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	want := `{"cniVersion":"0.4.0","name":"net-a","plugins":[{"args":{"cni":{"mode":"x","vlan":100}},` +
		`"cniVersion":"0.4.0","master":"eth1","name":"net-a","type":"macvlan"}]}`
	if got := string(specs[1].Config); got != want {
		t.Errorf("net-a Config\n got %s\nwant %s", got, want)
	}
	want = `{"cniVersion":"0.4.0","name":"from-file","plugins":[{"cniVersion":"0.4.0","device":"eth9","name":"from-file","type":"host-device"}]}`
	if got := string(specs[2].Config); got != want {
		t.Errorf("from-file Config\n got %s\nwant %s", got, want)
	}
}

func TestResolveDefaultRoute(t *testing.T) {
	pod := testPod(map[string]string{nadv1.NetworkAttachmentAnnot: `[{"name":"net-a","default-route":["10.1.0.1"]},` +
		`{"name":"net-b","namespace":"other","default-route":["2001:db8::1"]},{"name":"net-a"}]`})
	specs, err := testResolver(t, nil).Resolve(pod, "eth0", nil)
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	got := [][]string{specs[0].DefaultRoute, specs[1].DefaultRoute, specs[2].DefaultRoute, specs[3].DefaultRoute}
	if want := [][]string{nil, {"10.1.0.1"}, {"2001:db8::1"}, nil}; !reflect.DeepEqual(got, want) {
		t.Errorf("DefaultRoute = %q, want %q", got, want)
	}
}

func TestResolveErrors(t *testing.T) {
	tests := []struct {
		name        string
		annotations map[string]string
		config      func(*Config)
		network     string
		notFound    bool
	}{
		{name: "parse error", annotations: map[string]string{nadv1.NetworkAttachmentAnnot: "net-a,,"}},
		{name: "duplicate interface", network: "web/net-caps",
			annotations: map[string]string{nadv1.NetworkAttachmentAnnot: "net-a@data0,net-caps@data0"}},
		{name: "generated name clashes with a requested one", network: "web/net-caps",
			annotations: map[string]string{nadv1.NetworkAttachmentAnnot: "net-a@net2,net-caps"}},
		{name: "clash with the default interface", network: "web/net-a",
			annotations: map[string]string{nadv1.NetworkAttachmentAnnot: "net-a@eth0"}},
		{name: "two attachments want the IPv4 default route", network: "other/net-b",
			annotations: map[string]string{nadv1.NetworkAttachmentAnnot: `[{"name":"net-a","default-route":["10.1.0.1"]},{"name":"net-b","namespace":"other","default-route":["10.2.0.1"]}]`}},
		{name: "NAD does not exist", network: "web/nope", notFound: true,
			annotations: map[string]string{nadv1.NetworkAttachmentAnnot: "net-a,nope"}},
		{name: "NAD config is not JSON", network: "web/broken",
			annotations: map[string]string{nadv1.NetworkAttachmentAnnot: "broken"}},
		{name: "NAD without config or file", network: "web/no-file",
			annotations: map[string]string{nadv1.NetworkAttachmentAnnot: "no-file"}},
		{name: "default network override lists two", annotations: map[string]string{DefaultNetworkAnnot: "alt,loom"}},
		{name: "default network override asks for another interface", network: "kube-system/alt",
			annotations: map[string]string{DefaultNetworkAnnot: "alt@eth1"}},
		{name: "default network override is invalid", annotations: map[string]string{DefaultNetworkAnnot: "Alt"}, network: "Alt"},
		{name: "default network override does not exist", network: "kube-system/nope", notFound: true,
			annotations: map[string]string{DefaultNetworkAnnot: "nope"}},
		{name: "default network override duplicates a kubelet key", network: "kube-system/loom",
			annotations: map[string]string{DefaultNetworkAnnot: `[{"name":"loom","portMappings":[{"hostPort":1,"containerPort":1}]}]`}},
		{name: "default network override lacks a capability", network: "kube-system/alt",
			annotations: map[string]string{DefaultNetworkAnnot: `[{"name":"alt","bandwidth":{"egressRate":1,"egressBurst":1}}]`}},
		{name: "configured default NAD missing", network: "shared/gone", notFound: true,
			config: func(c *Config) { c.DefaultNetwork = "shared/gone" }},
		{name: "configured default neither NAD nor file", network: "gone",
			config: func(c *Config) { c.DefaultNetwork = "gone" }},
		{name: "configured default file is broken", network: "bad",
			config: func(c *Config) {
				c.DefaultNetwork = "bad"
				c.ConfDir = fstest.MapFS{"bad.conf": {Data: []byte(`{"name":"bad"}`)}}
			}},
		{name: "isolation", network: "other/net-b", config: func(c *Config) { c.NamespaceIsolation = true },
			annotations: map[string]string{nadv1.NetworkAttachmentAnnot: "other/net-b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			specs, err := testResolver(t, tt.config).Resolve(testPod(tt.annotations), "eth0", map[string]any{"portMappings": []any{}})
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Resolve = %v, %v; want an *Error", summarize(specs), err)
			}
			if specs != nil {
				t.Errorf("Resolve returned Specs with its error: %v", summarize(specs))
			}
			if e.Pod != "web/app" || e.Network != tt.network || e.Problem == "" || e.Fix == "" {
				t.Errorf("error %#v: want pod web/app, network %q, a problem and a fix", e, tt.network)
			}
			if got := apierrors.IsNotFound(err); got != tt.notFound {
				t.Errorf("apierrors.IsNotFound(%v) = %v, want %v", err, got, tt.notFound)
			}
		})
	}
}

func TestResolveIsolationMessage(t *testing.T) {
	r := testResolver(t, func(c *Config) { c.NamespaceIsolation = true })
	pod := testPod(map[string]string{nadv1.NetworkAttachmentAnnot: "other/net-b"})
	pod.Namespace, pod.Name = "default", "web"
	_, err := r.Resolve(pod, "eth0", nil)
	want := `pod default/web: network "other/net-b": NetworkAttachmentDefinition other/net-b is in another namespace ` +
		`and namespace isolation is on: create the network in namespace default or add other to globalNamespaces`
	if err == nil || err.Error() != want {
		t.Errorf("error = %v\nwant    %s", err, want)
	}
}

func TestNamespaceIsolation(t *testing.T) {
	tests := []struct {
		name        string
		isolation   bool
		annotations map[string]string
		dflt        string
		allowed     bool
	}{
		{"own namespace", true, map[string]string{nadv1.NetworkAttachmentAnnot: "web/net-a"}, "", true},
		{"global namespace", true, map[string]string{nadv1.NetworkAttachmentAnnot: "shared/net-s"}, "", true},
		{"other namespace", true, map[string]string{nadv1.NetworkAttachmentAnnot: "net-a,other/net-b"}, "", false},
		{"system namespace is not global for secondaries", true, map[string]string{nadv1.NetworkAttachmentAnnot: "kube-system/alt"}, "", false},
		{"isolation off", false, map[string]string{nadv1.NetworkAttachmentAnnot: "other/net-b"}, "", true},
		{"configured default network is exempt", true, nil, "other/net-b", true},
		{"per-pod default from the system namespace", true, map[string]string{DefaultNetworkAnnot: "alt"}, "", true},
		{"per-pod default from the pod's namespace", true, map[string]string{DefaultNetworkAnnot: "web/net-a"}, "", true},
		{"per-pod default from a global namespace", true, map[string]string{DefaultNetworkAnnot: "shared/net-s"}, "", true},
		{"per-pod default from another namespace", true, map[string]string{DefaultNetworkAnnot: "other/net-b"}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := testResolver(t, func(c *Config) {
				c.NamespaceIsolation = tt.isolation
				c.GlobalNamespaces = []string{"shared"}
				if tt.dflt != "" {
					c.DefaultNetwork = tt.dflt
				}
			})
			_, err := r.Resolve(testPod(tt.annotations), "eth0", nil)
			var e *Error
			if tt.allowed && err != nil || !tt.allowed && !(errors.As(err, &e) && strings.Contains(e.Problem, "namespace isolation")) {
				t.Errorf("Resolve error = %v, want allowed=%v", err, tt.allowed)
			}
		})
	}
}

func TestResolveInfrastructureErrors(t *testing.T) {
	broken := errors.New("informer not synced")
	tests := []struct {
		name   string
		config func(*Config)
		pod    *corev1.Pod
		ifname string
	}{
		{"lister fails for a secondary", func(c *Config) { c.DefaultNetwork = "00-loom"; c.NADs = fakeNADs{err: broken} },
			testPod(map[string]string{nadv1.NetworkAttachmentAnnot: "net-a"}), "eth0"},
		{"lister fails for the default", func(c *Config) { c.NADs = fakeNADs{err: broken} }, testPod(nil), "eth0"},
		{"no pod", nil, nil, "eth0"},
		{"bad runtime interface name", nil, testPod(nil), "eth/0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := testResolver(t, tt.config).Resolve(tt.pod, tt.ifname, nil)
			var e *Error
			if err == nil || errors.As(err, &e) {
				t.Errorf("Resolve error = %v, want a plain error", err)
			}
			if tt.name[:6] == "lister" && !errors.Is(err, broken) {
				t.Errorf("Resolve error = %v does not wrap the lister's", err)
			}
		})
	}
}

func TestNewResolverErrors(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
	}{
		{"no lister", func(c *Config) { c.NADs = nil }},
		{"no default network", func(c *Config) { c.DefaultNetwork = " " }},
		{"bad default namespace", func(c *Config) { c.DefaultNetwork = "Bad/net" }},
		{"bad default name", func(c *Config) { c.DefaultNetwork = "ns/net_a" }},
		{"bad global namespace", func(c *Config) { c.GlobalNamespaces = []string{"a/b"} }},
		{"bad system namespace", func(c *Config) { c.SystemNamespace = "Kube" }},
		{"bad CNI version", func(c *Config) { c.CNIVersion = "2.0" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{NADs: testNADs(), DefaultNetwork: "loom"}
			tt.edit(&c)
			if r, err := NewResolver(c); err == nil {
				t.Errorf("NewResolver = %+v, want an error", r)
			}
		})
	}
}

func TestResolveBuiltinAndInProcess(t *testing.T) {
	builtin := []byte(`{"cniVersion":"1.1.0","name":"primary","type":"loom-primary"}`)
	r := testResolver(t, func(c *Config) {
		c.DefaultNetwork = "primary"
		c.Builtin = map[string][]byte{"primary": builtin}
		c.InProcess = []string{"loom-primary", "macvlan"}
	})
	specs, err := r.Resolve(testPod(map[string]string{nadv1.NetworkAttachmentAnnot: "net-a,net-caps"}), "eth0", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := []string{}
	for _, s := range specs {
		got = append(got, s.Network+":"+s.Kind)
	}
	// A single in-process plugin runs in-process; a chain that merely contains one does not.
	want := []string{"primary:loom-primary", "web/net-a:macvlan", "web/net-caps:" + delegate.KindCNI}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("specs = %v, want %v", got, want)
	}

	// A NAD of the built-in network's name in the system namespace takes precedence.
	r = testResolver(t, func(c *Config) { c.Builtin = map[string][]byte{"loom": builtin} })
	specs, err = r.Resolve(testPod(nil), "eth0", nil)
	if err != nil {
		t.Fatal(err)
	}
	if specs[0].Network != "kube-system/loom" {
		t.Errorf("default network = %q, want the NAD kube-system/loom", specs[0].Network)
	}
}

func TestResolveDeviceResource(t *testing.T) {
	nads := testNADs()
	vf := newNAD("web", "net-vf", `{"type":"loom-sriov","vlan":100}`)
	vf.Annotations = map[string]string{ResourceNameAnnot: " loom.dev/sriov_a "}
	nads.nads["web/net-vf"] = vf
	r := testResolver(t, func(c *Config) { c.NADs = nads; c.InProcess = []string{"loom-sriov"} })
	specs, err := r.Resolve(testPod(map[string]string{nadv1.NetworkAttachmentAnnot: "net-vf, net-a"}), "eth0", nil)
	if err != nil {
		t.Fatal(err)
	}
	if specs[1].Resource != "loom.dev/sriov_a" || specs[1].Kind != "loom-sriov" {
		t.Errorf("VF network: resource %q kind %q", specs[1].Resource, specs[1].Kind)
	}
	if specs[2].Resource != "" {
		t.Errorf("a NAD without the annotation has resource %q", specs[2].Resource)
	}
	conf, err := WithDeviceID(specs[1].Config, "0000:3b:02.0")
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Plugins []struct {
			DeviceID string      `json:"deviceID"`
			VLAN     json.Number `json:"vlan"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(conf, &list); err != nil || list.Plugins[0].DeviceID != "0000:3b:02.0" || list.Plugins[0].VLAN != "100" {
		t.Errorf("WithDeviceID = %s (%v)", conf, err)
	}
	if _, err := WithDeviceID([]byte(`{"type":"x"}`), "a"); err == nil {
		t.Error("WithDeviceID accepted a configuration that is not a list")
	}
}
