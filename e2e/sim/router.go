package sim

// The router joins the underlay's two subnets and leads to a network outside the cluster.
//
//	netns loomS-router  eth0 198.18.S.254/24 (port router-a on br0)
//	                    eth1 198.19.S.254/24 (port router-b on br1)
//	                    ext  203.0.113.254/24, a veth to netns loomS-ext
//	netns loomS-ext     eth0 203.0.113.1/24, default route via the router
//
// The router forwards, and has no default route: it knows the subnets it is on, and pod
// addresses only as the mode says. In ModeBridge the sim gives it a static route to every
// node's pod CIDR. In ModeBGP it runs BIRD 2 as the top-of-rack route reflector (AS 64512,
// iBGP, every node a client that BIRD accepts by its subnet, so loomd peers with its
// Gateway): the pod routes the nodes announce are reflected to the other nodes and exported
// into the router's kernel, so that traffic between subnets is routed without
// encapsulation, and the external network is announced to the nodes. Reflected routes keep
// their next hop, the announcing node's underlay address: a node on the other subnet
// resolves it through its route to that subnet, i.e. through the router (loomd's kernel
// routes do, as BIRD's "gateway direct" does), and loomd can check that a block's next hop
// is the node that owns it. In the VXLAN modes the router carries underlay traffic only.
//
// The external network is TEST-NET-3 (RFC 5737) rather than TEST-NET-1, 192.0.2.0/24, which
// some machines (Loom's test machine among them) use for their own uplink: the sim's outside
// world must never be mistaken for the real one.

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"github.com/vishvananda/netlink"
)

const (
	// routerASN is the AS of the router and of every node in ModeBGP.
	routerASN = 64512
	// ClusterCIDR is what Loom's IPAM carves the nodes' pod address blocks from.
	ClusterCIDR = "10.244.0.0/16"
)

var (
	externalNet      = netip.MustParsePrefix("203.0.113.0/24")
	externalIP       = netip.MustParseAddr("203.0.113.1")
	externalRouterIP = netip.MustParseAddr("203.0.113.254")
)

// Router describes the cluster's router and the external network behind it.
type Router struct {
	// NetNS is the router's network namespace.
	NetNS string
	// Addresses are the router's addresses on the underlay subnets, A first, each with its
	// subnet's length: 198.18.S.254/24 and 198.19.S.254/24. Every node's Gateway is one.
	Addresses []netip.Prefix
	// ASN is the AS of the router and the nodes in ModeBGP.
	ASN uint32
	// ExternalNetNS is a network namespace outside the cluster, reachable only through the
	// router; ExternalIP is its address on ExternalNet, which ModeBGP announces to the
	// nodes.
	ExternalNetNS string
	ExternalIP    netip.Addr
	ExternalNet   netip.Prefix
}

// Router describes the cluster's router.
func (c *Cluster) Router() Router {
	r := Router{
		NetNS:         c.slot.routerNetNS(),
		ASN:           routerASN,
		ExternalNetNS: c.slot.externalNetNS(),
		ExternalIP:    externalIP,
		ExternalNet:   externalNet,
	}
	for _, u := range c.slot.subnets() {
		r.Addresses = append(r.Addresses, netip.PrefixFrom(u.gateway(), u.prefix.Bits()))
	}
	return r
}

// buildRouter creates the router and the external network, and in ModeBridge routes every
// node's pod CIDR from the router.
func buildRouter(ipCmd string, s slotDir, mode Mode, nodes []Node) error {
	for _, name := range []string{s.routerNetNS(), s.externalNetNS()} {
		if err := addNetNS(ipCmd, name); err != nil {
			return err
		}
	}
	ul, err := openNetNS(s.underlayNetNS())
	if err != nil {
		return err
	}
	defer ul.close()
	rt, err := openNetNS(s.routerNetNS())
	if err != nil {
		return err
	}
	defer rt.close()
	ext, err := openNetNS(s.externalNetNS())
	if err != nil {
		return err
	}
	defer ext.close()
	for _, h := range []netHandle{rt, ext} {
		if _, err = linkUp(h.Handle, "lo"); err != nil {
			return err
		}
	}
	legs := map[netip.Prefix]netlink.Link{}
	for _, u := range s.subnets() {
		if err = addVeth(ul.Handle, u.routerPort, u.routerLink, rt.ns); err != nil {
			return err
		}
		if err = attachToBridge(ul.Handle, u.routerPort, u.bridge); err != nil {
			return err
		}
		if legs[u.prefix], err = addressUp(rt.Handle, u.routerLink, netip.PrefixFrom(u.gateway(), u.prefix.Bits())); err != nil {
			return fmt.Errorf("router: %w", err)
		}
	}
	if err = addVeth(rt.Handle, "ext", "eth0", ext.ns); err != nil {
		return err
	}
	if _, err = addressUp(rt.Handle, "ext", netip.PrefixFrom(externalRouterIP, externalNet.Bits())); err != nil {
		return fmt.Errorf("router: %w", err)
	}
	extLink, err := addressUp(ext.Handle, "eth0", netip.PrefixFrom(externalIP, externalNet.Bits()))
	if err != nil {
		return fmt.Errorf("external network: %w", err)
	}
	def := &netlink.Route{LinkIndex: extLink.Attrs().Index, Gw: externalRouterIP.AsSlice()}
	if err = ext.RouteAdd(def); err != nil {
		return fmt.Errorf("external network: default route via %s: %w", externalRouterIP, err)
	}
	if err = setSysctl(s.routerNetNS(), "/proc/sys/net/ipv4/ip_forward", "1"); err != nil {
		return err
	}
	if mode.loomNetwork() {
		return nil
	}
	for _, n := range nodes {
		if err := addRoute(rt.Handle, legs[n.Subnet], n.PodCIDR, n.UnderlayIP); err != nil {
			return fmt.Errorf("router: %w", err)
		}
	}
	return nil
}

// birdConfigTemplate is the router's BIRD configuration in ModeBGP.
var birdConfigTemplate = template.Must(template.New("bird").Parse(`# Written by the simulated cluster: its router, the nodes' top-of-rack route reflector.
log stderr all;
router id {{.RouterID}};

protocol device {
	scan time 10;
}

# The pod routes the nodes announce go into the router's kernel, so that it routes traffic
# between the subnets without encapsulation.
protocol kernel {
	ipv4 {
		import none;
		export where source = RTS_BGP;
	};
}

# The network outside the cluster, announced to every node with the router as next hop.
protocol static outside {
	ipv4;
	route {{.ExternalNet}} via "ext";
}

# Every node of a subnet is a route reflector client; BIRD accepts a session from any
# address of the subnet. Reflected routes keep their next hop, the node that announced
# them; a node on the other subnet reaches it through the router.
template bgp nodes {
	local as {{.ASN}};
	rr client;
	direct;
	graceful restart on;
	hold time 15;
	keepalive time 5;
	ipv4 {
		import all;
		export all;
	};
}
{{range .Subnets}}
protocol bgp {{.Name}} from nodes {
	local {{.Gateway}} as {{$.ASN}};
	neighbor range {{.Prefix}} as {{$.ASN}};
	dynamic name "{{.Name}}_";
}
{{end}}`))

// birdConfig renders the router's BIRD configuration.
func birdConfig(s slotDir) []byte {
	type subnet struct {
		Name    string
		Prefix  netip.Prefix
		Gateway netip.Addr
	}
	data := struct {
		RouterID    netip.Addr
		ASN         int
		ExternalNet netip.Prefix
		Subnets     []subnet
	}{RouterID: s.subnets()[0].gateway(), ASN: routerASN, ExternalNet: externalNet}
	for i, u := range s.subnets() {
		data.Subnets = append(data.Subnets, subnet{Name: "subnet_" + string(rune('a'+i)), Prefix: u.prefix, Gateway: u.gateway()})
	}
	var b bytes.Buffer
	if err := birdConfigTemplate.Execute(&b, data); err != nil {
		panic(err) // the template and its data are fixed
	}
	return b.Bytes()
}

// startBird writes the router's BIRD configuration and starts BIRD in the router's network
// namespace, as a process of the cluster (pid file bird, log DIR/bird.log, control socket in
// the slot directory), and waits until it answers on its control socket.
func (c *Cluster) startBird(ctx context.Context) error {
	o := c.st.Options
	conf := filepath.Join(c.l.dir, "bird.conf")
	if err := writeFileAtomic(conf, birdConfig(c.slot), 0o644); err != nil {
		return err
	}
	argv := []string{o.Nsenter, "--net=" + filepath.Join("/run/netns", c.slot.routerNetNS()), "--",
		o.Bird, "-f", "-c", conf, "-s", c.slot.birdSocket()}
	ref, err := startDetached(argv, os.Environ(), c.l.log("bird"), c.slot.pidFile("bird"))
	if err != nil {
		return err
	}
	err = poll(ctx, 10*time.Second, func() (bool, error) {
		if !ref.alive() {
			return false, fmt.Errorf("bird exited: %s: see %s", lastLine(c.l.log("bird")), c.l.log("bird"))
		}
		out, statusErr := c.Birdc(ctx, "show", "status")
		return statusErr == nil && bytes.Contains(out, []byte("Daemon is up and running")), nil
	})
	if err != nil {
		return fmt.Errorf("start BIRD in %s: %w", c.slot.routerNetNS(), err)
	}
	return nil
}

// Birdc runs birdc against the router's BIRD (ModeBGP only) and returns its output:
// c.Birdc(ctx, "show", "route", "all").
func (c *Cluster) Birdc(ctx context.Context, args ...string) ([]byte, error) {
	o := c.st.Options
	if o.Mode != ModeBGP {
		return nil, fmt.Errorf("birdc: BIRD runs in mode %s only; this cluster's is %s", ModeBGP, o.Mode)
	}
	cmd := exec.CommandContext(ctx, o.Birdc, append([]string{"-s", c.slot.birdSocket()}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("birdc %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}
