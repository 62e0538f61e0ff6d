package connectivity

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/loom-cni/loom/policy"
	"github.com/loom-cni/loom/policy/oracle"
)

// Summary counts the results: Leaks reached though the oracle denies them, Drops were
// blocked though it allows them.
type Summary struct {
	Probes, Matched, Leaks, Drops int
}

// Summarize counts results.
func Summarize(results []Result) Summary {
	s := Summary{Probes: len(results)}
	for _, r := range results {
		switch {
		case !r.Differs():
			s.Matched++
		case r.Reached:
			s.Leaks++
		default:
			s.Drops++
		}
	}
	return s
}

// String is the report's closing line.
func (s Summary) String() string {
	line := fmt.Sprintf("%d probes: %d matched, %d leaks, %d drops", s.Probes, s.Matched, s.Leaks, s.Drops)
	if s.Matched == s.Probes {
		line += ": every one matches the policy"
	}
	return line
}

// Network names a network as the report does: "primary", or the NAD's namespace/name.
func Network(n policy.NetworkID) string {
	if n == policy.Primary {
		return "primary"
	}
	return string(n)
}

// group is the results of one network and family.
type group struct {
	network policy.NetworkID
	family  oracle.Family
}

// Report writes one matrix per network and family (row: sender, column: receiver), each
// cell summing up every probe of the pair there:
//
//	✓ allowed and reached      · denied and blocked
//	✓· some allowed and reached, the others denied and blocked
//	LEAK some probe reached though denied       DROP some probe blocked though allowed
//
// then every probe that differs, with the oracle's reason, and the Summary line.
func Report(w io.Writer, results []Result) {
	groups := map[group][]Result{}
	for _, r := range results {
		g := group{r.Network, r.Family}
		groups[g] = append(groups[g], r)
	}
	keys := make([]group, 0, len(groups))
	for g := range groups {
		keys = append(keys, g)
	}
	slices.SortFunc(keys, func(a, b group) int {
		if c := strings.Compare(string(a.network), string(b.network)); c != 0 {
			return c
		}
		return int(a.family) - int(b.family)
	})
	for _, g := range keys {
		matrix(w, g, groups[g])
	}
	var diffs []string
	for _, r := range results {
		if r.Differs() {
			diffs = append(diffs, difference(r))
		}
	}
	if len(diffs) > 0 {
		fmt.Fprintf(w, "%d of %d probes differ from the policy:\n", len(diffs), len(results))
		for _, d := range diffs {
			fmt.Fprintln(w, "  "+d)
		}
	}
	fmt.Fprintln(w, Summarize(results))
}

func matrix(w io.Writer, g group, rs []Result) {
	var names []string
	cells := map[[2]string][]Result{}
	ports := map[string][]uint16{}
	for _, r := range rs {
		from, to := r.From.String(), r.To.String()
		names = append(names, from, to)
		cells[[2]string{from, to}] = append(cells[[2]string{from, to}], r)
		ports[r.Protocol] = append(ports[r.Protocol], r.Port)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	var what []string
	for _, proto := range []string{ICMP, TCP, UDP} {
		ps, ok := ports[proto]
		switch {
		case !ok:
		case proto == ICMP:
			what = append(what, proto)
		default:
			slices.Sort(ps)
			var list []string
			for _, p := range slices.Compact(ps) {
				list = append(list, strconv.Itoa(int(p)))
			}
			what = append(what, proto+" to "+strings.Join(list, ","))
		}
	}
	fmt.Fprintf(w, "network %s, IPv%d: %d probes (%s)\n", Network(g.network), g.family, len(rs), strings.Join(what, "; "))
	width := 4
	for _, n := range names {
		width = max(width, len(n))
	}
	fmt.Fprintf(w, "%*s", width, "")
	for i := range names {
		fmt.Fprintf(w, " %4d", i+1)
	}
	fmt.Fprintln(w)
	for i, from := range names {
		fmt.Fprintf(w, "%-*s", width, from)
		for _, to := range names {
			m := mark(cells[[2]string{from, to}])
			fmt.Fprintf(w, " %s%s", strings.Repeat(" ", max(0, 4-utf8.RuneCountInString(m))), m)
		}
		fmt.Fprintf(w, "   (%d)\n", i+1)
	}
	fmt.Fprintln(w)
}

// mark sums up the probes of one cell.
func mark(rs []Result) string {
	var allowed, denied, leak, drop bool
	for _, r := range rs {
		switch {
		case r.Differs() && r.Reached:
			leak = true
		case r.Differs():
			drop = true
		case r.Expected.Allowed:
			allowed = true
		default:
			denied = true
		}
	}
	switch {
	case leak:
		return "LEAK"
	case drop:
		return "DROP"
	case allowed && denied:
		return "✓·"
	case allowed:
		return "✓"
	case denied:
		return "·"
	}
	return ""
}

func difference(r Result) string {
	if r.Reached {
		return fmt.Sprintf("LEAK %s: the policy denies it (%s), the probe got through", r.Probe, r.Expected.Reason)
	}
	return fmt.Sprintf("DROP %s: the policy allows it (%s), the probe was blocked (%s)", r.Probe, r.Expected.Reason, r.Detail)
}

// MarshalJSON writes a result flat, as `loomctl connectivity -o json` prints it.
func (r Result) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		From     string `json:"from"`
		To       string `json:"to"`
		Network  string `json:"network"`
		Family   int    `json:"family"`
		Protocol string `json:"protocol"`
		Port     uint16 `json:"port,omitempty"`
		Source   string `json:"source"`
		Address  string `json:"address"`
		Allowed  bool   `json:"allowed"`
		Reason   string `json:"reason"`
		Reached  bool   `json:"reached"`
		Detail   string `json:"detail,omitempty"`
	}{
		r.From.String(), r.To.String(), Network(r.Network), int(r.Family), r.Protocol, r.Port,
		r.Source.String(), r.Address.String(), r.Expected.Allowed, r.Expected.Reason, r.Reached, r.Detail,
	})
}
