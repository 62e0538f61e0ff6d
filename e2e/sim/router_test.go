package sim_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/loom-cni/loom/e2e/sim"
	"github.com/loom-cni/loom/e2e/sim/simtest"
)

// bgpSpeaker writes a stand-in for loomd in mode bgp and returns the command. Like the
// stand-in of simtest it publishes a CNI configuration; then it speaks BGP with BIRD as
// loomd would: it peers with the address loomd.yaml names, announces the node's block
// 10.244.H.0/26 (H: the last byte of the node's underlay address) and installs the routes it
// learns, resolving a next hop on the other subnet through the router. The block's first address sits on the node's lo, so that a ping from
// it to another node's shows that pod traffic is routed both ways.
func bgpSpeaker(t *testing.T, bird string) []string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "loomd")
	script := `#!/bin/sh
set -e
echo '{"cniVersion":"1.1.0","name":"loom-stand-in","plugins":[{"type":"bridge","bridge":"cni0"}]}' >/etc/cni/net.d/.00-loom.tmp
mv /etc/cni/net.d/.00-loom.tmp /etc/cni/net.d/00-loom.conflist
self=$(ip -4 -o addr show dev eth0 | awk '{split($4, a, "/"); print a[1]}')
block=10.244.${self##*.}
peer=$(awk '$2 == "address:" {print $3}' /etc/loom/loomd.yaml)
ip addr replace $block.1/32 dev lo
cat >/etc/loom/bird.conf <<EOF
router id $self;
protocol device {}
protocol direct {
	ipv4;
	interface "eth0";
}
# The kernel's route to the other subnet resolves next hops there; learned routes go to
# the kernel, via the resolved gateway.
protocol kernel {
	learn;
	ipv4 { import all; export where source = RTS_BGP; };
}
protocol static announce {
	ipv4;
	route $block.0/26 unreachable;
}
protocol bgp tor {
	local $self as 64512;
	neighbor $peer as 64512;
	direct;
	connect delay time 1;
	ipv4 {
		gateway recursive;
		import all;
		export where source = RTS_STATIC;
	};
}
EOF
exec ` + bird + ` -f -c /etc/loom/bird.conf -s /run/loom/bird.ctl
`
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return []string{path}
}

// blockOf is the block bgpSpeaker announces for a node.
func blockOf(n sim.Node) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, n.UnderlayIP.As4()[3], 0}), 26)
}

// TestBGPRouteReflector runs mode bgp with a BGP speaker for loomd on each of three nodes
// (node1 and node2 on subnet A, node3 on B): the router's BIRD reflects their routes, routes
// between the subnets itself, and announces the external network.
func TestBGPRouteReflector(t *testing.T) {
	bird := sim.OptionsFromEnv(os.Getenv).Bird
	if bird == "" {
		t.Skip("no bird in $PATH, /usr/sbin or LOOM_BIRD: install bird2 (hack/tools.sh debs)")
	}
	c := simtest.Start(t, func(o *sim.Options) {
		o.Mode = sim.ModeBGP
		o.Loomd = bgpSpeaker(t, bird)
		o.LoomdWithoutHealth = true
	})
	ctx := context.Background()
	r := c.Router()
	nodes := nodesByName(c)
	// In Loom's own modes the sim leaves pod addresses and routes to loomd.
	for _, n := range nodes {
		if _, err := os.Stat(filepath.Join(n.HostPath("/etc/loom/net.d"), "loom-default.conflist")); err == nil {
			t.Errorf("%s has the reference default network in mode bgp", n.Name)
		}
		node, err := c.Client().CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil || node.Spec.PodCIDR != "" || n.PodCIDR.IsValid() {
			t.Errorf("%s: pod CIDR %v in mode bgp (%v)", n.Name, n.PodCIDR, err)
		}
	}

	out, err := c.Birdc(ctx, "show", "protocols")
	if err != nil {
		t.Fatal(err)
	}
	if !regexpLine(string(out), `^outside\s+Static\s+master4\s+up`) {
		t.Errorf("BIRD does not announce the external network:\n%s", out)
	}
	// Every node's session is up, and the router's kernel has every node's block.
	start := time.Now()
	want := map[string]string{}
	for _, n := range nodes {
		want[blockOf(n).String()] = "via " + n.UnderlayIP.String()
	}
	err = poll(30*time.Second, func() bool {
		routes, routeErr := netnsExec(ctx, r.NetNS, "ip", "-4", "route", "show", "proto", "bird")
		return routeErr == nil && routesMatch(routes, want) == nil
	})
	if err != nil {
		protocols, _ := c.Birdc(ctx, "show", "protocols")
		routes, _ := netnsExec(ctx, r.NetNS, "ip", "-4", "route")
		t.Fatalf("the router did not learn every node's block: %v\n%s\n%s", err, protocols, routes)
	}
	t.Logf("router learned 3 blocks %.1fs after sim up", time.Since(start).Seconds())
	if out, err = c.Birdc(ctx, "show", "protocols"); err != nil || strings.Count(string(out), "Established") != 3 {
		t.Errorf("want 3 established sessions: %v\n%s", err, out)
	}

	// node1 reaches node2's block directly, node3's and the external network through the
	// router. node3's block comes with node3 as next hop, which node1 reaches through the
	// router.
	expect := map[string]string{
		blockOf(nodes["node2"]).String(): "via " + nodes["node2"].UnderlayIP.String(),
		blockOf(nodes["node3"]).String(): "via " + r.Addresses[0].Addr().String(),
		r.ExternalNet.String():           "via " + r.Addresses[0].Addr().String(),
	}
	err = poll(10*time.Second, func() bool {
		routes, routeErr := c.NodeExec(ctx, "node1", "ip", "-4", "route", "show", "proto", "bird")
		return routeErr == nil && routesMatch(routes, expect) == nil
	})
	if err != nil {
		routes, _ := c.NodeExec(ctx, "node1", "ip", "-4", "route")
		t.Errorf("node1's routes: %v\n%s", err, routes)
	}

	// Traffic from node1's block reaches node3's across the router, unencapsulated, and the
	// external network.
	from := blockOf(nodes["node1"]).Addr().Next().String()
	for _, to := range []string{blockOf(nodes["node3"]).Addr().Next().String(), r.ExternalIP.String()} {
		if out, err := c.NodeExec(ctx, "node1", "ping", "-n", "-c1", "-W2", "-I", from, to); err != nil {
			t.Errorf("ping %s -> %s: %v\n%s", from, to, err, out)
		}
	}
	if out, err := netnsExec(ctx, r.NetNS, "ip", "-4", "route", "show", "default"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("the router has a default route: %v %s", err, out)
	}

	downChecked(t, c)
	if _, err := os.Stat(filepath.Join(c.Options().RunDir, fmt.Sprintf("slot-%d", c.Slot()), "bird.ctl")); err == nil {
		t.Error("BIRD's control socket left behind")
	}
}

// regexpLine says whether a line of s matches the regular expression.
func regexpLine(s, expr string) bool {
	return regexp.MustCompile("(?m)" + expr).MatchString(s)
}

// routesMatch checks that `ip route` output routes each destination as want says
// ("via GATEWAY").
func routesMatch(routes string, want map[string]string) error {
	var missing []string
	for dst, via := range want {
		found := false
		for _, line := range strings.Split(routes, "\n") {
			if strings.HasPrefix(line, dst+" ") && strings.Contains(line, " "+via+" ") {
				found = true
			}
		}
		if !found {
			missing = append(missing, dst+" "+via)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("no route %s", strings.Join(missing, ", "))
	}
	return nil
}
