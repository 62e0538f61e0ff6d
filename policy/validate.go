package policy

import (
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
)

// validPolicy is a policy's spec once validated: everything Compile needs, nothing it must
// check again. What could not be validated is already left out, so every part of it is
// enforceable as it stands.
type validPolicy struct {
	podSelector labels.Selector // never nil
	isolates    [2]bool         // by dir
	rules       [2][]validRule  // by dir; only for the directions it isolates
}

// dir is a direction of traffic, as a policy names it.
type dir int

const (
	ingress dir = iota
	egress
)

func (d dir) String() string {
	if d == ingress {
		return "ingress"
	}
	return "egress"
}

// peersField is the name of a rule's peer list in this direction.
func (d dir) peersField() string {
	if d == ingress {
		return "from"
	}
	return "to"
}

// validRule is one ingress or egress rule.
type validRule struct {
	index int         // position in spec.ingress or spec.egress, part of its sets' names
	peers []validPeer // nil: every peer
	ports []validPort // nil: every port
}

// validPeer is one peer of a rule: an ipBlock (cidr valid) or a selection of pods.
type validPeer struct {
	index  int // position in the rule's from or to list
	cidr   netip.Prefix
	except []netip.Prefix
	// pods selects pods in the namespaces that namespaces selects, or in the policy's own
	// namespace when namespaces is nil.
	pods          labels.Selector
	namespaces    labels.Selector
	podsKey       string // pods.String(), computed once
	namespacesKey string // namespaces.String(), computed once
}

// validPort is one entry of a rule's ports: a protocol with a number, a range, every port
// (port 0), or a container port's name, resolved by Compile.
type validPort struct {
	protocol string
	port     uint16
	endPort  uint16
	name     string
}

// problemList collects a policy's problems as "field path: what is wrong".
type problemList []string

func (p *problemList) add(path, format string, args ...any) {
	*p = append(*p, path+": "+fmt.Sprintf(format, args...))
}

// unreadable names the parts of a spec that could not be decoded, by field path, such as
// "spec.ingress[0].from[1]". The decoder leaves a zero value at those places so that the
// positions of the others, and the paths in problems, stay as written. Its problems are
// already reported: validate leaves those parts out without a word.
type unreadable map[string]bool

// validate checks spec and returns its validated form with the problems found. Every problem
// narrows: a bad port or peer is left out, a rule left without any of the ports or peers it
// listed is left out, an unknown policy type isolates both directions, and a bad podSelector
// selects every pod of the namespace with no rules.
func validate(spec *networkingv1.NetworkPolicySpec, bad unreadable) (*validPolicy, []string) {
	var probs problemList
	v := &validPolicy{podSelector: labels.Everything()}
	v.isolates = isolation(spec, bad, &probs)
	if bad["spec"] || bad["spec.podSelector"] {
		return v, probs
	}
	sel, err := metav1.LabelSelectorAsSelector(&spec.PodSelector)
	if err != nil {
		probs.add("spec.podSelector", "%v; the policy selects every pod of its namespace and allows nothing", err)
		return v, probs
	}
	v.podSelector = sel
	if v.isolates[ingress] {
		for i, r := range spec.Ingress {
			if vr, ok := validateRule(ingress, i, r.From, r.Ports, bad, &probs); ok {
				v.rules[ingress] = append(v.rules[ingress], vr)
			}
		}
	}
	if v.isolates[egress] {
		for i, r := range spec.Egress {
			if vr, ok := validateRule(egress, i, r.To, r.Ports, bad, &probs); ok {
				v.rules[egress] = append(v.rules[egress], vr)
			}
		}
	}
	return v, probs
}

// isolation says which directions the policy isolates, as Kubernetes defaults policyTypes:
// Ingress always, Egress when the policy has egress rules (even ones that turn out invalid).
func isolation(spec *networkingv1.NetworkPolicySpec, bad unreadable, probs *problemList) [2]bool {
	both := [2]bool{true, true}
	if bad["spec"] || bad["spec.policyTypes"] {
		return both
	}
	if len(spec.PolicyTypes) == 0 {
		return [2]bool{true, len(spec.Egress) > 0 || bad["spec.egress"]}
	}
	var out [2]bool
	unknown := false
	for i, t := range spec.PolicyTypes {
		path := fmt.Sprintf("spec.policyTypes[%d]", i)
		switch {
		case bad[path]:
			unknown = true
		case t == networkingv1.PolicyTypeIngress:
			out[ingress] = true
		case t == networkingv1.PolicyTypeEgress:
			out[egress] = true
		default:
			probs.add(path, "%q is not Ingress or Egress; the policy isolates both directions", t)
			unknown = true
		}
	}
	if unknown {
		return both
	}
	return out
}

// validateRule validates one rule; ok is false when the rule must be left out.
func validateRule(d dir, i int, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort,
	bad unreadable, probs *problemList) (validRule, bool) {
	path := fmt.Sprintf("spec.%s[%d]", d, i)
	if bad[path] {
		return validRule{}, false
	}
	r := validRule{index: i}
	peersPath := path + "." + d.peersField()
	if bad[peersPath] || bad[path+".ports"] {
		return validRule{}, false
	}
	for j, p := range peers {
		ppath := fmt.Sprintf("%s[%d]", peersPath, j)
		if bad[ppath] {
			continue
		}
		if vp, ok := validatePeer(ppath, j, p, probs); ok {
			r.peers = append(r.peers, vp)
		}
	}
	if len(peers) > 0 && len(r.peers) == 0 {
		probs.add(path, "no valid peer in %s; the rule allows nothing", d.peersField())
		return validRule{}, false
	}
	for j, p := range ports {
		ppath := fmt.Sprintf("%s.ports[%d]", path, j)
		if bad[ppath] {
			continue
		}
		if vp, ok := validatePort(ppath, p, probs); ok {
			r.ports = append(r.ports, vp)
		}
	}
	if len(ports) > 0 && len(r.ports) == 0 {
		probs.add(path, "no valid port in ports; the rule allows nothing")
		return validRule{}, false
	}
	return r, true
}

// validatePeer validates one peer; ok is false when it must be left out.
func validatePeer(path string, index int, p networkingv1.NetworkPolicyPeer, probs *problemList) (validPeer, bool) {
	vp := validPeer{index: index}
	switch {
	case p.IPBlock == nil && p.PodSelector == nil && p.NamespaceSelector == nil:
		probs.add(path, "names no peer (podSelector, namespaceSelector or ipBlock); the peer is ignored")
		return vp, false
	case p.IPBlock != nil && (p.PodSelector != nil || p.NamespaceSelector != nil):
		probs.add(path, "ipBlock cannot be combined with podSelector or namespaceSelector; the peer is ignored")
		return vp, false
	case p.IPBlock != nil:
		return validateIPBlock(path+".ipBlock", vp, p.IPBlock, probs)
	}
	vp.pods = labels.Everything()
	if p.PodSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(p.PodSelector)
		if err != nil {
			probs.add(path+".podSelector", "%v; the peer is ignored", err)
			return vp, false
		}
		vp.pods = sel
	}
	vp.podsKey = vp.pods.String()
	if p.NamespaceSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(p.NamespaceSelector)
		if err != nil {
			probs.add(path+".namespaceSelector", "%v; the peer is ignored", err)
			return vp, false
		}
		vp.namespaces, vp.namespacesKey = sel, sel.String()
	}
	return vp, true
}

func validateIPBlock(path string, vp validPeer, b *networkingv1.IPBlock, probs *problemList) (validPeer, bool) {
	cidr, ok := parseCIDR(path+".cidr", b.CIDR, probs)
	if !ok {
		return vp, false
	}
	vp.cidr = cidr
	for k, e := range b.Except {
		epath := fmt.Sprintf("%s.except[%d]", path, k)
		ex, ok := parseCIDR(epath, e, probs)
		if !ok {
			return vp, false
		}
		if ex.Bits() <= cidr.Bits() || !cidr.Contains(ex.Addr()) {
			// Leaving the except out would widen the peer; leaving the peer out cannot.
			probs.add(epath, "%s is not strictly inside cidr %s; the peer is ignored", ex, cidr)
			return vp, false
		}
		vp.except = append(vp.except, ex)
	}
	return vp, true
}

// parseCIDR parses an IPv4 or IPv6 CIDR; host bits are cleared, as Kubernetes reads "10.0.0.1/24".
func parseCIDR(path, s string, probs *problemList) (netip.Prefix, bool) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		probs.add(path, "%q is not a CIDR; the peer is ignored", s)
		return netip.Prefix{}, false
	}
	if p.Addr().Is4In6() {
		// ::ffff:a.b.c.d/n would match no IPv6 packet and name an IPv4 range: refuse to guess.
		probs.add(path, "%q is an IPv4-mapped IPv6 CIDR; write the IPv4 CIDR instead; the peer is ignored", s)
		return netip.Prefix{}, false
	}
	return p.Masked(), true
}

// validatePort validates one entry of a rule's ports; ok is false when it must be left out.
func validatePort(path string, p networkingv1.NetworkPolicyPort, probs *problemList) (validPort, bool) {
	vp := validPort{protocol: string(corev1.ProtocolTCP)}
	if p.Protocol != nil {
		switch *p.Protocol {
		case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
			vp.protocol = string(*p.Protocol)
		default:
			probs.add(path+".protocol", "%q is not TCP, UDP or SCTP; the port is ignored", *p.Protocol)
			return vp, false
		}
	}
	switch {
	case p.Port == nil:
		if p.EndPort != nil {
			probs.add(path+".endPort", "needs a numeric port; the port is ignored")
			return vp, false
		}
		return vp, true
	case p.Port.Type == intstr.String:
		if msgs := validation.IsValidPortName(p.Port.StrVal); len(msgs) > 0 {
			probs.add(path+".port", "%q is neither a port number nor a port name: %s; the port is ignored",
				p.Port.StrVal, strings.Join(msgs, "; "))
			return vp, false
		}
		if p.EndPort != nil {
			probs.add(path+".endPort", "needs a numeric port, not the name %q; the port is ignored", p.Port.StrVal)
			return vp, false
		}
		vp.name = p.Port.StrVal
		return vp, true
	}
	if n := p.Port.IntVal; n < 1 || n > 65535 {
		probs.add(path+".port", "%d is not between 1 and 65535; the port is ignored", n)
		return vp, false
	}
	vp.port = uint16(p.Port.IntVal)
	if p.EndPort != nil {
		if e := *p.EndPort; e < p.Port.IntVal || e > 65535 {
			probs.add(path+".endPort", "%d is not between port %d and 65535; the port is ignored", e, p.Port.IntVal)
			return vp, false
		}
		if *p.EndPort > p.Port.IntVal {
			vp.endPort = uint16(*p.EndPort)
		}
	}
	return vp, true
}
