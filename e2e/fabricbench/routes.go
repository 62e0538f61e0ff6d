package main

// Design notes.
//
// The target: one node's loomd routes the blocks of 1,000 other nodes within 2 s, and stays
// under 80 MB resident. The other nodes are simulated by the API objects loomd reads (a Node
// with loomd's annotations, an IPBlock) and, in bgp mode, by the routes the router announces
// for them; no namespace stands behind them and no packet is sent to them. What is timed is
// the kernel of the measured node: a route watch (watch.go) stamps every route as the kernel
// reports it.
//
//   - vxlan: cold, the objects exist before loomd starts, and the time runs from the start
//     of loomd's process to the last route; live, loomd runs while the objects are created,
//     and the time runs from the answer to the last create to the last route.
//   - bgp: the objects exist and loomd runs; the time runs from the moment the router is
//     told to announce the blocks to the last route. loomd installs a route inside the
//     cluster CIDR only for a block that an IPBlock assigns to a node whose underlay address
//     is the route's next hop, so the fake nodes' underlay address is the router's own on the
//     measured node's subnet, the next hop BIRD gives the routes it originates.
//
// The other nodes' loomd are held down meanwhile. On a real cluster each runs on a machine of
// its own; here they would do the same work for the same objects on the same two CPUs, and
// the figure would be the simulation's rather than loomd's.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/loom-cni/loom/e2e/perf"
	"github.com/loom-cni/loom/e2e/sim"
	"github.com/loom-cni/loom/fabric/bgp"
	"github.com/loom-cni/loom/fabric/vxlan"
)

const (
	defaultRoutesTimeout = time.Minute
	// settle is how long loomd is given to see new objects before the router announces
	// their routes in bgp mode, so that what is timed is the announcement.
	settle = 2 * time.Second
	// routesTarget and rssTarget are the targets.
	routesTarget = 2.0  // seconds
	rssTarget    = 80.0 // MB
)

type routesOptions struct {
	dir         string
	node        string
	count       int
	clusterCIDR string
	blockBits   int
	timeout     time.Duration
}

func runRoutes(ctx context.Context, o routesOptions) error {
	cluster, err := netip.ParsePrefix(o.clusterCIDR)
	if err != nil || o.dir == "" || o.count < 1 || o.blockBits <= cluster.Bits() || o.blockBits > 32 {
		return fmt.Errorf("routes: -dir, a positive -nodes, a -cluster-cidr and a longer -block-bits are required (cluster CIDR: %v)", err)
	}
	c, err := sim.Open(o.dir)
	if err != nil {
		return err
	}
	node, err := c.Node(o.node)
	if err != nil {
		return err
	}
	a, err := newAPI(c)
	if err != nil {
		return err
	}
	mode := c.Options().Mode
	// In bgp mode the fake nodes' underlay address is the router's, the next hop of the
	// routes it announces; in the VXLAN modes each has one of its own.
	var (
		underlay netip.Addr
		proto    = vxlan.RouteProtocol
	)
	switch mode {
	case sim.ModeBGP:
		underlay, proto = node.Gateway, bgp.RouteProtocol
	case sim.ModeVXLAN, sim.ModeVXLANCrossSubnet:
	default:
		return fmt.Errorf("mode %s is not one of Loom's own networks: loomd routes no blocks", mode)
	}
	if err = deleteFakes(ctx, a); err != nil {
		return err
	}
	fakes, err := planFakes(ctx, a, o.count, cluster, o.blockBits, underlay, mode != sim.ModeBGP)
	if err != nil {
		return err
	}
	w, err := watchRoutes(node.NetNS, proto, blocksOf(fakes))
	if err != nil {
		return err
	}
	defer w.close()
	release, err := holdOtherLoomds(c, node.Name)
	if err != nil {
		return err
	}
	defer release()
	defer func() {
		if cleanupErr := deleteFakes(context.WithoutCancel(ctx), a); cleanupErr != nil {
			fmt.Fprintln(os.Stderr, "fabricbench: clean up:", cleanupErr)
		}
	}()
	fmt.Printf("routes, mode %s: %d simulated remote nodes, a /%d block each, routed by %s's loomd (the other nodes' loomd held down)\n",
		mode, len(fakes), o.blockBits, node.Name)
	if err = printMemory(c, node.Name, "before"); err != nil {
		return err
	}
	b := routesBench{c: c, a: a, node: node, fakes: fakes, w: w, timeout: o.timeout}
	if mode == sim.ModeBGP {
		return b.announced(ctx)
	}
	return b.vxlan(ctx)
}

// routesBench is one node's loomd, the fake nodes it is to route and the watch on its routes.
type routesBench struct {
	c       *sim.Cluster
	a       api
	node    sim.Node
	fakes   []fakeNode
	w       *routeWatch
	timeout time.Duration
}

// vxlan times the routes of the fake nodes from a cold start of loomd, then as they are
// added while loomd runs.
func (b routesBench) vxlan(ctx context.Context) error {
	mode, n := b.c.Options().Mode, len(b.fakes)
	cold, pid, rssCold, err := b.coldStart(ctx)
	if err != nil {
		return err
	}
	deleted := time.Now()
	if err = deleteFakes(ctx, b.a); err != nil {
		return err
	}
	if err = b.w.waitNone(ctx, b.timeout); err != nil {
		return fmt.Errorf("routes of deleted nodes: %w", err)
	}
	fmt.Printf("  the nodes and blocks deleted: their routes gone %s after the first delete\n", ms(time.Since(deleted)))
	b.w.reset()
	start, created, err := createFakes(ctx, b.a, b.fakes)
	if err != nil {
		return err
	}
	_, routed, err := b.w.waitAll(ctx, b.timeout)
	if err != nil {
		return fmt.Errorf("routes of nodes added while loomd runs: %w", err)
	}
	rssLive, err := readMemory(pid)
	if err != nil {
		return err
	}
	if err = b.w.verify(); err != nil {
		return err
	}
	fmt.Printf("  live: %d Nodes and %d IPBlocks created in %s; the last route %s after the last create; VmRSS %.1f MB (peak %.1f MB)\n",
		n, n, ms(created.Sub(start)), ms(routed.Sub(created)), rssLive.rss, rssLive.hwm)
	perf.Verdict(fmt.Sprintf("routes_%s_%d_nodes_cold_start", mode, n), cold.Seconds(), "s", "<", routesTarget)
	perf.Verdict(fmt.Sprintf("routes_%s_%d_nodes_added_live", mode, n), routed.Sub(created).Seconds(), "s", "<", routesTarget)
	perf.Verdict(fmt.Sprintf("routes_%s_%d_nodes_loomd_rss", mode, n), max(rssCold.rss, rssLive.rss), "MB", "<", rssTarget)
	return nil
}

// coldStart holds loomd down while the fake nodes are created, starts it, and returns how
// long after the start of its process the last of their routes appeared, its pid and its
// memory then.
func (b routesBench) coldStart(ctx context.Context) (time.Duration, int, memory, error) {
	node := b.node.Name
	if err := b.c.StopLoomd(node); err != nil {
		return 0, 0, memory{}, err
	}
	if _, _, err := createFakes(ctx, b.a, b.fakes); err != nil {
		return 0, 0, memory{}, err
	}
	b.w.reset()
	letGo := time.Now()
	ready := make(chan error, 1)
	go func() { ready <- b.c.StartLoomd(ctx, node) }()
	first, all, err := b.w.waitAll(ctx, b.timeout)
	if err != nil {
		return 0, 0, memory{}, fmt.Errorf("cold start of loomd on %s: %w", node, err)
	}
	pid, err := loomdPID(b.c, node)
	if err != nil {
		return 0, 0, memory{}, err
	}
	mem, err := readMemory(pid)
	if err != nil {
		return 0, 0, memory{}, err
	}
	if err = errors.Join(<-ready, b.w.verify()); err != nil {
		return 0, 0, memory{}, err
	}
	born, err := processStart(pid)
	if err != nil {
		return 0, 0, memory{}, err
	}
	fmt.Printf("  cold: loomd (pid %d) started %s after it was let go; the first route %s after its start, the last %s after it; VmRSS %.1f MB (peak %.1f MB)\n",
		pid, ms(born.Sub(letGo)), ms(first.Sub(born)), ms(all.Sub(born)), mem.rss, mem.hwm)
	return all.Sub(born), pid, mem, nil
}

// announced times the routes the router announces for the fake nodes' blocks, from the
// moment it is told to, and their withdrawal.
func (b routesBench) announced(ctx context.Context) error {
	n := len(b.fakes)
	if _, _, err := createFakes(ctx, b.a, b.fakes); err != nil {
		return err
	}
	if !perf.Sleep(ctx, settle) {
		return ctx.Err()
	}
	conf, err := writeAnnouncement(b.c, b.node, b.fakes)
	if err != nil {
		return err
	}
	defer os.Remove(conf)
	withdraw := func(ctx context.Context) error {
		_, birdErr := b.c.Birdc(ctx, "configure", strconv.Quote(filepath.Join(b.c.Dir(), "bird.conf")))
		return birdErr
	}
	defer func() {
		if birdErr := withdraw(context.WithoutCancel(ctx)); birdErr != nil {
			fmt.Fprintln(os.Stderr, "fabricbench: restore the router's configuration:", birdErr)
		}
	}()
	b.w.reset()
	told := time.Now()
	if _, err = b.c.Birdc(ctx, "configure", strconv.Quote(conf)); err != nil {
		return err
	}
	configured := time.Now()
	first, all, err := b.w.waitAll(ctx, b.timeout)
	if err != nil {
		return fmt.Errorf("announced routes on %s: %w", b.node.Name, err)
	}
	pid, err := loomdPID(b.c, b.node.Name)
	if err != nil {
		return err
	}
	mem, err := readMemory(pid)
	if err != nil {
		return err
	}
	if err = b.w.verify(); err != nil {
		return err
	}
	fmt.Printf("  announced (next hop %s): BIRD reconfigured in %s; the first route %s after it was told, the last %s after; loomd VmRSS %.1f MB (peak %.1f MB)\n",
		b.node.Gateway, ms(configured.Sub(told)), ms(first.Sub(told)), ms(all.Sub(told)), mem.rss, mem.hwm)
	withdrawn := time.Now()
	if err = withdraw(ctx); err != nil {
		return err
	}
	if err = b.w.waitNone(ctx, b.timeout); err != nil {
		return fmt.Errorf("withdrawn routes on %s: %w", b.node.Name, err)
	}
	fmt.Printf("  withdrawn: the routes gone %s after the router was told\n", ms(time.Since(withdrawn)))
	perf.Verdict(fmt.Sprintf("routes_bgp_%d_nodes_announced", n), all.Sub(told).Seconds(), "s", "<", routesTarget)
	perf.Verdict(fmt.Sprintf("routes_bgp_%d_nodes_loomd_rss", n), mem.rss, "MB", "<", rssTarget)
	return nil
}

// holdOtherLoomds holds down the loomd of every node but keep, and returns the function that
// lets them run again.
func holdOtherLoomds(c *sim.Cluster, keep string) (release func(), err error) {
	var held []string
	release = func() {
		for _, n := range held {
			if err := c.StartLoomd(context.Background(), n); err != nil {
				fmt.Fprintln(os.Stderr, "fabricbench: let loomd run again:", err)
			}
		}
	}
	for _, n := range c.Nodes() {
		if n.Name == keep {
			continue
		}
		if err := c.StopLoomd(n.Name); err != nil {
			release()
			return nil, err
		}
		held = append(held, n.Name)
	}
	return release, nil
}

func loomdPID(c *sim.Cluster, node string) (int, error) {
	st, err := c.NodeStatus(node)
	if err != nil {
		return 0, err
	}
	if st.Loomd.PID == 0 {
		return 0, fmt.Errorf("loomd on %s runs under no known pid (state %s)", node, st.Loomd.State)
	}
	return st.Loomd.PID, nil
}

// printMemory prints the resident memory of the node's loomd as the cluster's own nodes
// alone make it, to tell what the simulated ones add.
func printMemory(c *sim.Cluster, node, when string) error {
	pid, err := loomdPID(c, node)
	if err != nil {
		return err
	}
	m, err := readMemory(pid)
	if err != nil {
		return err
	}
	fmt.Printf("  %s: loomd (pid %d) VmRSS %.1f MB (peak %.1f MB) with the cluster's own %d nodes\n", when, pid, m.rss, m.hwm, len(c.Nodes()))
	return nil
}

func blocksOf(fakes []fakeNode) []netip.Prefix {
	blocks := make([]netip.Prefix, len(fakes))
	for i, f := range fakes {
		blocks[i] = f.block
	}
	return blocks
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }
