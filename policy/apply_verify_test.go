package policy

import (
	"slices"
	"testing"
)

// kernelListing is "nft -j list table inet loom" as nft 1.0.6 prints it, for a table with
// every element form Verify must read.
const kernelListing = `{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
{"table": {"family": "inet", "name": "loom", "handle": 2}},
{"set": {"family": "inet", "name": "s_a", "table": "loom", "type": "ipv4_addr", "handle": 5, "elem": ["10.0.0.1", "10.0.0.2"]}},
{"set": {"family": "inet", "name": "s_n", "table": "loom", "type": "ipv4_addr", "handle": 6, "flags": ["interval"],
  "elem": [{"prefix": {"addr": "10.1.0.0", "len": 25}}, {"prefix": {"addr": "10.1.0.128", "len": 25}}, "10.2.0.1",
           {"range": ["10.3.0.0", "10.3.0.9"]}, {"elem": {"val": {"prefix": {"addr": "10.4.0.0", "len": 16}}, "comment": "x"}}]}},
{"set": {"family": "inet", "name": "s_a6", "table": "loom", "type": "ipv6_addr", "handle": 7, "elem": ["fd00::1"]}},
{"set": {"family": "inet", "name": "s_n6", "table": "loom", "type": "ipv6_addr", "handle": 8, "flags": ["interval"]}},
{"map": {"family": "inet", "name": "egress", "table": "loom", "type": "ifname", "handle": 9, "map": "verdict",
  "elem": [["net1", {"goto": {"target": "eg_net1"}}], ["net9", {"accept": null}]]}},
{"chain": {"family": "inet", "table": "loom", "name": "eg_net1", "handle": 1}},
{"chain": {"family": "inet", "table": "loom", "name": "output", "handle": 2, "type": "filter", "hook": "output", "prio": 0, "policy": "accept"}},
{"rule": {"family": "inet", "table": "loom", "chain": "eg_net1", "handle": 11, "expr": [{"accept": null}]}},
{"rule": {"family": "inet", "table": "loom", "chain": "output", "handle": 12, "expr": [{"accept": null}]}},
{"rule": {"family": "inet", "table": "loom", "chain": "output", "handle": 13, "expr": [{"accept": null}]}}
]}`

// kernelListingTable is the rendered table kernelListing holds.
var kernelListingTable = NftTable{
	Sets: []NftSet{
		{Name: "s_a", Type: "ipv4_addr", Elements: []string{"10.0.0.1", "10.0.0.2"}},
		{Name: "s_a6", Type: "ipv6_addr", Elements: []string{"fd00::1"}},
		{Name: "s_n", Type: "ipv4_addr", Interval: true, Elements: []string{"10.1.0.0/24", "10.2.0.1", "10.3.0.0/29", "10.3.0.8/31", "10.4.0.0/16"}},
		{Name: "s_n6", Type: "ipv6_addr", Interval: true},
	},
	Maps: []NftMap{{Name: "egress", Elements: []NftMapElement{{Key: "net1", Verdict: "goto eg_net1"}, {Key: "net9", Verdict: "accept"}}}},
	Chains: []NftChain{
		{Name: "eg_net1", Rules: []string{"accept"}},
		{Name: "output", Base: "type filter hook output priority filter; policy accept;", Rules: []string{"a", "b"}},
	},
}

func TestKernelViewMatches(t *testing.T) {
	got, err := parseKernelTable([]byte(kernelListing))
	if err != nil {
		t.Fatal(err)
	}
	if diffs := got.drift(kernelViewOf(kernelListingTable)); len(diffs) > 0 {
		t.Errorf("the listing differs from the table it holds: %q", diffs)
	}
}

func TestKernelViewDrift(t *testing.T) {
	got, err := parseKernelTable([]byte(kernelListing))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		change func(*NftTable)
		want   string
	}{
		{"element missing", func(n *NftTable) { n.Sets[0].Elements = append(n.Sets[0].Elements, "10.0.0.3") }, "set s_a lacks {10.0.0.3}"},
		{"element extra", func(n *NftTable) { n.Sets[0].Elements = n.Sets[0].Elements[:1] }, "set s_a holds {10.0.0.2}"},
		{"interval narrower", func(n *NftTable) { n.Sets[2].Elements[0] = "10.1.0.0/25" },
			"set s_n lacks {10.1.0.0-10.1.0.127} holds {10.1.0.0-10.1.0.255}"},
		{"set missing", func(n *NftTable) { n.Sets = append(n.Sets, NftSet{Name: "t_a", Type: "ipv4_addr"}) }, "set t_a is missing"},
		{"set extra", func(n *NftTable) { n.Sets = n.Sets[1:] }, "set s_a was not applied"},
		{"map element", func(n *NftTable) { n.Maps[0].Elements[1].Verdict = "drop" }, `map egress lacks {"net9" : drop} holds {"net9" : accept}`},
		{"rule count", func(n *NftTable) { n.Chains[1].Rules = n.Chains[1].Rules[:1] }, "chain output has 2 rules, want 1"},
		{"chain missing", func(n *NftTable) { n.Chains = append(n.Chains, NftChain{Name: "in_net1"}) }, "chain in_net1 is missing"},
		{"chain extra", func(n *NftTable) { n.Chains = n.Chains[1:] }, "chain eg_net1 was not applied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := kernelListingTable.clone()
			tc.change(&want)
			diffs := got.drift(kernelViewOf(want))
			if len(diffs) != 1 {
				t.Fatalf("got differences %q, want one", diffs)
			}
			if diffs[0] != tc.want {
				t.Errorf("got %q, want %q", diffs[0], tc.want)
			}
		})
	}
}

func TestParseKernelTableRefuses(t *testing.T) {
	for _, bad := range []string{
		`not json`,
		`{"nftables": [{"set": {"name": "s", "elem": [{"concat": ["a", "b"]}]}}]}`,
		`{"nftables": [{"set": {"name": "s", "elem": ["not-an-address"]}}]}`,
		`{"nftables": [{"map": {"name": "m", "elem": [["k"]]}}]}`,
	} {
		if _, err := parseKernelTable([]byte(bad)); err == nil {
			t.Errorf("parseKernelTable(%s) succeeded", bad)
		}
	}
}

func TestCoverage(t *testing.T) {
	r := func(s string) addrRange {
		x, ok := rangeOf(s)
		if !ok {
			t.Fatalf("rangeOf(%q) failed", s)
		}
		return x
	}
	got := coverage([]addrRange{r("10.0.0.128/25"), r("10.0.0.0/25"), r("10.0.1.0"), r("10.0.3.0/24"), r("fd00::/127"), r("10.0.3.7")}, true)
	want := []string{"10.0.0.0-10.0.1.0", "10.0.3.0-10.0.3.255", "fd00::-fd00::1"}
	if !slices.Equal(got, want) {
		t.Errorf("coverage: got %q, want %q", got, want)
	}
	if got := coverage([]addrRange{r("10.0.0.2"), r("10.0.0.1")}, false); !slices.Equal(got, []string{"10.0.0.1", "10.0.0.2"}) {
		t.Errorf("coverage of a hash set: got %q", got)
	}
}
