package sim

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Node is one simulated node.
type Node struct {
	// Name is the node's Kubernetes Node name: node1, node2…
	Name string `json:"name"`
	// NetNS is the name of the node's network namespace (/run/netns/NetNS on the host).
	NetNS string `json:"netns"`
	// UnderlayIP is eth0's address on the underlay.
	UnderlayIP netip.Addr `json:"underlayIP"`
	// Subnet is the underlay subnet eth0 is on: 198.18.S.0/24 (A, with the API server) or
	// 198.19.S.0/24 (B).
	Subnet netip.Prefix `json:"subnet"`
	// Gateway is the router's address on Subnet: the node's way to the other subnet and, in
	// ModeBGP, its BGP peer.
	Gateway netip.Addr `json:"gateway"`
	// PodCIDR is the node's spec.podCIDR, served by the default network's host-local IPAM
	// in ModeBridge. In Loom's own modes it is unset: Loom's IPAM hands out blocks of the
	// cluster CIDR.
	PodCIDR netip.Prefix `json:"podCIDR,omitzero"`
	// Root is the host path that mirrors the node's node-local directories: the node's
	// /var/lib/loom is Root+"/var/lib/loom" on the host.
	Root string `json:"root"`
	// Dir is the host directory of the node's logs, status and sandbox records.
	Dir string `json:"dir"`
}

// HostPath returns where a node-local path (one under /run, /etc/cni/net.d, /opt/cni/bin,
// /var/lib/cni, /var/lib/loom or /etc/loom) of the node is on the host, and "" for any other
// path, which the node shares with the host.
func (n Node) HostPath(nodePath string) string {
	p := filepath.Clean(nodePath)
	for _, m := range nodeMountPaths() {
		if p == m || strings.HasPrefix(p, m+"/") {
			return filepath.Join(n.Root, p)
		}
	}
	return ""
}

// LoomStateDir is the host path of the node's /var/lib/loom.
func (n Node) LoomStateDir() string { return n.HostPath("/var/lib/loom") }

// CNIStateDir is the host path of the node's /var/lib/cni (libcni's cache, host-local's
// allocations under networks/).
func (n Node) CNIStateDir() string { return n.HostPath("/var/lib/cni") }

// NetNSDir is the host path of the node's /run/netns. Pod namespaces are pinned there
// inside the node; on the host each pin is an empty file that exists as long as the pin.
func (n Node) NetNSDir() string { return n.HostPath("/run/netns") }

// SandboxDir is where the node's pod runtime keeps one record per pod sandbox.
func (n Node) SandboxDir() string { return filepath.Join(n.Dir, "sandboxes") }

func (n Node) statusFile() string { return filepath.Join(n.Dir, "status.json") }
func (n Node) holdFile() string   { return filepath.Join(n.Dir, "loomd.hold") }

// state is what DIR/sim.json holds: everything needed to operate on a running cluster.
type state struct {
	Slot           int     `json:"slot"`
	APIServerIP    string  `json:"apiServerIP"`
	EtcdClientPort int     `json:"etcdClientPort"`
	EtcdPeerPort   int     `json:"etcdPeerPort"`
	Nodes          []Node  `json:"nodes"`
	Options        Options `json:"options"`
}

// layout names the files of a cluster directory.
type layout struct{ dir string }

func (l layout) stateFile() string          { return filepath.Join(l.dir, "sim.json") }
func (l layout) kubeconfig() string         { return filepath.Join(l.dir, "kubeconfig") }
func (l layout) pki(name string) string     { return filepath.Join(l.dir, "pki", name) }
func (l layout) log(name string) string     { return filepath.Join(l.dir, name+".log") }
func (l layout) nodeDir(name string) string { return filepath.Join(l.dir, "nodes", name) }

func readState(dir string) (state, error) {
	var st state
	b, err := os.ReadFile(layout{dir}.stateFile())
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("parse %s: %w", layout{dir}.stateFile(), err)
	}
	return st, nil
}

func writeState(dir string, st state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(layout{dir}.stateFile(), b, 0o644)
}

// writeFileAtomic writes through a temporary file and a rename, so readers never see half a
// file.
func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// slotDir names the files of slot S under RunDir.
type slotDir struct {
	runDir string
	slot   int
}

func (s slotDir) path() string               { return filepath.Join(s.runDir, "slot-"+strconv.Itoa(s.slot)) }
func (s slotDir) dirFile() string            { return filepath.Join(s.path(), "dir") }
func (s slotDir) ownerFile() string          { return filepath.Join(s.path(), "owner") }
func (s slotDir) pidFile(name string) string { return filepath.Join(s.path(), "pids", name) }
func (s slotDir) nsDir() string              { return filepath.Join(s.path(), "ns") }
func (s slotDir) nsPin(node string) string   { return filepath.Join(s.nsDir(), node) }
func (s slotDir) birdSocket() string         { return filepath.Join(s.path(), "bird.ctl") }

// etcdData is where etcd keeps the cluster's data: in memory (/dev/shm) when the machine has
// it, where etcd's fsyncs cost nothing. In a real cluster the control plane does not share the
// nodes' disk; here etcd's fsync of every pod update would stall the simulated nodes' CNI
// plugins and skew whatever they measure. The path depends on the slot alone, so Down finds
// it without the cluster's directory.
func (s slotDir) etcdData() string {
	var st unix.Statfs_t
	if unix.Statfs("/dev/shm", &st) == nil && st.Type == unix.TMPFS_MAGIC {
		return filepath.Join("/dev/shm", "loom-sim-etcd"+strings.ReplaceAll(s.path(), "/", "-"))
	}
	return filepath.Join(s.path(), "etcd")
}

// Names and addresses derived from the slot.
func (s slotDir) netnsPrefix() string   { return fmt.Sprintf("loom%d-", s.slot) }
func (s slotDir) underlayNetNS() string { return s.netnsPrefix() + "underlay" }
func (s slotDir) routerNetNS() string   { return s.netnsPrefix() + "router" }
func (s slotDir) externalNetNS() string { return s.netnsPrefix() + "ext" }
func (s slotDir) hostLink() string      { return s.netnsPrefix() + "ul" }
func (s slotDir) apiServerIP() netip.Addr {
	return netip.AddrFrom4([4]byte{198, 18, byte(s.slot), 1})
}

// subnets are the slot's two underlay subnets, A first.
func (s slotDir) subnets() [2]underlaySubnet {
	a := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(s.slot), 0}), 24)
	b := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(s.slot), 0}), 24)
	return [2]underlaySubnet{
		{prefix: a, bridge: "br0", routerPort: "router-a", routerLink: "eth0"},
		{prefix: b, bridge: "br1", routerPort: "router-b", routerLink: "eth1"},
	}
}

// subnetOf returns the underlay subnet that holds a, and false if none does.
func (s slotDir) subnetOf(a netip.Addr) (underlaySubnet, bool) {
	for _, u := range s.subnets() {
		if u.prefix.Contains(a) {
			return u, true
		}
	}
	return underlaySubnet{}, false
}

// clusterDir reads which cluster directory the slot belongs to.
func (s slotDir) clusterDir() string {
	b, err := os.ReadFile(s.dirFile())
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// newNode describes node i (1-based) of the n nodes of a cluster in slot s: nodes 1 to
// ceil(n/2) sit on subnet A, the others on subnet B.
func newNode(l layout, s slotDir, mode Mode, i, n int) Node {
	name := "node" + strconv.Itoa(i)
	u := s.subnets()[0]
	if i > (n+1)/2 {
		u = s.subnets()[1]
	}
	ip := u.prefix.Addr().As4()
	ip[3] = byte(10 + i)
	node := Node{
		Name:       name,
		NetNS:      s.netnsPrefix() + name,
		UnderlayIP: netip.AddrFrom4(ip),
		Subnet:     u.prefix,
		Gateway:    u.gateway(),
		Root:       filepath.Join(l.nodeDir(name), "root"),
		Dir:        l.nodeDir(name),
	}
	if !mode.loomNetwork() {
		node.PodCIDR = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24)
	}
	return node
}
