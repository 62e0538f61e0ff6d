package vxlan

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/loom-cni/loom/internal/nftexec"
)

// GuardTable is the nftables table that keeps encapsulated traffic from anyone but other nodes
// away from the VTEP: "table inet loom_underlay". It belongs to this package.
const GuardTable = "loom_underlay"

// PodLinks is the interface name pattern, in nftables' words, of every link whose traffic
// comes from a pod: the host ends of pod veths ("loom" and hex digits) and the VTEP itself,
// whose decapsulated packets come from pods of other nodes.
const PodLinks = "loom*"

// guardTimeout bounds one run of nft.
const guardTimeout = 10 * time.Second

// guard keeps the GuardTable of the backend's namespace in step with the underlay addresses of
// the peers. It is used with Backend.mu held.
type guard struct {
	nft   string // the nft binary
	netns string // the namespace nft runs in, as a path; "" for the caller's own
	port  int    // the VXLAN UDP port
	vtep  string // the VTEP's name
	local netip.Addr

	// applied is the address set last written; valid is false when the kernel's table is not
	// known to be it (nothing written yet, a write failed, a repair asked to rewrite).
	applied []netip.Addr
	valid   bool
}

func newGuard(cfg Config) *guard {
	g := &guard{nft: cfg.Nft, port: cfg.Port, vtep: cfg.Name, local: cfg.LocalIP}
	if cfg.Netns != nil {
		// A handle is an open file of this process, which ns.GetNS opens again by its path.
		g.netns = fmt.Sprintf("/proc/self/fd/%d", int(*cfg.Netns))
	}
	return g
}

// ensure installs the table with no peers when the namespace has none, so that the VTEP never
// listens unguarded; a table already there (loomd restarted) is kept until the next set,
// so that a restart does not cut off the peers it admits.
func (g *guard) ensure() error {
	if g.valid {
		return nil
	}
	if _, err := g.run("", "list", "table", "inet", GuardTable); err == nil {
		return nil
	}
	return g.set(nil)
}

// set makes the table admit VXLAN from exactly the underlay addresses of peers, in one nft
// transaction. It writes nothing when the table is known to be that already.
func (g *guard) set(peers []Peer) error {
	addrs := g.addrs(peers)
	if g.valid && slices.Equal(addrs, g.applied) {
		return nil
	}
	g.valid = false
	if _, err := g.run(g.script(addrs), "-f", "-"); err != nil {
		return fmt.Errorf("write table inet %s with %d peer addresses: %w", GuardTable, len(addrs), err)
	}
	g.applied, g.valid = addrs, true
	return nil
}

// forget makes the next set rewrite the table, to repair it if someone changed it.
func (g *guard) forget() { g.valid = false }

// addrs returns the peers' underlay addresses that may send VXLAN, sorted and without
// duplicates: every valid unicast address, of either family, that is not this node's own.
// A peer Sync leaves out for what it claims about its VTEP or blocks is still a node.
func (g *guard) addrs(peers []Peer) []netip.Addr {
	var out []netip.Addr
	for _, p := range peers {
		a := p.UnderlayIP.Unmap()
		if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || a.Zone() != "" || a == g.local {
			continue
		}
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// script renders the table for addrs: it replaces the table whole, in one transaction (the
// first line makes the delete succeed when there is no table yet).
func (g *guard) script(addrs []netip.Addr) string {
	var v4, v6 []string
	for _, a := range addrs {
		if a.Is4() {
			v4 = append(v4, a.String())
		} else {
			v6 = append(v6, a.String())
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {}\ndelete table inet %s\ntable inet %s {\n", GuardTable, GuardTable, GuardTable)
	writeSet(&b, "peers4", "ipv4_addr", v4)
	writeSet(&b, "peers6", "ipv6_addr", v6)
	// Every packet pays for the jump's test of its UDP port; only VXLAN ones go further.
	fmt.Fprintf(&b, "\tchain input {\n\t\ttype filter hook input priority -100; policy accept;\n")
	fmt.Fprintf(&b, "\t\tudp dport %d jump vxlan\n\t}\n", g.port)
	fmt.Fprintf(&b, "\tchain forward {\n\t\ttype filter hook forward priority -100; policy accept;\n")
	fmt.Fprintf(&b, "\t\tudp dport %d iifname %q drop\n\t}\n", g.port, PodLinks)
	fmt.Fprintf(&b, "\tchain vxlan {\n\t\tiifname %q drop\n", PodLinks)
	if !strings.HasPrefix(g.vtep, strings.TrimSuffix(PodLinks, "*")) {
		fmt.Fprintf(&b, "\t\tiifname %q drop\n", g.vtep)
	}
	b.WriteString("\t\tip saddr != @peers4 drop\n\t\tip6 saddr != @peers6 drop\n\t}\n}\n")
	return b.String()
}

func writeSet(b *strings.Builder, name, typ string, elems []string) {
	fmt.Fprintf(b, "\tset %s {\n\t\ttype %s\n", name, typ)
	if len(elems) > 0 {
		fmt.Fprintf(b, "\t\telements = { %s }\n", strings.Join(elems, ", "))
	}
	b.WriteString("\t}\n")
}

// run runs nft with args and stdin in the guard's namespace and returns its standard output;
// the error carries its standard error.
func (g *guard) run(stdin string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), guardTimeout)
	defer cancel()
	return nftexec.Run(ctx, g.nft, g.netns, stdin, args...)
}
