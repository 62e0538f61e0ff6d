package policy

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// direction renders the rules of one direction of an endpoint. key is the peer's address
// field (daddr for egress, saddr for ingress), allow what an allowed packet does.
func (r *renderer) direction(d Direction, key, allow string) []string {
	rules := r.guard(d.Guard, key)
	if !d.Isolated {
		return append(rules, allow)
	}
	for _, rule := range d.Rules {
		rules = append(rules, r.rule(rule, key, allow)...)
	}
	return append(rules, "drop")
}

// guard renders the tenant boundary: drop a peer in Universe that is not in Allowed, one
// rule per part of Universe.
func (r *renderer) guard(g Guard, key string) []string {
	if g.Universe == "" {
		return nil
	}
	allowed := r.parts(g.Allowed)
	var rules []string
	for _, u := range r.parts(g.Universe) {
		var b strings.Builder
		fmt.Fprintf(&b, "%s %s @%s", u.family, key, u.name)
		for _, a := range allowed {
			if a.family == u.family {
				fmt.Fprintf(&b, " %s %s != @%s", a.family, key, a.name)
			}
		}
		b.WriteString(" drop")
		rules = append(rules, b.String())
	}
	return rules
}

// rule renders one allow rule: one nft rule per part of its peer and protocol of its ports.
// A rule with no usable peer or port renders to nothing.
func (r *renderer) rule(rule Rule, key, allow string) []string {
	peers := r.peerMatches(rule.Peer, key)
	ports, ok := nftPortMatches(rule.Ports)
	if !ok {
		return nil
	}
	tail := allow
	if c := ruleComment(rule.Policy); c != "" {
		tail += " " + c
	}
	var out []string
	for _, p := range peers {
		for _, q := range ports {
			out = append(out, joinWords(p, q, tail))
		}
	}
	return out
}

// peerMatches renders the address matches of a peer: [""] for everyone, one match per set
// part, a CIDR with its excepts, or nothing for a peer that matches no address.
func (r *renderer) peerMatches(p Peer, key string) []string {
	switch {
	case p.Any:
		return []string{""}
	case p.Set != "":
		var out []string
		for _, part := range r.parts(p.Set) {
			out = append(out, fmt.Sprintf("%s %s @%s", part.family, key, part.name))
		}
		return out
	case p.CIDR.IsValid():
		cidr := maskedPrefix(p.CIDR)
		fam := addrFamily(cidr.Addr())
		var except []netip.Prefix
		for _, e := range p.Except {
			if !e.IsValid() {
				continue
			}
			e = maskedPrefix(e)
			if e.Addr().Is4() != cidr.Addr().Is4() || !e.Overlaps(cidr) {
				continue
			}
			if e.Bits() <= cidr.Bits() {
				return nil // the excepts take the whole CIDR away
			}
			except = append(except, e)
		}
		m := fmt.Sprintf("%s %s %s", fam, key, nftPrefix(cidr))
		if except = disjointPrefixes(except); len(except) > 0 {
			m += fmt.Sprintf(" %s %s != { %s }", fam, key, joinNftPrefixes(except))
		}
		return []string{m}
	}
	return nil
}

// l4Protocols maps the protocols of Kubernetes policies to nft's names, in rendering order.
var l4Protocols = []struct{ k8s, nft string }{{"TCP", "tcp"}, {"UDP", "udp"}, {"SCTP", "sctp"}}

// nftPortMatches renders ports as one match per protocol: [""] when ports is empty (every
// protocol), ok false when none of them can be rendered.
func nftPortMatches(ports []Port) ([]string, bool) {
	if len(ports) == 0 {
		return []string{""}, true
	}
	type span struct{ lo, hi uint16 }
	byProto := map[string][]span{}
	whole := map[string]bool{}
	for _, p := range ports {
		proto := strings.ToUpper(p.Protocol)
		if proto == "" {
			proto = "TCP" // the Kubernetes default
		}
		switch {
		case p.Port == 0:
			whole[proto] = true
		case p.EndPort == 0 || p.EndPort == p.Port:
			byProto[proto] = append(byProto[proto], span{p.Port, p.Port})
		case p.EndPort > p.Port:
			byProto[proto] = append(byProto[proto], span{p.Port, p.EndPort})
		}
	}
	var out []string
	for _, proto := range l4Protocols {
		spans := byProto[proto.k8s]
		if whole[proto.k8s] {
			out = append(out, "meta l4proto "+proto.nft)
			continue
		}
		if len(spans) == 0 {
			continue
		}
		slices.SortFunc(spans, func(a, b span) int { return cmp.Compare(a.lo, b.lo) })
		merged := spans[:1]
		for _, s := range spans[1:] {
			last := &merged[len(merged)-1]
			if uint32(s.lo) <= uint32(last.hi)+1 {
				last.hi = max(last.hi, s.hi)
				continue
			}
			merged = append(merged, s)
		}
		items := make([]string, len(merged))
		for i, s := range merged {
			items[i] = fmt.Sprint(s.lo)
			if s.hi != s.lo {
				items[i] += fmt.Sprintf("-%d", s.hi)
			}
		}
		list := items[0]
		if len(items) > 1 || merged[0].lo != merged[0].hi {
			list = "{ " + strings.Join(items, ", ") + " }"
		}
		out = append(out, fmt.Sprintf("meta l4proto %s th dport %s", proto.nft, list))
	}
	return out, len(out) > 0
}

// ruleComment renders a rule's comment naming its policy: printable ASCII without quotes or
// backslashes (nft has no escapes in strings), at most 128 bytes.
func ruleComment(policy string) string {
	if policy == "" {
		return ""
	}
	b := []byte(policy)
	for i, c := range b {
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			b[i] = '_'
		}
	}
	if len(b) > nftMaxComment {
		b = b[:nftMaxComment]
	}
	return `comment "` + string(b) + `"`
}

// joinWords joins the non-empty parts of a rule with spaces.
func joinWords(parts ...string) string {
	var nonEmpty []string
	for _, p := range parts {
		if p != "" {
			nonEmpty = append(nonEmpty, p)
		}
	}
	return strings.Join(nonEmpty, " ")
}

// endpointChainNames names the egress and ingress chains of an interface.
func endpointChainNames(ifname string) (eg, in string) {
	n := nftIdentifier(ifname)
	return "eg_" + n, "in_" + n
}

// nftSetBase is the nft name an AddrSet's sets start with: an identifier, which nft requires
// to begin with a letter.
func nftSetBase(name string) string {
	if c := name[0]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
		return nftIdentifier("s" + name + "\x00") // the NUL forces a hash: "s1" and "1" differ
	}
	return nftIdentifier(name)
}

// nftIdentifier makes name an nft identifier: letters, digits and underscores. A name that
// needed changes gets a hash of the original appended, so distinct names stay distinct.
func nftIdentifier(name string) string {
	b := []byte(name)
	changed := false
	for i, c := range b {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_') {
			b[i] = '_'
			changed = true
		}
	}
	if !changed {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return string(b) + "_" + hex.EncodeToString(sum[:4])
}

// renderableIfname reports whether a link can have this name (the kernel's dev_valid_name) and
// nft can quote it.
func renderableIfname(name string) bool {
	if name == "" || name == "." || name == ".." || len(name) > nftMaxIfname {
		return false
	}
	for _, c := range []byte(name) {
		if c <= ' ' || c > 0x7e || c == '/' || c == ':' || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}
