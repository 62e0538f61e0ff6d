package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"

	"golang.org/x/sys/unix"
	"sigs.k8s.io/yaml"

	"github.com/loom-cni/loom/deployments"
)

// Paths inside a node.
const (
	loomdConfigPath  = "/etc/loom/loomd.yaml"
	defaultNetwork   = "loom-default"
	defaultNetConfig = "/etc/loom/net.d/" + defaultNetwork + ".conflist"
	defaultHealth    = "127.0.0.1:9465"
)

// checkInsideNode refuses to go on unless this process runs in the node's namespaces, so
// that a supervisor started by mistake on the host cannot mount over the host's /run. The
// node's mount namespace pin is visible only outside that namespace; the node's network
// namespace is the one whose eth0 has the node's underlay address.
func checkInsideNode(s slotDir, n Node) error {
	pin := s.nsPin(n.Name)
	if isNamespacePin(pin) {
		self, err1 := nsInode("/proc/self/ns/mnt")
		want, err2 := nsInode(pin)
		if err := errors.Join(err1, err2); err != nil {
			return fmt.Errorf("read mount namespaces: %w", err)
		}
		if self != want {
			return fmt.Errorf("the supervisor of %s runs outside the node's mount namespace: start it with loomctl sim up", n.Name)
		}
	}
	eth0, err := netlink.LinkByName("eth0")
	if err == nil {
		var addrs []netlink.Addr
		addrs, err = netlink.AddrList(eth0, netlink.FAMILY_V4)
		for _, a := range addrs {
			if a.IP.Equal(n.UnderlayIP.AsSlice()) {
				return nil
			}
		}
	}
	return fmt.Errorf("the supervisor of %s runs outside the node's network namespace (no eth0 with %s): start it with loomctl sim up", n.Name, n.UnderlayIP)
}

// sameFile says whether two paths name the same directory (a bind mount and its source).
func sameFile(a, b string) bool {
	var sa, sb unix.Stat_t
	return unix.Stat(a, &sa) == nil && unix.Stat(b, &sb) == nil && sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

// mountNodeDirs makes the node's node-local paths bind mounts of its directories under
// Root, and gives the node a /sys of its own network namespace. The node's mount namespace
// persists across supervisor restarts; mounts already in place are left alone.
func mountNodeDirs(n Node) error {
	fresh := false
	for _, p := range nodeMountPaths() {
		src := filepath.Join(n.Root, p)
		if err := os.MkdirAll(src, 0o755); err != nil {
			return err
		}
		if sameFile(src, p) {
			continue
		}
		fresh = true
		if err := os.MkdirAll(p, 0o755); err != nil {
			return fmt.Errorf("create mount point %s: %w", p, err)
		}
		if err := unix.Mount(src, p, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind mount %s on %s: %w", src, p, err)
		}
	}
	if err := shareNetNSDir(); err != nil {
		return err
	}
	if !fresh {
		return nil
	}
	// As `ip netns exec` does: sysfs shows the network devices of the namespace that
	// mounted it.
	if err := unix.Unmount("/sys", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount /sys: %w", err)
	}
	if err := unix.Mount("sysfs", "/sys", "sysfs", 0, ""); err != nil {
		return fmt.Errorf("mount /sys: %w", err)
	}
	return nil
}

// shareNetNSDir makes the node's /run/netns a shared mount of itself before any namespace is
// pinned there, exactly as `ip netns add` does: otherwise the first `ip netns add` in the
// node (a test's, loomd's) bind-mounts it over itself with copies of every existing pin,
// and those pins can no longer be removed.
func shareNetNSDir() error {
	const dir = "/run/netns"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	err := unix.Mount("", dir, "", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) { // not a mount point yet
		if err = unix.Mount(dir, dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind mount %s: %w", dir, err)
		}
		err = unix.Mount("", dir, "", unix.MS_SHARED|unix.MS_REC, "")
	}
	if err != nil {
		return fmt.Errorf("make %s shared: %w", dir, err)
	}
	return nil
}

// prepareNode writes what a node's image and DaemonSet would put in place: the CNI plugins
// in /opt/cni/bin, loomd's configuration, in ModeBridge the default network's
// configuration, and the sysctls a node needs.
func prepareNode(st state, l layout, n Node) error {
	for _, d := range []string{"/run/netns", "/run/loom", "/var/lib/cni", "/var/lib/loom", "/etc/cni/net.d", "/etc/loom/net.d"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := linkPlugins(st.Options); err != nil {
		return err
	}
	cfg, err := loomdConfig(st, l, n)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(loomdConfigPath, cfg, 0o644); err != nil {
		return err
	}
	if !st.Options.Mode.loomNetwork() {
		if err := writeFileAtomic(defaultNetConfig, defaultNetworkConfig(n), 0o644); err != nil {
			return err
		}
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		return fmt.Errorf("enable forwarding: %w", err)
	}
	return nil
}

// linkPlugins symlinks every reference plugin and the loom binary into /opt/cni/bin,
// replacing stale links.
func linkPlugins(o Options) error {
	old, _ := os.ReadDir("/opt/cni/bin")
	for _, e := range old {
		if e.Type()&os.ModeSymlink != 0 {
			os.Remove(filepath.Join("/opt/cni/bin", e.Name()))
		}
	}
	plugins, err := os.ReadDir(o.CNIPluginsDir)
	if err != nil {
		return err
	}
	var targets []string
	for _, e := range plugins {
		if !e.IsDir() {
			targets = append(targets, filepath.Join(o.CNIPluginsDir, e.Name()))
		}
	}
	for _, name := range []string{"loom", "loom-ipam"} {
		if o.BinDir == "" {
			break
		}
		if _, err := os.Stat(filepath.Join(o.BinDir, name)); err == nil {
			targets = append(targets, filepath.Join(o.BinDir, name))
		}
	}
	for _, t := range targets {
		if err := os.Symlink(t, filepath.Join("/opt/cni/bin", filepath.Base(t))); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	}
	return nil
}

// loomdConfig is the loomd configuration of node n. In Loom's own modes it starts from what
// the deployment's ConfigMap loomd-config holds for the mode (deployments.LoomdConfig), as a
// real node's loomd does, and changes only what a simulated node must: its name and
// kubeconfig, in ModeBGP its peer (the router, the route reflector), and the SR-IOV section
// (the node's fake sysfs with Options.SRIOV, else the node's own /sys). In ModeBridge loomd
// delegates the default network to loom-default. Options.LoomdConfig overrides any field.
func loomdConfig(st state, l layout, n Node) ([]byte, error) {
	cfg := map[string]any{}
	if mode := st.Options.Mode; mode.loomNetwork() {
		base, err := deployments.LoomdConfig(string(mode))
		if err != nil {
			return nil, err
		}
		if err := yaml.Unmarshal(base, &cfg); err != nil {
			return nil, fmt.Errorf("the deployment's loomd configuration for mode %s: %w", mode, err)
		}
		primary, _ := cfg["primaryNetwork"].(map[string]any)
		if primary == nil || primary["clusterCIDR"] != ClusterCIDR {
			return nil, fmt.Errorf("the deployment's loomd configuration for mode %s does not route the cluster CIDR %s", mode, ClusterCIDR)
		}
		if bgp, ok := primary["bgp"].(map[string]any); ok {
			bgp["peers"] = []any{map[string]any{"address": n.Gateway.String(), "asn": routerASN}}
		}
		cfg["sriov"] = map[string]any{"sysfsRoot": "/"}
	} else {
		cfg["defaultNetwork"] = defaultNetwork
	}
	cfg["nodeName"], cfg["kubeconfig"] = n.Name, l.kubeconfig()
	if st.Options.SRIOV {
		cfg["sriov"] = sriovConfig()
	}
	for k, v := range st.Options.LoomdConfig {
		cfg[k] = v
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("loomd configuration: %w", err)
	}
	return append([]byte("# Written by the simulated cluster's node supervisor.\n"), b...), nil
}

// LoomdHealthAddress is where every node's loomd serves /healthz, /readyz and /metrics,
// inside the node's network namespace (reach it with NodeExec or NodeCmd).
func (c *Cluster) LoomdHealthAddress() string { return loomdHealthAddress(c.st.Options) }

// loomdHealthAddress is where loomd serves /readyz in the node.
func loomdHealthAddress(o Options) string {
	if a, ok := o.LoomdConfig["healthAddress"].(string); ok && a != "" {
		return a
	}
	return defaultHealth
}

// defaultNetworkConfig is the cluster default network: a bridge (cni0) with the node's pod
// CIDR, the node as the pods' gateway, and no masquerading (nodes route pod CIDRs to each
// other over the underlay).
func defaultNetworkConfig(n Node) []byte {
	conf := map[string]any{
		"cniVersion": "1.1.0",
		"name":       defaultNetwork,
		"plugins": []any{map[string]any{
			"type":      "bridge",
			"bridge":    "cni0",
			"isGateway": true,
			"ipMasq":    false,
			"ipam": map[string]any{
				"type":   "host-local",
				"ranges": [][]map[string]string{{{"subnet": n.PodCIDR.String()}}},
				"routes": []map[string]string{{"dst": "0.0.0.0/0"}},
			},
		}},
	}
	b, _ := json.MarshalIndent(conf, "", "  ")
	return append(b, '\n')
}
