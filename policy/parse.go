package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
)

// MultiNetworkPolicyGVR is the NPWG MultiNetworkPolicy resource.
var MultiNetworkPolicyGVR = schema.GroupVersionResource{Group: "k8s.cni.cncf.io", Version: "v1beta1", Resource: "multi-networkpolicies"}

// PolicyForAnnotation is where a MultiNetworkPolicy names the networks it applies to:
// comma-separated NetworkAttachmentDefinitions, "namespace/name" or "name" in the policy's
// own namespace.
const PolicyForAnnotation = "k8s.v1.cni.cncf.io/policy-for"

// FromNetworkPolicy validates a Kubernetes NetworkPolicy, which applies to the primary network.
func FromNetworkPolicy(np *networkingv1.NetworkPolicy) Policy {
	p := Policy{Kind: KindNetworkPolicy}
	if np == nil {
		p.Problems = []string{"policy: missing; it applies to no network"}
		p.valid = &validPolicy{podSelector: labels.Nothing()}
		return p
	}
	p.Namespace, p.Name = np.Namespace, np.Name
	p.Networks = []NetworkID{Primary}
	p.Spec = *np.Spec.DeepCopy()
	p.valid, p.Problems = validate(&p.Spec, nil)
	return p
}

// FromMultiNetworkPolicy validates a MultiNetworkPolicy (k8s.cni.cncf.io/v1beta1) as an
// informer of the dynamic client delivers it: an *unstructured.Unstructured.
func FromMultiNetworkPolicy(obj any) Policy {
	var u *unstructured.Unstructured
	switch o := obj.(type) {
	case *unstructured.Unstructured:
		u = o
	case unstructured.Unstructured:
		u = &o
	}
	if u == nil || u.Object == nil {
		return Policy{
			Kind:     KindMultiNetworkPolicy,
			Problems: []string{fmt.Sprintf("policy: a %T is not a MultiNetworkPolicy; it applies to no network", obj)},
			valid:    &validPolicy{podSelector: labels.Nothing()},
		}
	}
	data, err := json.Marshal(u.Object)
	if err != nil {
		return Policy{
			Kind: KindMultiNetworkPolicy, Namespace: u.GetNamespace(), Name: u.GetName(),
			Problems: []string{fmt.Sprintf("policy: cannot be encoded: %v; it applies to no network", err)},
			valid:    &validPolicy{podSelector: labels.Nothing()},
		}
	}
	return ParseMultiNetworkPolicy(data)
}

// ParseMultiNetworkPolicy validates a MultiNetworkPolicy written as JSON. Its spec has the
// shape of a NetworkPolicy's; the networks come from PolicyForAnnotation. A part that cannot
// be decoded is a problem like any invalid part, and narrows the policy in the same way.
func ParseMultiNetworkPolicy(data []byte) Policy {
	p := Policy{Kind: KindMultiNetworkPolicy}
	var probs problemList
	var obj struct {
		Metadata struct {
			Name        string                     `json:"name"`
			Namespace   string                     `json:"namespace"`
			Annotations map[string]json.RawMessage `json:"annotations"`
		} `json:"metadata"`
		Spec json.RawMessage `json:"spec"`
	}
	if err := json.Unmarshal(data, &obj); err != nil {
		p.Problems = []string{fmt.Sprintf("policy: cannot be read: %v; it applies to no network", err)}
		p.valid = &validPolicy{podSelector: labels.Nothing()}
		return p
	}
	p.Namespace, p.Name = obj.Metadata.Namespace, obj.Metadata.Name
	if p.Namespace == "" {
		probs.add("metadata.namespace", "missing; the policy selects no pod")
	}
	p.Networks = policyFor(obj.Metadata.Annotations, p.Namespace, &probs)
	var full networkingv1.NetworkPolicySpec
	var bad unreadable
	full, p.Spec, bad = decodeSpec(obj.Spec, &probs)
	v, vprobs := validate(&full, bad)
	p.valid = v
	p.Problems = append(probs, vprobs...)
	return p
}

// policyFor reads the networks a MultiNetworkPolicy applies to. An entry that is not a valid
// network name is left out: no NetworkAttachmentDefinition can have that name.
func policyFor(annotations map[string]json.RawMessage, namespace string, probs *problemList) []NetworkID {
	path := fmt.Sprintf("metadata.annotations[%q]", PolicyForAnnotation)
	raw, ok := annotations[PolicyForAnnotation]
	var value string
	if ok {
		if err := json.Unmarshal(raw, &value); err != nil {
			probs.add(path, "not a string; the policy applies to no network")
			return nil
		}
	}
	if strings.TrimSpace(value) == "" {
		probs.add(path, "missing or empty; the policy applies to no network")
		return nil
	}
	var out []NetworkID
	for i, item := range strings.Split(value, ",") {
		item = strings.TrimSpace(item)
		ns, name, qualified := strings.Cut(item, "/")
		if !qualified {
			ns, name = namespace, item
		}
		ns, name = strings.TrimSpace(ns), strings.TrimSpace(name)
		switch {
		case item == "":
			probs.add(path, "entry %d is empty", i)
		case strings.Contains(name, "/"):
			probs.add(path, "entry %d %q is not \"namespace/name\" or \"name\"", i, item)
		case len(validation.IsDNS1123Label(ns)) > 0:
			probs.add(path, "entry %d %q: %q is not a namespace name", i, item, ns)
		case len(validation.IsDNS1123Subdomain(name)) > 0:
			probs.add(path, "entry %d %q: %q is not a NetworkAttachmentDefinition name", i, item, name)
		default:
			out = append(out, NetworkID(ns+"/"+name))
		}
	}
	if len(out) == 0 {
		probs.add(path, "names no valid network; the policy applies to no network")
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// decodeSpec decodes a NetworkPolicySpec from JSON one element at a time, so that one bad
// element costs only itself. full keeps a zero value wherever an element could not be decoded
// (bad names those places) so that validate reports positions as written; clean leaves them
// out, and leaves out a rule whose whole peer or port list could not be decoded, so that it is
// never wider than the policy.
func decodeSpec(raw json.RawMessage, probs *problemList) (full, clean networkingv1.NetworkPolicySpec, bad unreadable) {
	bad = unreadable{}
	// Field names are matched exactly, as the API server does.
	var spec map[string]json.RawMessage
	if isNull(raw) {
		probs.add("spec", "missing; the policy selects every pod of its namespace and allows nothing")
		bad["spec"] = true
		return full, clean, bad
	}
	if err := json.Unmarshal(raw, &spec); err != nil {
		probs.add("spec", "%s; the policy selects every pod of its namespace and allows nothing", readError(err, "an object"))
		bad["spec"] = true
		return full, clean, bad
	}
	if !isNull(spec["podSelector"]) {
		if err := json.Unmarshal(spec["podSelector"], &full.PodSelector); err != nil {
			probs.add("spec.podSelector", "%s; the policy selects every pod of its namespace and allows nothing", readError(err, "a label selector"))
			bad["spec.podSelector"] = true
		}
	}
	const bothDirections = "the policy isolates both directions"
	for i, t := range decodeList("spec.policyTypes", spec["policyTypes"], bothDirections, probs, bad) {
		var v networkingv1.PolicyType
		if decodeElement(fmt.Sprintf("spec.policyTypes[%d]", i), t, &v, "a string", bothDirections, probs, bad) {
			clean.PolicyTypes = append(clean.PolicyTypes, v)
		} else {
			bad["spec.policyTypes"] = true
		}
		full.PolicyTypes = append(full.PolicyTypes, v)
	}
	for _, r := range decodeRules(ingress, spec["ingress"], probs, bad) {
		full.Ingress = append(full.Ingress, networkingv1.NetworkPolicyIngressRule{From: r.peers, Ports: r.ports})
		if r.clean {
			clean.Ingress = append(clean.Ingress, networkingv1.NetworkPolicyIngressRule{From: r.cleanPeers, Ports: r.cleanPorts})
		}
	}
	for _, r := range decodeRules(egress, spec["egress"], probs, bad) {
		full.Egress = append(full.Egress, networkingv1.NetworkPolicyEgressRule{To: r.peers, Ports: r.ports})
		if r.clean {
			clean.Egress = append(clean.Egress, networkingv1.NetworkPolicyEgressRule{To: r.cleanPeers, Ports: r.cleanPorts})
		}
	}
	if !bad["spec.podSelector"] {
		clean.PodSelector = full.PodSelector
	}
	return full, clean, bad
}

// decodedRule is one rule as decoded: with zero values where elements were unreadable, and
// without them.
type decodedRule struct {
	peers, cleanPeers []networkingv1.NetworkPolicyPeer
	ports, cleanPorts []networkingv1.NetworkPolicyPort
	clean             bool // the rule belongs in the clean spec
}

func decodeRules(d dir, raw json.RawMessage, probs *problemList, bad unreadable) []decodedRule {
	var out []decodedRule
	const noRule = "the rule allows nothing"
	for i, elem := range decodeList("spec."+d.String(), raw, "no "+d.String()+" rule is used", probs, bad) {
		path := fmt.Sprintf("spec.%s[%d]", d, i)
		var rule map[string]json.RawMessage
		if !decodeElement(path, elem, &rule, "an object", noRule, probs, bad) {
			out = append(out, decodedRule{})
			continue
		}
		r := decodedRule{clean: true}
		peersPath := path + "." + d.peersField()
		for j, pe := range decodeList(peersPath, rule[d.peersField()], noRule, probs, bad) {
			var p networkingv1.NetworkPolicyPeer
			if decodeElement(fmt.Sprintf("%s[%d]", peersPath, j), pe, &p, "an object", "the peer is ignored", probs, bad) {
				r.cleanPeers = append(r.cleanPeers, p)
			}
			r.peers = append(r.peers, p)
		}
		for j, pe := range decodeList(path+".ports", rule["ports"], noRule, probs, bad) {
			var p networkingv1.NetworkPolicyPort
			if decodeElement(fmt.Sprintf("%s.ports[%d]", path, j), pe, &p, "an object", "the port is ignored", probs, bad) {
				r.cleanPorts = append(r.cleanPorts, p)
			}
			r.ports = append(r.ports, p)
		}
		if bad[peersPath] || bad[path+".ports"] ||
			(len(r.peers) > 0 && len(r.cleanPeers) == 0) || (len(r.ports) > 0 && len(r.cleanPorts) == 0) {
			r.clean = false
		}
		out = append(out, r)
	}
	return out
}

// decodeList splits a JSON list into its elements; absent or null is an empty list. When
// it is not a list, consequence says what that costs.
func decodeList(path string, raw json.RawMessage, consequence string, probs *problemList, bad unreadable) []json.RawMessage {
	if isNull(raw) {
		return nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		probs.add(path, "%s; %s", readError(err, "a list"), consequence)
		bad[path] = true
		return nil
	}
	return list
}

// decodeElement decodes one element of a list; false (with the problem recorded) when it is
// null or cannot be read. A null element is never read as an empty one: an empty rule or
// port allows everything.
func decodeElement(path string, raw json.RawMessage, v any, want, consequence string, probs *problemList, bad unreadable) bool {
	if isNull(raw) {
		probs.add(path, "is null; %s", consequence)
		bad[path] = true
		return false
	}
	if err := json.Unmarshal(raw, v); err != nil {
		probs.add(path, "%s; %s", readError(err, want), consequence)
		bad[path] = true
		return false
	}
	return true
}

func isNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || bytes.Equal(raw, []byte("null"))
}

// readError says why a JSON value could not be decoded into what the field wants.
func readError(err error, want string) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field == "" {
		return fmt.Sprintf("is a JSON %s, not %s", te.Value, want)
	}
	return fmt.Sprintf("cannot be read (%v)", err)
}
