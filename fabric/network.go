package fabric

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/loom-cni/loom/fabric/bgp"
	"github.com/loom-cni/loom/fabric/ipam"
	"github.com/loom-cni/loom/fabric/vxlan"
)

// Node annotations through which nodes find each other's VTEPs.
const (
	AnnotationUnderlayIP = "loom.dev/underlay-ip"
	AnnotationVTEPMAC    = "loom.dev/vtep-mac"
	AnnotationVTEPAddr   = "loom.dev/vtep-addr"
)

// DefaultPool is the name of the cluster CIDR's pool.
const DefaultPool = "default"

// vtepOwner names the VTEP's own address among the node's allocations.
const vtepOwner = "vtep"

// Network runs the primary network on one node.
type Network struct {
	s    Settings
	node string
	kube kubernetes.Interface
	dyn  dynamic.Interface
	log  *slog.Logger

	alloc    *ipam.Allocator
	pool     ipam.Pool
	nodeIP   netip.Addr
	underlay netlink.Link
	mtu      int
	vx       *vxlan.Backend // set once under mu (BGPPeers and VXLANStatus read it from elsewhere)
	speaker  *bgp.Speaker   // set once under mu
	routes   *blockRoutes

	published map[string]string // what this node publishes on its Node
	// lastVTEP is the last usable VTEP each remote node published. A node whose annotations
	// go missing or unreadable keeps it until it publishes new ones or leaves the cluster:
	// an edit to a Node's metadata must not cut its pods off. Only the sync loop uses it.
	lastVTEP map[string]vxlan.Peer

	nodes  cache.SharedIndexInformer
	blocks cache.SharedIndexInformer
	dirty  chan struct{}

	mu       sync.Mutex
	poolFor  PoolFor
	readyErr error
	synced   bool
}

// NewNetwork returns the primary network of node, drawing addresses from alloc; Start brings
// it up.
func NewNetwork(s Settings, node string, kube kubernetes.Interface, dyn dynamic.Interface, alloc *ipam.Allocator, log *slog.Logger) *Network {
	pool := ipam.Pool{Name: DefaultPool, CIDR: s.ClusterCIDR, BlockSize: s.BlockSize}
	return &Network{
		s: s, node: node, kube: kube, dyn: dyn, log: log.With("component", "primary-network"),
		alloc:    alloc,
		pool:     pool,
		dirty:    make(chan struct{}, 1),
		readyErr: errors.New("starting"),
		lastVTEP: map[string]vxlan.Peer{},
	}
}

// PoolFor says which pool a namespace's pods draw from when it is not the default pool.
type PoolFor func(namespace string, defaultPool ipam.Pool) ipam.Pool

// SetPoolFor makes pods draw from the pools f chooses (a tenant's); without it every pod
// draws from the default pool.
func (n *Network) SetPoolFor(f PoolFor) {
	n.mu.Lock()
	n.poolFor = f
	n.mu.Unlock()
}

// DefaultPool is the pool of the cluster CIDR that pods of no particular pool draw from.
func (n *Network) DefaultPool() ipam.Pool { return n.pool }

func (n *Network) poolOf(namespace string) ipam.Pool {
	n.mu.Lock()
	f := n.poolFor
	n.mu.Unlock()
	if f == nil {
		return n.pool
	}
	return f(namespace, n.pool)
}

// Attachment returns the primary network's attachment. Its ADDs fail until Start is done.
func (n *Network) Attachment() *Primary {
	return NewPrimary(n.alloc, n.poolOf, n.podMTU, n.Ready, n.log)
}

func (n *Network) podMTU() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mtu
}

// Ready reports whether the dataplane is up and has synced once.
func (n *Network) Ready() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.readyErr
}

func (n *Network) setReady(err error) {
	n.mu.Lock()
	n.readyErr = err
	n.mu.Unlock()
}

// BGPPeers reports the node's BGP sessions: none unless the network runs in bgp mode and
// its speaker has started.
func (n *Network) BGPPeers(ctx context.Context) ([]bgp.PeerState, error) {
	n.mu.Lock()
	sp := n.speaker
	n.mu.Unlock()
	if sp == nil {
		return nil, nil
	}
	return sp.Peers(ctx)
}

// VXLANStatus reports what the VXLAN dataplane last programmed; ok is false unless the
// network runs a VTEP that has synced once.
func (n *Network) VXLANStatus() (st vxlan.Status, ok bool) {
	n.mu.Lock()
	vx := n.vx
	n.mu.Unlock()
	if vx == nil {
		return vxlan.Status{}, false
	}
	return vx.Status()
}

// Start finds the node's underlay, loads its blocks, brings up the VTEP or the BGP speaker
// and starts reconciling in the background until ctx ends. It returns once the node can
// attach pods, or with the error that prevents it.
func (n *Network) Start(ctx context.Context) error {
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		return fmt.Errorf("enable IPv4 forwarding: %w", err)
	}
	if err := n.findUnderlay(ctx); err != nil {
		return err
	}
	n.startInformers(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), n.nodes.HasSynced, n.blocks.HasSynced) {
		return ctx.Err()
	}
	// The speaker starts once the IPBlocks are known, so that the routes it learns are
	// checked against their owners from the start.
	switch n.s.Mode {
	case ModeBGP:
		if err := n.startBGP(ctx); err != nil {
			return err
		}
	default:
		if err := n.startVXLAN(ctx); err != nil {
			return err
		}
	}
	if err := n.sync(ctx); err != nil {
		return err
	}
	n.setReady(nil)
	go n.loop(ctx)
	return nil
}

// findUnderlay determines the node's underlay address, link and the pods' MTU.
func (n *Network) findUnderlay(ctx context.Context) error {
	ip := n.s.NodeIP
	if !ip.IsValid() {
		node, err := n.kube.CoreV1().Nodes().Get(ctx, n.node, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("find this node's address: get Node %s: %w", n.node, err)
		}
		if ip = internalIP(node); !ip.IsValid() {
			return fmt.Errorf("find this node's address: Node %s has no IPv4 InternalIP: set primaryNetwork.nodeIP", n.node)
		}
	}
	link, err := linkWithAddr(ip)
	if err != nil {
		return err
	}
	mtu := n.s.MTU
	if mtu == 0 {
		mtu = link.Attrs().MTU - Overhead(n.s.Mode)
	}
	n.mu.Lock()
	n.nodeIP, n.underlay, n.mtu = ip, link, mtu
	n.mu.Unlock()
	n.log.Info("underlay found", "nodeIP", ip, "link", link.Attrs().Name, "podMTU", mtu, "mode", n.s.Mode)
	return nil
}

func internalIP(node *corev1.Node) netip.Addr {
	for _, a := range node.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil && ip.Is4() {
			return ip
		}
	}
	return netip.Addr{}
}

func linkWithAddr(ip netip.Addr) (netlink.Link, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if a.IP.Equal(ip.AsSlice()) {
			return netlink.LinkByIndex(a.LinkIndex)
		}
	}
	return nil, fmt.Errorf("no interface of this node holds the node address %s", ip)
}

func (n *Network) startVXLAN(ctx context.Context) error {
	owner := ipam.Owner{Kind: ipam.OwnerNode, Name: vtepOwner}
	addr, _, err := n.alloc.Allocate(ctx, n.pool, owner)
	if err != nil {
		return fmt.Errorf("allocate the VTEP address: %w", err)
	}
	h, err := netlink.NewHandle()
	if err != nil {
		return err
	}
	vx, err := vxlan.New(h, vxlan.Config{
		VNI: n.s.VNI, Port: n.s.Port, Underlay: n.underlay.Attrs().Name, LocalIP: n.nodeIP, Addr: addr,
		CrossSubnet: n.s.Mode == ModeVXLANCrossSubnet, Nft: n.s.Nft,
	}, n.log)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.vx = vx
	n.mu.Unlock()
	mac, err := n.vx.Ensure()
	if err != nil {
		return fmt.Errorf("bring up the VTEP: %w", err)
	}
	if err := n.publish(ctx, map[string]string{
		AnnotationUnderlayIP: n.nodeIP.String(), AnnotationVTEPMAC: mac.String(), AnnotationVTEPAddr: addr.String(),
	}); err != nil {
		return err
	}
	go n.vx.Run(ctx, n.s.Resync)
	return nil
}

func (n *Network) startBGP(ctx context.Context) error {
	h, err := netlink.NewHandle()
	if err != nil {
		return err
	}
	var peers []bgp.Peer
	for _, p := range n.s.Peers {
		peers = append(peers, bgp.Peer{Address: p.Address, ASN: p.ASN, Port: p.Port, Password: p.Password})
	}
	n.routes = newBlockRoutes(bgp.NewKernelRoutes(h, n.log), n.s.ClusterCIDR)
	speaker, err := bgp.New(bgp.Config{
		ASN: n.s.ASN, RouterID: n.nodeIP, ListenPort: n.s.ListenPort, Peers: peers,
		// Peers are nodes and routers of the same data centre: retry a lost session within
		// seconds, not GoBGP's default half minute.
		ConnectRetry: 5 * time.Second,
	}, n.routes, n.log)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.speaker = speaker
	n.mu.Unlock()
	// Advertise and peer before starting: a peer that kept this node's routes through a
	// restart drops, at End-of-RIB, whatever the restarted node has not sent again.
	if err := n.syncBGP(ctx, n.snapshot()); err != nil {
		return err
	}
	if err := n.speaker.Start(ctx); err != nil {
		return fmt.Errorf("start the BGP speaker: %w", err)
	}
	go func() {
		<-ctx.Done()
		n.speaker.Stop()
	}()
	return n.publish(ctx, map[string]string{AnnotationUnderlayIP: n.nodeIP.String()})
}

// publish merges annotations into this node's Node object; sync publishes them again if
// someone removes or changes them.
func (n *Network) publish(ctx context.Context, annotations map[string]string) error {
	n.mu.Lock()
	n.published = annotations
	n.mu.Unlock()
	patch := map[string]any{"metadata": map[string]any{"annotations": annotations}}
	b, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	if _, err := n.kube.CoreV1().Nodes().Patch(ctx, n.node, types.MergePatchType, b, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("publish %v on Node %s: %w", annotations, n.node, err)
	}
	return nil
}

func (n *Network) startInformers(ctx context.Context) {
	kf := informers.NewSharedInformerFactory(n.kube, 0)
	n.nodes = kf.Core().V1().Nodes().Informer()
	df := dynamicinformer.NewDynamicSharedInformerFactory(n.dyn, 0)
	n.blocks = df.ForResource(ipam.GVR).Informer()
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { n.markDirty() },
		UpdateFunc: func(any, any) { n.markDirty() },
		DeleteFunc: func(any) { n.markDirty() },
	}
	n.nodes.AddEventHandler(h)
	n.blocks.AddEventHandler(h)
	kf.Start(ctx.Done())
	df.Start(ctx.Done())
}

func (n *Network) markDirty() {
	select {
	case n.dirty <- struct{}{}:
	default:
	}
}

// loop syncs the dataplane whenever a Node or IPBlock changes (coalescing bursts), and from
// scratch every Resync.
func (n *Network) loop(ctx context.Context) {
	tick := time.NewTicker(n.s.Resync)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.dirty:
		case <-tick.C:
		}
		if err := n.sync(ctx); err != nil {
			n.log.Warn("sync primary network", "error", err)
			n.markDirty()
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
		// Coalesce bursts: a node joining creates its Node and its blocks within moments.
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// view is what the informers say about the cluster: every node's underlay address and
// annotations, and every node's blocks.
type view struct {
	nodes  map[string]*corev1.Node
	blocks map[string][]netip.Prefix
}

func (n *Network) snapshot() view {
	v := view{nodes: map[string]*corev1.Node{}, blocks: map[string][]netip.Prefix{}}
	for _, o := range n.nodes.GetStore().List() {
		if node, ok := o.(*corev1.Node); ok {
			v.nodes[node.Name] = node
		}
	}
	for _, o := range n.blocks.GetStore().List() {
		b, err := ipam.FromUnstructured(o)
		if err != nil {
			n.log.Warn("ignoring an unreadable IPBlock", "error", err)
			continue
		}
		p, err := netip.ParsePrefix(b.Spec.CIDR)
		if err != nil {
			continue
		}
		v.blocks[b.Spec.Node] = append(v.blocks[b.Spec.Node], p)
	}
	for _, bs := range v.blocks {
		slices.SortFunc(bs, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	}
	return v
}

func (n *Network) sync(ctx context.Context) error {
	v := n.snapshot()
	if err := n.republish(ctx, v); err != nil {
		return err
	}
	if n.s.Mode == ModeBGP {
		return n.syncBGP(ctx, v)
	}
	peerErrs, err := splitPeerErrors(n.vx.Sync(n.vxlanPeers(v)))
	for _, pe := range peerErrs {
		n.log.Warn("remote node left out of the VXLAN dataplane", "error", pe)
	}
	return err
}

// republish restores this node's annotations when its Node object lost or changed them.
func (n *Network) republish(ctx context.Context, v view) error {
	n.mu.Lock()
	want := n.published
	n.mu.Unlock()
	node, ok := v.nodes[n.node]
	if !ok {
		return nil
	}
	for k, val := range want {
		if node.Annotations[k] != val {
			n.log.Info("publishing this node's dataplane annotations again", "annotation", k)
			return n.publish(ctx, want)
		}
	}
	return nil
}

// splitPeerErrors separates, in an error of vxlan's Sync, the problems of single remote
// nodes (what they publish is unusable: logged, since one such node must not stop this one)
// from failures to program the kernel (retried).
func splitPeerErrors(err error) (peers []error, rest error) {
	var others []error
	var walk func(error)
	walk = func(e error) {
		if multi, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range multi.Unwrap() {
				walk(x)
			}
			return
		}
		if inner := errors.Unwrap(e); inner != nil {
			if _, ok := inner.(interface{ Unwrap() []error }); ok {
				walk(inner)
				return
			}
		}
		var pe *vxlan.PeerError
		if errors.As(e, &pe) {
			peers = append(peers, e)
		} else {
			others = append(others, e)
		}
	}
	if err != nil {
		walk(err)
	}
	return peers, errors.Join(others...)
}

func (n *Network) vxlanPeers(v view) []vxlan.Peer {
	var peers []vxlan.Peer
	for name := range n.lastVTEP {
		if _, ok := v.nodes[name]; !ok {
			delete(n.lastVTEP, name)
		}
	}
	for name, node := range v.nodes {
		if name == n.node {
			continue
		}
		a := node.Annotations
		ip, err1 := netip.ParseAddr(a[AnnotationUnderlayIP])
		mac, err2 := net.ParseMAC(a[AnnotationVTEPMAC])
		vtep, err3 := netip.ParseAddr(a[AnnotationVTEPAddr])
		peer := vxlan.Peer{Node: name, UnderlayIP: ip, VTEPMAC: mac, VTEPAddr: vtep}
		if err := errors.Join(err1, err2, err3); err != nil {
			last, ok := n.lastVTEP[name]
			if !ok {
				n.log.Debug("node has not published its VTEP yet", "peer", name, "error", err)
				continue
			}
			n.log.Info("node's VTEP annotations are unusable; keeping the last ones it published", "peer", name, "error", err)
			peer = last
		}
		n.lastVTEP[name] = peer
		if len(v.blocks[name]) == 0 {
			continue
		}
		peer.Blocks = v.blocks[name]
		peers = append(peers, peer)
	}
	slices.SortFunc(peers, func(a, b vxlan.Peer) int { return strings.Compare(a.Node, b.Node) })
	return peers
}

// owners maps every block to the underlay address of the node that owns it.
func (n *Network) owners(v view) map[netip.Prefix]netip.Addr {
	owners := map[netip.Prefix]netip.Addr{}
	for name, node := range v.nodes {
		ip := nodeIP(node)
		if !ip.IsValid() {
			continue
		}
		for _, b := range v.blocks[name] {
			owners[b] = ip
		}
	}
	return owners
}

// nodeIP is a node's underlay address: what it published, else its InternalIP.
func nodeIP(node *corev1.Node) netip.Addr {
	if ip, err := netip.ParseAddr(node.Annotations[AnnotationUnderlayIP]); err == nil {
		return ip
	}
	return internalIP(node)
}

func (n *Network) syncBGP(ctx context.Context, v view) error {
	if err := n.routes.setOwners(n.owners(v)); err != nil {
		n.log.Warn("install routes", "error", err)
	}
	if err := n.speaker.Advertise(ctx, v.blocks[n.node]); err != nil {
		return fmt.Errorf("advertise this node's blocks: %w", err)
	}
	if !n.s.Mesh {
		return nil
	}
	var mesh []bgp.Peer
	for name, node := range v.nodes {
		if name == n.node {
			continue
		}
		ip := nodeIP(node)
		if !ip.IsValid() || n.isConfiguredPeer(ip) {
			continue
		}
		mesh = append(mesh, bgp.Peer{Address: ip, ASN: n.s.ASN, Port: n.s.ListenPort, Description: name})
	}
	slices.SortFunc(mesh, func(a, b bgp.Peer) int { return a.Address.Compare(b.Address) })
	return n.speaker.SetMeshPeers(ctx, mesh)
}

func (n *Network) isConfiguredPeer(ip netip.Addr) bool {
	return slices.ContainsFunc(n.s.Peers, func(p Peer) bool { return p.Address == ip })
}
