package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"slices"
)

// Set names say what a set means, never who is in it, so that a pod coming or going changes
// the elements of the sets it belongs to and nothing else: the rules that name the sets stay
// as they are. A name is a kind letter and a hash of the meaning:
//
//	u_…  the addresses of a network that belong to pods (a guard's Universe)
//	t_…  what a tenant reaches on a network (a guard's Allowed)
//	p_…  the pods a peer's selectors pick on a network (whichever policy the peer is in), or
//	     those of them where a named port has a given number
//
// 64 bits of hash keep names unique among any number of sets a cluster can have, and keep
// them short: with the two characters a renderer adds they fit nftables' 32-byte limit of
// older kernels.
const (
	kindUniverse = "u"
	kindReach    = "t"
	kindPeer     = "p"
)

// setName names the set of the given kind whose meaning parts spell out.
func setName(kind string, parts ...string) string {
	var buf [256]byte
	meaning := buf[:0]
	for _, p := range parts {
		meaning = append(append(meaning, p...), 0)
	}
	sum := sha256.Sum256(meaning)
	var name [2 + 16]byte
	name[0], name[1] = kind[0], '_'
	hex.Encode(name[2:], sum[:8])
	return string(name[:])
}

// setBuilder collects the elements of an AddrSet.
type setBuilder struct {
	addrs    []netip.Addr
	prefixes []netip.Prefix
	macs     []MAC
}

func (b *setBuilder) addMAC(m MAC) {
	if !m.IsZero() {
		b.macs = append(b.macs, m)
	}
}

func (b *setBuilder) addAddrs(as []netip.Addr) {
	if b.addrs == nil {
		b.addrs = make([]netip.Addr, 0, 16)
	}
	for _, a := range as {
		b.addrs = append(b.addrs, a.Unmap())
	}
}

func (b *setBuilder) addPrefixes(ps []netip.Prefix) {
	for _, p := range ps {
		if p.IsValid() {
			b.prefixes = append(b.prefixes, netip.PrefixFrom(p.Addr().Unmap(), p.Bits()).Masked())
		}
	}
}

// build returns the set in canonical form: prefixes sorted, none inside another; addresses
// sorted, unique, none inside a prefix. Elements never overlap, as an nftables interval set
// requires, and equal sets are deep-equal. The set reuses the builder's memory: b is spent.
func (b *setBuilder) build() AddrSet {
	var s AddrSet
	slices.SortFunc(b.prefixes, comparePrefix)
	for _, p := range b.prefixes {
		// Sorted by address then length, a prefix that contains p comes before it, and any
		// prefix between the two lies inside the first: the last one kept is enough to check.
		if n := len(s.Prefixes); n > 0 && s.Prefixes[n-1].Bits() <= p.Bits() && s.Prefixes[n-1].Contains(p.Addr()) {
			continue
		}
		if s.Prefixes == nil {
			s.Prefixes = b.prefixes[:0]
		}
		s.Prefixes = append(s.Prefixes, p)
	}
	slices.SortFunc(b.addrs, netip.Addr.Compare)
	s.Addrs = keepUncovered(b.addrs[:0], b.addrs, s.Prefixes)
	if len(b.macs) > 0 {
		slices.SortFunc(b.macs, func(x, y MAC) int { return bytes.Compare(x[:], y[:]) })
		s.MACs = slices.Compact(b.macs)
	}
	*b = setBuilder{}
	return s
}

// withSorted returns s with the addresses of sorted (sorted, unique) added, merging rather
// than sorting again: for the long list every tenant's reach set shares.
func (s AddrSet) withSorted(sorted []netip.Addr) AddrSet {
	merged := make([]netip.Addr, 0, len(s.Addrs)+len(sorted))
	i, j := 0, 0
	for i < len(s.Addrs) || j < len(sorted) {
		switch {
		case j == len(sorted) || (i < len(s.Addrs) && s.Addrs[i].Less(sorted[j])):
			merged = append(merged, s.Addrs[i])
			i++
		default:
			merged = append(merged, sorted[j])
			j++
		}
	}
	s.Addrs = keepUncovered(merged[:0], merged, s.Prefixes)
	return s
}

// keepUncovered appends to dst the valid addresses of sorted that are not repeated and not
// inside one of ps (sorted, not overlapping); dst may share sorted's memory. Both lists being
// sorted, one walk over each does. It returns nil rather than an empty list.
func keepUncovered(dst, sorted []netip.Addr, ps []netip.Prefix) []netip.Addr {
	var last netip.Addr
	n, k := 0, 0
	for _, a := range sorted {
		for k < len(ps) && !ps[k].Contains(a) && ps[k].Addr().Less(a) {
			k++ // ps[k] lies before a: no later address is in it either
		}
		if !a.IsValid() || (n > 0 && a == last) || (k < len(ps) && ps[k].Contains(a)) {
			continue
		}
		dst = append(dst, a)
		last = a
		n++
	}
	if n == 0 {
		return nil
	}
	return dst
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
