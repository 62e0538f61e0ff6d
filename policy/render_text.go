package policy

import (
	"slices"
	"strings"
)

// String returns the table in nft syntax: "nft -f" creates it from this text in a network
// namespace that does not have it yet.
func (t NftTable) String() string {
	var b strings.Builder
	b.WriteString("table " + t.ref() + " {\n")
	sep := ""
	for _, s := range t.Sets {
		b.WriteString(sep)
		sep = "\n"
		b.WriteString("\tset " + s.Name + " {\n")
		b.WriteString("\t\t" + s.declaration() + "\n")
		if s.Interval {
			b.WriteString("\t\tflags interval\n")
		}
		if len(s.Elements) > 0 {
			b.WriteString("\t\telements = { " + strings.Join(s.Elements, ", ") + " }\n")
		}
		b.WriteString("\t}\n")
	}
	for _, m := range t.Maps {
		b.WriteString(sep)
		sep = "\n"
		b.WriteString("\tmap " + m.Name + " {\n")
		b.WriteString("\t\ttype ifname : verdict\n")
		if len(m.Elements) > 0 {
			b.WriteString("\t\telements = { " + nftMapElements(m.Elements) + " }\n")
		}
		b.WriteString("\t}\n")
	}
	for _, c := range t.Chains {
		b.WriteString(sep)
		sep = "\n"
		b.WriteString("\tchain " + c.Name + " {\n")
		if c.Base != "" {
			b.WriteString("\t\t" + c.Base + "\n")
		}
		for _, r := range c.Rules {
			b.WriteString("\t\t" + r + "\n")
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// nftMapElements writes map elements as nft's "key : verdict" list.
func nftMapElements(es []NftMapElement) string {
	items := make([]string, len(es))
	for i, e := range es {
		items[i] = `"` + e.Key + `" : ` + e.Verdict
	}
	return strings.Join(items, ", ")
}

// Equal reports whether two tables are of one family and hold the same sets, maps and chains.
func (t NftTable) Equal(u NftTable) bool {
	return t.Family == u.Family && slices.EqualFunc(t.Sets, u.Sets, func(a, b NftSet) bool {
		return a.Name == b.Name && a.Type == b.Type && a.Interval == b.Interval && slices.Equal(a.Elements, b.Elements)
	}) && slices.EqualFunc(t.Maps, u.Maps, func(a, b NftMap) bool {
		return a.Name == b.Name && slices.Equal(a.Elements, b.Elements)
	}) && slices.EqualFunc(t.Chains, u.Chains, func(a, b NftChain) bool {
		return a.Name == b.Name && a.Base == b.Base && slices.Equal(a.Rules, b.Rules)
	})
}

// clone returns a copy of t that shares no slice with it.
func (t NftTable) clone() NftTable {
	c := NftTable{
		Family: t.Family,
		Sets:   slices.Clone(t.Sets),
		Maps:   slices.Clone(t.Maps),
		Chains: slices.Clone(t.Chains),
	}
	for i := range c.Sets {
		c.Sets[i].Elements = slices.Clone(c.Sets[i].Elements)
	}
	for i := range c.Maps {
		c.Maps[i].Elements = slices.Clone(c.Maps[i].Elements)
	}
	for i := range c.Chains {
		c.Chains[i].Rules = slices.Clone(c.Chains[i].Rules)
	}
	return c
}

// declaration is how the set's type is declared: "type ipv4_addr", or a typeof declaration
// as is.
func (s NftSet) declaration() string {
	if strings.HasPrefix(s.Type, "typeof ") {
		return s.Type
	}
	return "type " + s.Type
}
