package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// ErrDrift is wrapped by Verify's error when the kernel's table is not the one last applied.
var ErrDrift = errors.New("table differs from the one applied")

// Verify compares the kernel's table with the one last applied: set elements, map elements,
// chain names and the number of rules in each chain. On a difference, including a table
// that is gone, it returns an error wrapping ErrDrift that says what differs, and forgets
// what was applied so that the next Apply rewrites the table whole. Before anything was
// applied there is nothing to compare, and Verify returns nil.
func (a *Applier) Verify(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.applied == nil {
		return nil
	}
	out, err := a.nftOutput(ctx, "", "-j", "list", "table", a.familyName(), nftTableName)
	if err != nil {
		// nft says "No such file or directory" for a table that is not there; ask for
		// the list of tables rather than read its message.
		exists, lerr := a.tableExists(ctx)
		if lerr != nil || exists {
			return fmt.Errorf("verify table %s%s: %w", a.ref(), a.where(), err)
		}
		a.applied = nil
		return fmt.Errorf("verify table %s%s: %w: the table is gone", a.ref(), a.where(), ErrDrift)
	}
	got, err := parseKernelTable(out)
	if err != nil {
		return fmt.Errorf("verify table %s%s: %w", a.ref(), a.where(), err)
	}
	if diffs := got.drift(kernelViewOf(*a.applied)); len(diffs) > 0 {
		a.applied = nil
		return fmt.Errorf("verify table %s%s: %w: %s", a.ref(), a.where(), ErrDrift, strings.Join(diffs, "; "))
	}
	return nil
}

// familyName is the Applier's table family as nft names it.
func (a *Applier) familyName() string {
	if a.family == "" {
		return nftFamily
	}
	return a.family
}

// tableExists reports whether the namespace has the Applier's table.
func (a *Applier) tableExists(ctx context.Context) (bool, error) {
	out, err := a.nftOutput(ctx, "", "-j", "list", "tables", a.familyName())
	if err != nil {
		return false, err
	}
	var doc struct {
		Nftables []struct {
			Table *struct {
				Family string `json:"family"`
				Name   string `json:"name"`
			} `json:"table"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return false, fmt.Errorf("parse nft's list of tables: %w", err)
	}
	for _, o := range doc.Nftables {
		if o.Table != nil && o.Table.Family == a.familyName() && o.Table.Name == nftTableName {
			return true, nil
		}
	}
	return false, nil
}

// kernelView is what Verify compares of a table: each set's members as sorted address
// ranges, each map's "key : verdict" elements, and each chain's number of rules.
type kernelView struct {
	sets   map[string][]string
	maps   map[string][]string
	chains map[string]int
}

// kernelViewOf is the view of a table as rendered.
func kernelViewOf(t NftTable) kernelView {
	v := kernelView{sets: map[string][]string{}, maps: map[string][]string{}, chains: map[string]int{}}
	for _, s := range t.Sets {
		if s.Type == nftMACSetType {
			v.sets[s.Name] = numericElements(s.Elements)
			continue
		}
		var rs []addrRange
		for _, e := range s.Elements {
			if r, ok := rangeOf(e); ok {
				rs = append(rs, r)
			}
		}
		v.sets[s.Name] = coverage(rs, s.Interval)
	}
	for _, m := range t.Maps {
		items := nftMapItems(m.Elements)
		slices.Sort(items)
		v.maps[m.Name] = items
	}
	for _, c := range t.Chains {
		v.chains[c.Name] = len(c.Rules)
	}
	return v
}

// parseKernelTable reads the output of "nft -j list table".
func parseKernelTable(out []byte) (kernelView, error) {
	var doc struct {
		Nftables []struct {
			Set   *kernelSet `json:"set"`
			Map   *kernelSet `json:"map"`
			Chain *struct {
				Name string `json:"name"`
			} `json:"chain"`
			Rule *struct {
				Chain string `json:"chain"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return kernelView{}, fmt.Errorf("parse nft's listing: %w", err)
	}
	v := kernelView{sets: map[string][]string{}, maps: map[string][]string{}, chains: map[string]int{}}
	for _, o := range doc.Nftables {
		switch {
		case o.Set != nil && o.Set.Type == "integer":
			// A set of hardware addresses, as numbers (nftMACSetType).
			elems := make([]string, 0, len(o.Set.Elem))
			for _, e := range o.Set.Elem {
				elems = append(elems, string(e))
			}
			v.sets[o.Set.Name] = numericElements(elems)
		case o.Set != nil:
			var rs []addrRange
			for _, e := range o.Set.Elem {
				r, err := kernelRange(e)
				if err != nil {
					return kernelView{}, fmt.Errorf("set %s: %w", o.Set.Name, err)
				}
				rs = append(rs, r)
			}
			v.sets[o.Set.Name] = coverage(rs, slices.Contains(o.Set.Flags, "interval"))
		case o.Map != nil:
			items, err := kernelMapItems(o.Map.Elem)
			if err != nil {
				return kernelView{}, fmt.Errorf("map %s: %w", o.Map.Name, err)
			}
			v.maps[o.Map.Name] = items
		case o.Chain != nil:
			if _, ok := v.chains[o.Chain.Name]; !ok {
				v.chains[o.Chain.Name] = 0
			}
		case o.Rule != nil:
			v.chains[o.Rule.Chain]++
		}
	}
	return v, nil
}

type kernelSet struct {
	Name  string            `json:"name"`
	Type  any               `json:"type"` // a string for a set, a list for a concatenation
	Flags []string          `json:"flags"`
	Elem  []json.RawMessage `json:"elem"`
}

// drift lists how the kernel's view k differs from the applied view want.
func (k kernelView) drift(want kernelView) []string {
	var diffs []string
	diffs = append(diffs, membersDrift("set", k.sets, want.sets)...)
	diffs = append(diffs, membersDrift("map", k.maps, want.maps)...)
	for _, name := range slices.Sorted(maps.Keys(want.chains)) {
		n, ok := k.chains[name]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("chain %s is missing", name))
		case n != want.chains[name]:
			diffs = append(diffs, fmt.Sprintf("chain %s has %d rules, want %d", name, n, want.chains[name]))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(k.chains)) {
		if _, ok := want.chains[name]; !ok {
			diffs = append(diffs, fmt.Sprintf("chain %s was not applied", name))
		}
	}
	return diffs
}

// membersDrift compares the elements of sets or maps.
func membersDrift(kind string, got, want map[string][]string) []string {
	var diffs []string
	for _, name := range slices.Sorted(maps.Keys(want)) {
		have, ok := got[name]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("%s %s is missing", kind, name))
			continue
		}
		if slices.Equal(have, want[name]) {
			continue
		}
		missing, extra := elementDiff(want[name], have)
		d := kind + " " + name
		if len(missing) > 0 {
			d += " lacks " + sample(missing)
		}
		if len(extra) > 0 {
			d += " holds " + sample(extra)
		}
		diffs = append(diffs, d)
	}
	for _, name := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[name]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s %s was not applied", kind, name))
		}
	}
	return diffs
}

// sample writes up to three elements and how many more there are.
func sample(elems []string) string {
	if len(elems) <= 3 {
		return "{" + strings.Join(elems, ", ") + "}"
	}
	return fmt.Sprintf("{%s, … %d more}", strings.Join(elems[:3], ", "), len(elems)-3)
}

// addrRange is an inclusive range of addresses of one family.
type addrRange struct{ lo, hi netip.Addr }

// rangeOf reads a rendered set element: an address or a prefix.
func rangeOf(s string) (addrRange, bool) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return prefixRange(p), true
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return addrRange{a, a}, true
	}
	return addrRange{}, false
}

func prefixRange(p netip.Prefix) addrRange {
	p = p.Masked()
	lo := p.Addr()
	b := lo.AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	hi, _ := netip.AddrFromSlice(b)
	return addrRange{lo, hi}
}

// kernelRange reads a set element of nft's JSON: an address, {"prefix": …}, {"range": …},
// or any of these wrapped in {"elem": {"val": …}}.
func kernelRange(raw json.RawMessage) (addrRange, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		a, err := netip.ParseAddr(s)
		return addrRange{a, a}, err
	}
	var o struct {
		Prefix *struct {
			Addr string `json:"addr"`
			Len  int    `json:"len"`
		} `json:"prefix"`
		Range []string `json:"range"`
		Elem  *struct {
			Val json.RawMessage `json:"val"`
		} `json:"elem"`
	}
	if err := json.Unmarshal(raw, &o); err != nil {
		return addrRange{}, fmt.Errorf("element %s: %w", raw, err)
	}
	switch {
	case o.Elem != nil:
		return kernelRange(o.Elem.Val)
	case o.Prefix != nil:
		a, err := netip.ParseAddr(o.Prefix.Addr)
		if err != nil {
			return addrRange{}, fmt.Errorf("element %s: %w", raw, err)
		}
		p, err := a.Prefix(o.Prefix.Len)
		return prefixRange(p), err
	case len(o.Range) == 2:
		lo, err1 := netip.ParseAddr(o.Range[0])
		hi, err2 := netip.ParseAddr(o.Range[1])
		if err := errors.Join(err1, err2); err != nil {
			return addrRange{}, fmt.Errorf("element %s: %w", raw, err)
		}
		return addrRange{lo, hi}, nil
	}
	return addrRange{}, fmt.Errorf("element %s: not an address, prefix or range", raw)
}

// kernelMapItems reads the elements of a verdict map of nft's JSON, [key, {"goto":
// {"target": chain}}] pairs, as sorted "key : verdict" items.
func kernelMapItems(elems []json.RawMessage) ([]string, error) {
	var items []string
	for _, raw := range elems {
		var pair []json.RawMessage
		var key string
		if err := json.Unmarshal(raw, &pair); err != nil || len(pair) != 2 || json.Unmarshal(pair[0], &key) != nil {
			return nil, fmt.Errorf("element %s: not a key and a verdict", raw)
		}
		var verdict map[string]*struct {
			Target string `json:"target"`
		}
		if err := json.Unmarshal(pair[1], &verdict); err != nil || len(verdict) != 1 {
			return nil, fmt.Errorf("element %s: not a verdict", raw)
		}
		for kind, arg := range verdict {
			v := kind
			if arg != nil && arg.Target != "" {
				v += " " + arg.Target
			}
			items = append(items, nftMapItems([]NftMapElement{{Key: key, Verdict: v}})...)
		}
	}
	slices.Sort(items)
	return items, nil
}

// coverage sorts the elements of a set, each written "lo-hi" or, for one address, "lo". The
// elements of an interval set are merged into the disjoint ranges covering the same
// addresses, so that sets holding the same addresses compare equal however nft chose to
// split them into elements.
func coverage(rs []addrRange, interval bool) []string {
	slices.SortFunc(rs, func(a, b addrRange) int {
		if c := a.lo.Compare(b.lo); c != 0 {
			return c
		}
		return a.hi.Compare(b.hi)
	})
	var merged []addrRange
	for _, r := range rs {
		if n := len(merged); n > 0 && interval {
			last := &merged[n-1]
			next := last.hi.Next()
			if last.lo.Is4() == r.lo.Is4() && (r.lo.Compare(last.hi) <= 0 || next.IsValid() && r.lo == next) {
				if r.hi.Compare(last.hi) > 0 {
					last.hi = r.hi
				}
				continue
			}
		}
		merged = append(merged, r)
	}
	out := make([]string, len(merged))
	for i, r := range merged {
		out[i] = r.lo.String()
		if r.hi != r.lo {
			out[i] += "-" + r.hi.String()
		}
	}
	return out
}

// numericElements writes the elements of a set of numbers (as rendered, 0x…, or as nft's
// JSON lists them, decimal) in one form, sorted, so that the two compare.
func numericElements(elems []string) []string {
	out := make([]string, 0, len(elems))
	for _, e := range elems {
		n, err := strconv.ParseUint(e, 0, 64)
		if err != nil {
			out = append(out, e)
			continue
		}
		out = append(out, strconv.FormatUint(n, 10))
	}
	slices.Sort(out)
	return out
}
