package controller

import (
	"context"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/loom-cni/loom/fabric/ipam"
	"github.com/loom-cni/loom/metrics"
)

// reclaimer returns to the pool what deleted nodes and pods still hold, while this replica
// leads.
type reclaimer struct {
	kube     kubernetes.Interface
	dyn      dynamic.Interface
	store    ipam.Store
	interval time.Duration
	grace    time.Duration
	metrics  *metrics.Controller
	log      *slog.Logger
}

func newReclaimer(kube kubernetes.Interface, dyn dynamic.Interface, interval, grace time.Duration, m *metrics.Controller, log *slog.Logger) *reclaimer {
	return &reclaimer{kube: kube, dyn: dyn, store: ipam.NewKubeStore(dyn), interval: interval, grace: grace, metrics: m, log: log}
}

// run reconciles on every Node deletion and every interval until ctx ends.
func (r *reclaimer) run(ctx context.Context) {
	kf := informers.NewSharedInformerFactory(r.kube, 0)
	nodes := kf.Core().V1().Nodes().Informer()
	pods := kf.Core().V1().Pods().Informer()
	blocks := dynamicinformer.NewDynamicSharedInformerFactory(r.dyn, 0)
	blockInf := blocks.ForResource(ipam.GVR).Informer()
	nodeGone := make(chan struct{}, 1)
	nodes.AddEventHandler(cache.ResourceEventHandlerFuncs{DeleteFunc: func(any) {
		select {
		case nodeGone <- struct{}{}:
		default:
		}
	}})
	kf.Start(ctx.Done())
	blocks.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), nodes.HasSynced, pods.HasSynced, blockInf.HasSynced) {
		return
	}
	tick := time.NewTicker(r.interval)
	defer tick.Stop()
	for {
		r.reconcile(ctx, nodes.GetStore(), pods.GetStore(), blockInf.GetStore())
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-nodeGone:
		}
	}
}

func (r *reclaimer) reconcile(ctx context.Context, nodeStore, podStore, blockStore cache.Store) {
	nodes := map[string]bool{}
	for _, o := range nodeStore.List() {
		if n, ok := o.(*corev1.Node); ok {
			nodes[n.Name] = true
		}
	}
	pods := map[string]bool{}
	for _, o := range podStore.List() {
		if p, ok := o.(*corev1.Pod); ok {
			pods[string(p.UID)] = true
		}
	}
	var blocks []ipam.IPBlock
	for _, o := range blockStore.List() {
		b, err := ipam.FromUnstructured(o)
		if err != nil {
			r.log.Warn("ignoring an unreadable IPBlock", "error", err)
			continue
		}
		blocks = append(blocks, *b)
	}
	plan := ipam.Plan(blocks, nodes, pods, time.Now(), r.grace)
	if plan.Empty() {
		return
	}
	done, err := ipam.Apply(ctx, r.store, plan)
	released := 0
	for _, rel := range done.Releases {
		released += len(rel.Allocations)
	}
	r.metrics.Reclaimed(len(done.DeleteBlocks), released, err)
	if !done.Empty() {
		r.log.Info("reclaimed addresses", "done", done.String())
	}
	if err != nil {
		r.log.Warn("reclaim address blocks", "error", err)
	}
}
