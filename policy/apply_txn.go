package policy

import (
	"fmt"
	"slices"
	"strings"
)

// replaceScript is the transaction that replaces whatever "inet loom" table the namespace
// has, or none, with want. The first two commands make the delete succeed whether or not the
// table exists; nft runs the file as one transaction, so packets see the old table or the
// new one, never neither.
func replaceScript(want NftTable) string {
	return deleteScript(want.Family) + want.String()
}

// deleteScript removes the table, whether or not it exists, in one transaction.
func deleteScript(family string) string {
	ref := tableRef(family)
	return "add table " + ref + "\ndelete table " + ref + "\n"
}

// updateScript is the transaction that turns the table have into want by changing only what
// differs, or "" when nothing does. ok is false when the change cannot be made in place (a
// set changes type or flags, a chain its hook): the table must then be replaced.
//
// The commands come in an order nft accepts in one transaction: new sets, maps and chains
// are declared first, so elements and rules can refer to them; set elements change next;
// then the chains whose rules changed are flushed and refilled; then map elements; and last
// the chains, maps and sets no longer wanted are deleted, once nothing refers to them.
func updateScript(have, want NftTable) (script string, ok bool) {
	d := tableDiff{
		ref:        want.ref(),
		have:       have,
		want:       want,
		haveSets:   indexByName(have.Sets, func(s NftSet) string { return s.Name }),
		haveMaps:   indexByName(have.Maps, func(m NftMap) string { return m.Name }),
		haveChains: indexByName(have.Chains, func(c NftChain) string { return c.Name }),
	}
	if !d.declare() {
		return "", false
	}
	d.setElements()
	d.chainRules()
	d.mapElements()
	d.deleteUnwanted()
	return d.b.String(), true
}

// tableDiff writes the commands that turn have into want.
type tableDiff struct {
	ref        string // the table's name in commands
	b          strings.Builder
	have, want NftTable
	haveSets   map[string]NftSet
	haveMaps   map[string]NftMap
	haveChains map[string]NftChain
}

// declare adds the sets, maps and chains want has and have lacks. It returns false if one
// that both have differs in what cannot change in place: a set's type or flags, a chain's
// hook.
func (d *tableDiff) declare() bool {
	for _, s := range d.want.Sets {
		old, had := d.haveSets[s.Name]
		if had && (old.Type != s.Type || old.Interval != s.Interval) {
			return false
		}
		if !had {
			flags := ""
			if s.Interval {
				flags = " flags interval;"
			}
			fmt.Fprintf(&d.b, "add set %s %s { %s;%s }\n", d.ref, s.Name, s.declaration(), flags)
		}
	}
	for _, m := range d.want.Maps {
		if _, had := d.haveMaps[m.Name]; !had {
			fmt.Fprintf(&d.b, "add map %s %s { type ifname : verdict; }\n", d.ref, m.Name)
		}
	}
	for _, c := range d.want.Chains {
		old, had := d.haveChains[c.Name]
		switch {
		case had && old.Base != c.Base:
			return false
		case had:
		case c.Base != "":
			fmt.Fprintf(&d.b, "add chain %s %s { %s }\n", d.ref, c.Name, c.Base)
		default:
			fmt.Fprintf(&d.b, "add chain %s %s\n", d.ref, c.Name)
		}
	}
	return true
}

// setElements deletes and adds the set elements that differ.
func (d *tableDiff) setElements() {
	for _, s := range d.want.Sets {
		old := d.haveSets[s.Name].Elements
		if slices.Equal(old, s.Elements) {
			continue
		}
		gone, added := elementDiff(old, s.Elements)
		writeElementCmd(&d.b, d.ref, "delete", s.Name, gone)
		writeElementCmd(&d.b, d.ref, "add", s.Name, added)
	}
}

// chainRules rewrites the chains whose rules differ and fills the new ones.
func (d *tableDiff) chainRules() {
	for _, c := range d.want.Chains {
		old, had := d.haveChains[c.Name]
		if had && slices.Equal(old.Rules, c.Rules) {
			continue
		}
		if had {
			fmt.Fprintf(&d.b, "flush chain %s %s\n", d.ref, c.Name)
		}
		for _, r := range c.Rules {
			fmt.Fprintf(&d.b, "add rule %s %s %s\n", d.ref, c.Name, r)
		}
	}
}

// mapElements deletes and adds the map elements that differ; an element whose verdict
// changed is deleted and added again.
func (d *tableDiff) mapElements() {
	for _, m := range d.want.Maps {
		old := d.haveMaps[m.Name].Elements
		if slices.Equal(old, m.Elements) {
			continue
		}
		gone, added := elementDiff(nftMapItems(old), nftMapItems(m.Elements))
		writeElementCmd(&d.b, d.ref, "delete", m.Name, nftMapKeys(gone))
		writeElementCmd(&d.b, d.ref, "add", m.Name, added)
	}
}

// deleteUnwanted deletes the maps, chains and sets have has and want lacks, in that order:
// a map's elements may point at a chain, a chain's rules at a set.
func (d *tableDiff) deleteUnwanted() {
	wantMaps := indexByName(d.want.Maps, func(m NftMap) string { return m.Name })
	wantChains := indexByName(d.want.Chains, func(c NftChain) string { return c.Name })
	wantSets := indexByName(d.want.Sets, func(s NftSet) string { return s.Name })
	for _, m := range d.have.Maps {
		if _, keep := wantMaps[m.Name]; !keep {
			fmt.Fprintf(&d.b, "delete map %s %s\n", d.ref, m.Name)
		}
	}
	var gone []string
	for _, c := range d.have.Chains {
		if _, keep := wantChains[c.Name]; !keep {
			// A chain must be empty before it goes: flush them all first, so that a chain
			// whose rules jump to another one being deleted does not hold it.
			fmt.Fprintf(&d.b, "flush chain %s %s\n", d.ref, c.Name)
			gone = append(gone, c.Name)
		}
	}
	for _, name := range gone {
		fmt.Fprintf(&d.b, "delete chain %s %s\n", d.ref, name)
	}
	for _, s := range d.have.Sets {
		if _, keep := wantSets[s.Name]; !keep {
			fmt.Fprintf(&d.b, "delete set %s %s\n", d.ref, s.Name)
		}
	}
}

// writeElementCmd writes one command that adds or deletes elements of a set or map.
func writeElementCmd(b *strings.Builder, ref, verb, set string, elems []string) {
	if len(elems) == 0 {
		return
	}
	fmt.Fprintf(b, "%s element %s %s { %s }\n", verb, ref, set, strings.Join(elems, ", "))
}

// nftMapItems writes map elements as nft does in an element command.
func nftMapItems(es []NftMapElement) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = nftMapElements([]NftMapElement{e})
	}
	return out
}

// nftMapKeys keeps the key of each map item: deleting a map element names only its key.
func nftMapKeys(items []string) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i], _, _ = strings.Cut(it, " : ")
	}
	return out
}

// elementDiff returns the elements of old not in want and those of want not in old, each in
// the order they come in.
func elementDiff(old, want []string) (gone, added []string) {
	in := make(map[string]bool, len(want))
	for _, e := range want {
		in[e] = true
	}
	had := make(map[string]bool, len(old))
	for _, e := range old {
		had[e] = true
		if !in[e] {
			gone = append(gone, e)
		}
	}
	for _, e := range want {
		if !had[e] {
			added = append(added, e)
		}
	}
	return gone, added
}

func indexByName[T any](xs []T, key func(T) string) map[string]T {
	m := make(map[string]T, len(xs))
	for _, x := range xs {
		m[key(x)] = x
	}
	return m
}
