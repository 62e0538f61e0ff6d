package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/loom-cni/loom/e2e/sim"
	"github.com/loom-cni/loom/fabric"
	"github.com/loom-cni/loom/fabric/ipam"
)

// The label on every object the routes benchmark makes, by which it deletes them again.
const (
	benchLabel = "loom.dev/bench"
	benchValue = "fabricbench"
)

// createWorkers is how many objects are created at once: enough to keep the API server
// busy, few enough not to be throttled by it.
const createWorkers = 16

// api is a client of the cluster without client-side rate limits: the sim's own clients
// allow 100 requests a second, and 2,000 objects would take 20 s to create.
type api struct {
	kube kubernetes.Interface
	dyn  dynamic.Interface
}

func newAPI(c *sim.Cluster) (api, error) {
	cfg := c.RESTConfig()
	cfg.QPS, cfg.Burst = 5000, 5000
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return api{}, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return api{}, err
	}
	return api{kube: kube, dyn: dyn}, nil
}

// fakeNode is a simulated remote node: a Node object with the annotations loomd reads, and one
// IPBlock. No namespace stands behind it; nothing is ever sent to it.
type fakeNode struct {
	name     string
	underlay netip.Addr
	block    netip.Prefix
	// vxlan says the node publishes a VTEP, as it does in the VXLAN modes.
	vxlan bool
}

// planFakes describes n remote nodes, each with one block of the cluster CIDR that no node
// has claimed, all with the given underlay address, or, if it is invalid, each with an address of its own from
// 100.64.0.0/10, which is on no underlay.
func planFakes(ctx context.Context, a api, n int, cluster netip.Prefix, bits int, underlay netip.Addr, vxlan bool) ([]fakeNode, error) {
	blocks, err := freeBlocks(ctx, a, n, cluster, bits)
	if err != nil {
		return nil, err
	}
	fakes := make([]fakeNode, n)
	for i := range fakes {
		ip := underlay
		if !ip.IsValid() {
			ip = netip.AddrFrom4([4]byte{100, 64, byte((i + 1) >> 8), byte(i + 1)})
		}
		fakes[i] = fakeNode{name: fmt.Sprintf("remote-%04d", i+1), underlay: ip, block: blocks[i], vxlan: vxlan}
	}
	return fakes, nil
}

// freeBlocks returns n blocks of the cluster CIDR that no IPBlock claims.
func freeBlocks(ctx context.Context, a api, n int, cluster netip.Prefix, bits int) ([]netip.Prefix, error) {
	list, err := a.dyn.Resource(ipam.GVR).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list IPBlocks: %w", err)
	}
	var used []netip.Prefix
	for i := range list.Items {
		b, err := ipam.FromUnstructured(&list.Items[i])
		if err != nil {
			return nil, err
		}
		p, err := b.Spec.Prefix()
		if err != nil {
			return nil, err
		}
		used = append(used, p)
	}
	return pickBlocks(cluster, bits, used, n)
}

// pickBlocks returns n blocks of length bits of the cluster CIDR that overlap none of used,
// from the top down: the real nodes' blocks are wherever their claims landed, and the top is
// as good a place as any to start.
func pickBlocks(cluster netip.Prefix, bits int, used []netip.Prefix, n int) ([]netip.Prefix, error) {
	cluster = cluster.Masked()
	if !cluster.Addr().Is4() || bits < cluster.Bits() || bits > 32 {
		return nil, fmt.Errorf("blocks of /%d in %s: want IPv4 blocks no larger than the cluster CIDR", bits, cluster)
	}
	base := cluster.Addr().As4()
	start := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	var free []netip.Prefix
	for k := (1 << (bits - cluster.Bits())) - 1; k >= 0 && len(free) < n; k-- {
		a := start + uint32(k)<<(32-bits)
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), bits)
		if !slices.ContainsFunc(used, p.Overlaps) {
			free = append(free, p)
		}
	}
	if len(free) < n {
		return nil, fmt.Errorf("the cluster CIDR %s has %d free /%d blocks, %d wanted", cluster, len(free), bits, n)
	}
	return free, nil
}

// object returns the fake node's Node: in the VXLAN modes with a VTEP MAC derived from its
// underlay address as loomd derives its own, and the first address of its block as its VTEP
// address, as a real node's would be.
func (f fakeNode) object() *corev1.Node {
	ann := map[string]string{fabric.AnnotationUnderlayIP: f.underlay.String()}
	if f.vxlan {
		ip := f.underlay.As4()
		ann[fabric.AnnotationVTEPMAC] = net.HardwareAddr{0x0e, 0x6c, ip[0], ip[1], ip[2], ip[3]}.String()
		ann[fabric.AnnotationVTEPAddr] = f.block.Addr().Next().String()
	}
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name:        f.name,
		Labels:      map[string]string{benchLabel: benchValue},
		Annotations: ann,
	}}
}

// ipBlock returns the IPBlock that assigns the fake node its block, as its loomd would
// have claimed it.
func (f fakeNode) ipBlock() *ipam.IPBlock {
	return &ipam.IPBlock{
		ObjectMeta: metav1.ObjectMeta{
			Name:   ipam.BlockName(fabric.DefaultPool, f.block),
			Labels: map[string]string{ipam.LabelPool: fabric.DefaultPool, ipam.LabelNode: f.name, benchLabel: benchValue},
		},
		Spec: ipam.IPBlockSpec{Pool: fabric.DefaultPool, CIDR: f.block.String(), Node: f.name},
	}
}

// createFakes creates every fake node's Node and then its IPBlock, several nodes at once,
// and returns when the first request was sent and when the last one was answered.
func createFakes(ctx context.Context, a api, fakes []fakeNode) (time.Time, time.Time, error) {
	start := time.Now()
	created := parallel(ctx, len(fakes), func(ctx context.Context, i int) error {
		f := fakes[i]
		if _, err := a.kube.CoreV1().Nodes().Create(ctx, f.object(), metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create Node %s: %w", f.name, err)
		}
		u, err := f.ipBlock().ToUnstructured()
		if err != nil {
			return err
		}
		if _, err := a.dyn.Resource(ipam.GVR).Create(ctx, u, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create IPBlock %s: %w", u.GetName(), err)
		}
		return nil
	})
	return start, time.Now(), created
}

// deleteFakes deletes every object the benchmark made, including those an interrupted
// earlier run left: the blocks before their nodes, as loom-controller would. It deletes them
// one by one, several at once: the API server carries out a delete-collection request one
// object at a time.
func deleteFakes(ctx context.Context, a api) error {
	sel := metav1.ListOptions{LabelSelector: benchLabel + "=" + benchValue}
	blocks, err := a.dyn.Resource(ipam.GVR).List(ctx, sel)
	if err != nil {
		return fmt.Errorf("list the fake IPBlocks: %w", err)
	}
	err = parallel(ctx, len(blocks.Items), func(ctx context.Context, i int) error {
		return ignoreNotFound(a.dyn.Resource(ipam.GVR).Delete(ctx, blocks.Items[i].GetName(), metav1.DeleteOptions{}))
	})
	if err != nil {
		return fmt.Errorf("delete the fake IPBlocks: %w", err)
	}
	nodes, err := a.kube.CoreV1().Nodes().List(ctx, sel)
	if err != nil {
		return fmt.Errorf("list the fake Nodes: %w", err)
	}
	err = parallel(ctx, len(nodes.Items), func(ctx context.Context, i int) error {
		return ignoreNotFound(a.kube.CoreV1().Nodes().Delete(ctx, nodes.Items[i].Name, metav1.DeleteOptions{}))
	})
	if err != nil {
		return fmt.Errorf("delete the fake Nodes: %w", err)
	}
	return nil
}

func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// parallel calls f for 0…n-1 on createWorkers goroutines, and stops at the first error.
func parallel(ctx context.Context, n int, f func(context.Context, int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan int)
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	for range min(createWorkers, n) {
		wg.Go(func() {
			for i := range work {
				if err := f(ctx, i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					cancel()
				}
			}
		})
	}
feed:
	for i := range n {
		select {
		case work <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}
