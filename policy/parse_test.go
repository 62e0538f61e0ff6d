package policy

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// describe writes a validated policy in a compact form tests can compare:
//
//	sel=<podSelector> isolates=<dirs>; ingress[i] from=[…] ports=[…]; egress[i] …
func describe(v *validPolicy) string {
	var b strings.Builder
	fmt.Fprintf(&b, "sel=%q isolates=", v.podSelector.String())
	var dirs []string
	for d, on := range v.isolates {
		if on {
			dirs = append(dirs, dir(d).String())
		}
	}
	b.WriteString(strings.Join(dirs, ","))
	for d, rules := range v.rules {
		for _, r := range rules {
			fmt.Fprintf(&b, "; %s[%d]", dir(d), r.index)
			if r.peers != nil {
				var ps []string
				for _, p := range r.peers {
					ps = append(ps, describePeer(p))
				}
				fmt.Fprintf(&b, " peers=[%s]", strings.Join(ps, " "))
			}
			if r.ports != nil {
				var ps []string
				for _, p := range r.ports {
					ps = append(ps, describePort(p))
				}
				fmt.Fprintf(&b, " ports=[%s]", strings.Join(ps, " "))
			}
		}
	}
	return b.String()
}

func describePeer(p validPeer) string {
	if p.cidr.IsValid() {
		s := fmt.Sprintf("%d:%s", p.index, p.cidr)
		for _, e := range p.except {
			s += "-" + e.String()
		}
		return s
	}
	ns := "own"
	if p.namespaces != nil {
		ns = fmt.Sprintf("ns(%s)", p.namespaces)
	}
	return fmt.Sprintf("%d:pods(%s)@%s", p.index, p.pods, ns)
}

func describePort(p validPort) string {
	switch {
	case p.name != "":
		return p.protocol + "/" + p.name
	case p.endPort != 0:
		return fmt.Sprintf("%s/%d-%d", p.protocol, p.port, p.endPort)
	}
	return fmt.Sprintf("%s/%d", p.protocol, p.port)
}

// mnp writes a MultiNetworkPolicy in namespace "ns" for network "net" with the given spec.
func mnp(spec string) []byte {
	return []byte(`{"apiVersion":"k8s.cni.cncf.io/v1beta1","kind":"MultiNetworkPolicy",
		"metadata":{"namespace":"ns","name":"p","annotations":{"k8s.v1.cni.cncf.io/policy-for":"net"}},
		"spec":` + spec + `}`)
}

func TestParseMultiNetworkPolicy(t *testing.T) {
	for _, tc := range []struct {
		name     string
		spec     string
		want     string
		problems []string
	}{{
		name: "valid",
		spec: `{"podSelector":{"matchLabels":{"app":"web"}},"ingress":[{"from":[
			{"podSelector":{"matchLabels":{"app":"lb"}}},
			{"namespaceSelector":{"matchLabels":{"team":"a"}},"podSelector":{}},
			{"namespaceSelector":{}},
			{"ipBlock":{"cidr":"10.0.0.1/8","except":["10.1.0.0/16"]}}],
			"ports":[{"port":80},{"protocol":"UDP","port":53,"endPort":60},{"protocol":"SCTP"},{"port":"http"},{"port":443,"endPort":443}]}],
			"egress":[{}]}`,
		want: `sel="app=web" isolates=ingress,egress; ingress[0] peers=[0:pods(app=lb)@own 1:pods()@ns(team=a) 2:pods()@ns() ` +
			`3:10.0.0.0/8-10.1.0.0/16] ports=[TCP/80 UDP/53-60 SCTP/0 TCP/http TCP/443]; egress[0]`,
	}, {
		name:     "cidr too long",
		spec:     `{"ingress":[{"from":[{"ipBlock":{"cidr":"10.0.0.0/33"}},{"podSelector":{}}]}]}`,
		want:     `sel="" isolates=ingress; ingress[0] peers=[1:pods()@own]`,
		problems: []string{`spec.ingress[0].from[0].ipBlock.cidr: "10.0.0.0/33" is not a CIDR; the peer is ignored`},
	}, {
		name: "ipv4-mapped ipv6 cidr, the only peer",
		spec: `{"ingress":[{"from":[{"ipBlock":{"cidr":"::ffff:10.0.0.0/104"}}]},{}]}`,
		want: `sel="" isolates=ingress; ingress[1]`,
		problems: []string{
			`spec.ingress[0].from[0].ipBlock.cidr: "::ffff:10.0.0.0/104" is an IPv4-mapped IPv6 CIDR; write the IPv4 CIDR instead; the peer is ignored`,
			`spec.ingress[0]: no valid peer in from; the rule allows nothing`,
		},
	}, {
		name: "except outside, equal, unparsable",
		spec: `{"egress":[{"to":[{"ipBlock":{"cidr":"10.0.0.0/16","except":["10.1.0.0/24"]}},
			{"ipBlock":{"cidr":"10.0.0.0/16","except":["10.0.0.0/16"]}},
			{"ipBlock":{"cidr":"10.0.0.0/16","except":["10.0.0.0/24","x"]}},
			{"ipBlock":{"cidr":"10.0.0.0/16","except":["10.0.3.7/24"]}}]}]}`,
		want: `sel="" isolates=ingress,egress; egress[0] peers=[3:10.0.0.0/16-10.0.3.0/24]`,
		problems: []string{
			`spec.egress[0].to[0].ipBlock.except[0]: 10.1.0.0/24 is not strictly inside cidr 10.0.0.0/16; the peer is ignored`,
			`spec.egress[0].to[1].ipBlock.except[0]: 10.0.0.0/16 is not strictly inside cidr 10.0.0.0/16; the peer is ignored`,
			`spec.egress[0].to[2].ipBlock.except[1]: "x" is not a CIDR; the peer is ignored`,
		},
	}, {
		name: "bad protocol, the only port",
		spec: `{"ingress":[{"ports":[{"protocol":"tcp","port":80}]}]}`,
		want: `sel="" isolates=ingress`,
		problems: []string{
			`spec.ingress[0].ports[0].protocol: "tcp" is not TCP, UDP or SCTP; the port is ignored`,
			`spec.ingress[0]: no valid port in ports; the rule allows nothing`,
		},
	}, {
		name: "bad port numbers and names",
		spec: `{"ingress":[{"ports":[{"port":0},{"port":65536},{"port":"80"},{"port":"a_b"},{"port":22}]}]}`,
		want: `sel="" isolates=ingress; ingress[0] ports=[TCP/22]`,
		problems: []string{
			`spec.ingress[0].ports[0].port: 0 is not between 1 and 65535; the port is ignored`,
			`spec.ingress[0].ports[1].port: 65536 is not between 1 and 65535; the port is ignored`,
			`spec.ingress[0].ports[2].port: "80" is neither a port number nor a port name: must contain at least one letter (a-z); the port is ignored`,
			`spec.ingress[0].ports[3].port: "a_b" is neither a port number nor a port name: must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-); the port is ignored`,
		},
	}, {
		name: "bad endPort",
		spec: `{"ingress":[{"ports":[{"port":"http","endPort":90},{"port":90,"endPort":80},{"endPort":80},{"port":1,"endPort":70000},{"port":8080,"endPort":8090}]}]}`,
		want: `sel="" isolates=ingress; ingress[0] ports=[TCP/8080-8090]`,
		problems: []string{
			`spec.ingress[0].ports[0].endPort: needs a numeric port, not the name "http"; the port is ignored`,
			`spec.ingress[0].ports[1].endPort: 80 is not between port 90 and 65535; the port is ignored`,
			`spec.ingress[0].ports[2].endPort: needs a numeric port; the port is ignored`,
			`spec.ingress[0].ports[3].endPort: 70000 is not between port 1 and 65535; the port is ignored`,
		},
	}, {
		name:     "unknown policy type isolates both",
		spec:     `{"policyTypes":["Ingres"],"ingress":[{}],"egress":[{}]}`,
		want:     `sel="" isolates=ingress,egress; ingress[0]; egress[0]`,
		problems: []string{`spec.policyTypes[0]: "Ingres" is not Ingress or Egress; the policy isolates both directions`},
	}, {
		name: "policy types given: rules of other directions are not used",
		spec: `{"policyTypes":["Egress"],"ingress":[{}],"egress":[{"ports":[{"port":53,"protocol":"UDP"}]}]}`,
		want: `sel="" isolates=egress; egress[0] ports=[UDP/53]`,
	}, {
		name: "no policy types, no egress rules: ingress only",
		spec: `{"podSelector":{},"egress":[]}`,
		want: `sel="" isolates=ingress`,
	}, {
		name: "no policy types, only invalid egress rules: still isolates egress",
		spec: `{"egress":[{"to":[{}]}]}`,
		want: `sel="" isolates=ingress,egress`,
		problems: []string{
			`spec.egress[0].to[0]: names no peer (podSelector, namespaceSelector or ipBlock); the peer is ignored`,
			`spec.egress[0]: no valid peer in to; the rule allows nothing`,
		},
	}, {
		name: "invalid podSelector selects every pod and allows nothing",
		spec: `{"podSelector":{"matchExpressions":[{"key":"app","operator":"Near"}]},"ingress":[{}],"egress":[{}]}`,
		want: `sel="" isolates=ingress,egress`,
		problems: []string{
			`spec.podSelector: "Near" is not a valid label selector operator; the policy selects every pod of its namespace and allows nothing`,
		},
	}, {
		name: "peers with bad selectors, ipBlock with a selector",
		spec: `{"ingress":[{"from":[{"podSelector":{"matchLabels":{"a":"b c"}}},
			{"namespaceSelector":{"matchExpressions":[{"key":"k","operator":"In"}]}},
			{"ipBlock":{"cidr":"10.0.0.0/8"},"podSelector":{}}]}]}`,
		want: `sel="" isolates=ingress`,
		problems: []string{
			`spec.ingress[0].from[0].podSelector: values[0][a]: Invalid value: "b c": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?'); the peer is ignored`,
			`spec.ingress[0].from[1].namespaceSelector: values: Invalid value: null: for 'in', 'notin' operators, values set can't be empty; the peer is ignored`,
			`spec.ingress[0].from[2]: ipBlock cannot be combined with podSelector or namespaceSelector; the peer is ignored`,
			`spec.ingress[0]: no valid peer in from; the rule allows nothing`,
		},
	}, {
		name: "unreadable port and peer",
		spec: `{"ingress":[{"from":[{"podSelector":5},{"podSelector":{}}],"ports":[{"port":true},{"port":80}]}]}`,
		want: `sel="" isolates=ingress; ingress[0] peers=[1:pods()@own] ports=[TCP/80]`,
		problems: []string{
			`spec.ingress[0].from[0]: cannot be read (json: cannot unmarshal number into Go struct field NetworkPolicyPeer.podSelector of type v1.LabelSelector); the peer is ignored`,
			`spec.ingress[0].ports[0]: cannot be read (json: cannot unmarshal bool into Go struct field NetworkPolicyPort.port of type int32); the port is ignored`,
		},
	}, {
		name: "unreadable lists and null elements",
		spec: `{"ingress":[{"from":5},{"ports":{}},null,{"from":[null]},{"ports":[null]},7]}`,
		want: `sel="" isolates=ingress`,
		problems: []string{
			`spec.ingress[0].from: is a JSON number, not a list; the rule allows nothing`,
			`spec.ingress[1].ports: is a JSON object, not a list; the rule allows nothing`,
			`spec.ingress[2]: is null; the rule allows nothing`,
			`spec.ingress[3].from[0]: is null; the peer is ignored`,
			`spec.ingress[4].ports[0]: is null; the port is ignored`,
			`spec.ingress[5]: is a JSON number, not an object; the rule allows nothing`,
			`spec.ingress[3]: no valid peer in from; the rule allows nothing`,
			`spec.ingress[4]: no valid port in ports; the rule allows nothing`,
		},
	}, {
		name:     "unreadable egress list still isolates egress",
		spec:     `{"egress":{}}`,
		want:     `sel="" isolates=ingress,egress`,
		problems: []string{`spec.egress: is a JSON object, not a list; no egress rule is used`},
	}, {
		name:     "unreadable policy type",
		spec:     `{"policyTypes":["Ingress",5]}`,
		want:     `sel="" isolates=ingress,egress`,
		problems: []string{`spec.policyTypes[1]: is a JSON number, not a string; the policy isolates both directions`},
	}, {
		name:     "unreadable podSelector",
		spec:     `{"podSelector":"app=web","ingress":[{}]}`,
		want:     `sel="" isolates=ingress`,
		problems: []string{`spec.podSelector: is a JSON string, not a label selector; the policy selects every pod of its namespace and allows nothing`},
	}, {
		name:     "unreadable spec",
		spec:     `[1]`,
		want:     `sel="" isolates=ingress,egress`,
		problems: []string{`spec: is a JSON array, not an object; the policy selects every pod of its namespace and allows nothing`},
	}, {
		name:     "no spec",
		spec:     `null`,
		want:     `sel="" isolates=ingress,egress`,
		problems: []string{`spec: missing; the policy selects every pod of its namespace and allows nothing`},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			p := ParseMultiNetworkPolicy(mnp(tc.spec))
			if got := describe(p.valid); got != tc.want {
				t.Errorf("validated\n got %s\nwant %s", got, tc.want)
			}
			if !reflect.DeepEqual(p.Problems, tc.problems) {
				t.Errorf("problems\n got %q\nwant %q", p.Problems, tc.problems)
			}
			if p.Kind != KindMultiNetworkPolicy || p.Namespace != "ns" || p.Name != "p" ||
				!reflect.DeepEqual(p.Networks, []NetworkID{"ns/net"}) {
				t.Errorf("identity = %s %s/%s %q", p.Kind, p.Namespace, p.Name, p.Networks)
			}
		})
	}
}

func TestParseMultiNetworkPolicyCleanSpec(t *testing.T) {
	p := ParseMultiNetworkPolicy(mnp(`{"podSelector":{"matchLabels":{"a":"b"}},"policyTypes":["Ingress",3],
		"ingress":[{"from":[{"podSelector":5},{"podSelector":{}}],"ports":[{"port":80},{"port":[]}]},
		{"from":[5]},{"ports":7},null],"egress":[{"to":[{"ipBlock":{"cidr":"1.2.3.0/24"}}]}]}`))
	port := intstr.FromInt32(80)
	want := networkingv1.NetworkPolicySpec{
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"a": "b"}},
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		Ingress: []networkingv1.NetworkPolicyIngressRule{{
			From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{}}},
			Ports: []networkingv1.NetworkPolicyPort{{Port: &port}},
		}},
		Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "1.2.3.0/24"}}}}},
	}
	if !reflect.DeepEqual(p.Spec, want) {
		t.Errorf("Spec = %+v\nwant %+v", p.Spec, want)
	}
}

func TestPolicyFor(t *testing.T) {
	for _, tc := range []struct {
		name       string
		annotation string // "-" for none
		want       []NetworkID
		problems   []string
	}{
		{name: "missing", annotation: "-", problems: []string{`metadata.annotations["k8s.v1.cni.cncf.io/policy-for"]: missing or empty; the policy applies to no network`}},
		{name: "empty", annotation: " ", problems: []string{`metadata.annotations["k8s.v1.cni.cncf.io/policy-for"]: missing or empty; the policy applies to no network`}},
		{name: "forms and spaces", annotation: " b , other / a,ns/b", want: []NetworkID{"ns/b", "other/a"}},
		{name: "bad entries", annotation: "a,,x/y/z,Bad_Name,UP/a", want: []NetworkID{"ns/a"}, problems: []string{
			`metadata.annotations["k8s.v1.cni.cncf.io/policy-for"]: entry 1 is empty`,
			`metadata.annotations["k8s.v1.cni.cncf.io/policy-for"]: entry 2 "x/y/z" is not "namespace/name" or "name"`,
			`metadata.annotations["k8s.v1.cni.cncf.io/policy-for"]: entry 3 "Bad_Name": "Bad_Name" is not a NetworkAttachmentDefinition name`,
			`metadata.annotations["k8s.v1.cni.cncf.io/policy-for"]: entry 4 "UP/a": "UP" is not a namespace name`,
		}},
		{name: "nothing valid", annotation: ",", problems: []string{
			`metadata.annotations["k8s.v1.cni.cncf.io/policy-for"]: entry 0 is empty`,
			`metadata.annotations["k8s.v1.cni.cncf.io/policy-for"]: entry 1 is empty`,
			`metadata.annotations["k8s.v1.cni.cncf.io/policy-for"]: names no valid network; the policy applies to no network`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "k8s.cni.cncf.io/v1beta1", "kind": "MultiNetworkPolicy",
				"metadata": map[string]any{"namespace": "ns", "name": "p"},
				"spec":     map[string]any{"podSelector": map[string]any{}},
			}}
			if tc.annotation != "-" {
				u.SetAnnotations(map[string]string{PolicyForAnnotation: tc.annotation})
			}
			p := FromMultiNetworkPolicy(u)
			if !reflect.DeepEqual(p.Networks, tc.want) {
				t.Errorf("Networks = %q, want %q", p.Networks, tc.want)
			}
			if !reflect.DeepEqual(p.Problems, tc.problems) {
				t.Errorf("problems\n got %q\nwant %q", p.Problems, tc.problems)
			}
		})
	}
}

func TestFromMultiNetworkPolicyNotAnObject(t *testing.T) {
	for _, obj := range []any{nil, "x", (*unstructured.Unstructured)(nil), &unstructured.Unstructured{}} {
		p := FromMultiNetworkPolicy(obj)
		if len(p.Networks) != 0 || len(p.Problems) != 1 {
			t.Errorf("FromMultiNetworkPolicy(%#v) = networks %q, problems %q; want no network and one problem", obj, p.Networks, p.Problems)
		}
	}
	p := ParseMultiNetworkPolicy([]byte(`{"metadata":`))
	if len(p.Networks) != 0 || len(p.Problems) != 1 {
		t.Errorf("unreadable JSON: networks %q, problems %q; want no network and one problem", p.Networks, p.Problems)
	}
}

func TestFromNetworkPolicy(t *testing.T) {
	udp := corev1.ProtocolUDP
	bad := corev1.Protocol("ICMP")
	dns := intstr.FromInt32(53)
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "dns"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Egress: []networkingv1.NetworkPolicyEgressRule{{
				To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{
					MatchLabels: map[string]string{"kubernetes.io/metadata.name": "kube-system"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: &dns}, {Protocol: &bad}},
			}},
		},
	}
	p := FromNetworkPolicy(np)
	if p.Kind != KindNetworkPolicy || p.Namespace != "ns" || p.Name != "dns" || !reflect.DeepEqual(p.Networks, []NetworkID{Primary}) {
		t.Errorf("identity = %s %s/%s %q", p.Kind, p.Namespace, p.Name, p.Networks)
	}
	want := `sel="app=web" isolates=ingress,egress; egress[0] peers=[0:pods()@ns(kubernetes.io/metadata.name=kube-system)] ports=[UDP/53]`
	if got := describe(p.valid); got != want {
		t.Errorf("validated\n got %s\nwant %s", got, want)
	}
	wantProblems := []string{`spec.egress[0].ports[1].protocol: "ICMP" is not TCP, UDP or SCTP; the port is ignored`}
	if !reflect.DeepEqual(p.Problems, wantProblems) {
		t.Errorf("problems = %q, want %q", p.Problems, wantProblems)
	}
	np.Spec.PodSelector.MatchLabels["app"] = "changed"
	if p.Spec.PodSelector.MatchLabels["app"] != "web" {
		t.Error("the policy shares its spec with the object it came from")
	}
	if p := FromNetworkPolicy(nil); len(p.Networks) != 0 || len(p.Problems) != 1 {
		t.Errorf("FromNetworkPolicy(nil) = networks %q, problems %q", p.Networks, p.Problems)
	}
}
