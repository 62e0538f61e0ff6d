package policy

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"
)

// splitAddrSet sorts an AddrSet's members into the elements of its four nft sets: addresses
// and non-overlapping prefixes, IPv4 and IPv6.
func splitAddrSet(s AddrSet) (v4a, v4n, v6a, v6n []string) {
	var a4, a6 []netip.Addr
	for _, a := range s.Addrs {
		if !a.IsValid() {
			continue
		}
		a = a.Unmap().WithZone("")
		if a.Is4() {
			a4 = append(a4, a)
		} else {
			a6 = append(a6, a)
		}
	}
	var p4, p6 []netip.Prefix
	for _, p := range s.Prefixes {
		if !p.IsValid() {
			continue
		}
		p = maskedPrefix(p)
		if p.Addr().Is4() {
			p4 = append(p4, p)
		} else {
			p6 = append(p6, p)
		}
	}
	return nftAddrs(a4), nftPrefixes(disjointPrefixes(p4)), nftAddrs(a6), nftPrefixes(disjointPrefixes(p6))
}

// setHasV6 reports whether an AddrSet has an IPv6 member, which gives it two more nft sets.
func setHasV6(s AddrSet) bool {
	for _, a := range s.Addrs {
		if a.IsValid() && !a.Unmap().Is4() {
			return true
		}
	}
	for _, p := range s.Prefixes {
		if p.IsValid() && !maskedPrefix(p).Addr().Is4() {
			return true
		}
	}
	return false
}

// maskedPrefix masks a prefix and turns an IPv4-mapped IPv6 prefix into the IPv4 one.
func maskedPrefix(p netip.Prefix) netip.Prefix {
	a := p.Addr().WithZone("")
	if a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96).Masked()
	}
	return netip.PrefixFrom(a, p.Bits()).Masked()
}

// disjointPrefixes sorts prefixes and drops those inside another: an interval set refuses
// overlapping elements.
func disjointPrefixes(ps []netip.Prefix) []netip.Prefix {
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(a.Bits(), b.Bits())
	})
	var out []netip.Prefix
	for _, p := range ps {
		// Sorted by address then length, a prefix that contains p is the last one kept
		// if any is.
		if n := len(out); n > 0 && out[n-1].Bits() <= p.Bits() && out[n-1].Contains(p.Addr()) {
			continue
		}
		out = append(out, p)
	}
	return out
}

func nftAddrs(as []netip.Addr) []string {
	slices.SortFunc(as, netip.Addr.Compare)
	as = slices.Compact(as)
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return out
}

func nftPrefixes(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = nftPrefix(p)
	}
	return out
}

// nftPrefix writes a host prefix as its address, which is how nft lists it.
func nftPrefix(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

func joinNftPrefixes(ps []netip.Prefix) string { return strings.Join(nftPrefixes(ps), ", ") }

func addrFamily(a netip.Addr) string {
	if a.Is4() {
		return "ip"
	}
	return "ip6"
}
