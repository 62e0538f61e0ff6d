package controller

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	nadclient "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/clientset/versioned"
	nadinformers "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/informers/externalversions"
	nadlisters "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/listers/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/loom-cni/loom/tenants"
)

// clusterCaches are the informer caches every replica keeps: namespaces, Tenants,
// NetworkAttachmentDefinitions and pods (as slimPod keeps them). The webhook decides from
// them without an API round trip; the tenant status controller reads them too.
type clusterCaches struct {
	kf   informers.SharedInformerFactory
	pf   informers.SharedInformerFactory
	df   dynamicinformer.DynamicSharedInformerFactory
	nf   nadinformers.SharedInformerFactory
	nss  cache.SharedIndexInformer
	ts   cache.SharedIndexInformer
	nad  cache.SharedIndexInformer
	pods cache.SharedIndexInformer
	// nads looks NADs up by namespace and name.
	nads nadlisters.NetworkAttachmentDefinitionLister
	log  *slog.Logger

	// gen counts the namespace and Tenant events; the directory is rebuilt when it moved.
	gen    atomic.Uint64
	mu     sync.Mutex
	dir    *tenants.Directory
	dirGen uint64
}

func newClusterCaches(kube kubernetes.Interface, dyn dynamic.Interface, nads nadclient.Interface, log *slog.Logger) *clusterCaches {
	c := &clusterCaches{
		kf:  informers.NewSharedInformerFactory(kube, 0),
		pf:  informers.NewSharedInformerFactoryWithOptions(kube, 0, informers.WithTransform(slimPod)),
		df:  dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0),
		nf:  nadinformers.NewSharedInformerFactory(nads, 0),
		log: log,
	}
	c.nss = c.kf.Core().V1().Namespaces().Informer()
	c.ts = c.df.ForResource(tenants.GVR).Informer()
	nadInf := c.nf.K8sCniCncfIo().V1().NetworkAttachmentDefinitions()
	c.nad, c.nads = nadInf.Informer(), nadInf.Lister()
	if err := c.nad.AddIndexers(cache.Indexers{resourceNameIndex: nadResourceName}); err != nil {
		panic(err) // only before the informer starts, with a new index name: cannot fail
	}
	c.pods = c.pf.Core().V1().Pods().Informer()
	bump := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.gen.Add(1) },
		UpdateFunc: func(any, any) { c.gen.Add(1) },
		DeleteFunc: func(any) { c.gen.Add(1) },
	}
	c.nss.AddEventHandler(bump)
	c.ts.AddEventHandler(bump)
	return c
}

// start starts the informers; they stop when ctx ends.
func (c *clusterCaches) start(ctx context.Context) {
	c.kf.Start(ctx.Done())
	c.pf.Start(ctx.Done())
	c.df.Start(ctx.Done())
	c.nf.Start(ctx.Done())
}

// synced reports whether every cache holds a first complete list.
func (c *clusterCaches) synced() bool {
	return c.nss.HasSynced() && c.ts.HasSynced() && c.nad.HasSynced() && c.pods.HasSynced()
}

// waitSynced waits until every cache holds a first complete list, or ctx ends.
func (c *clusterCaches) waitSynced(ctx context.Context) bool {
	return cache.WaitForCacheSync(ctx.Done(), c.nss.HasSynced, c.ts.HasSynced, c.nad.HasSynced, c.pods.HasSynced)
}

// resourceNameIndex indexes NADs by the SR-IOV pool their resourceName annotation names.
const resourceNameIndex = "resourceName"

func nadResourceName(o any) ([]string, error) {
	if n, ok := o.(*nadv1.NetworkAttachmentDefinition); ok {
		if r := n.Annotations[tenants.ResourceNameAnnotation]; r != "" {
			return []string{r}, nil
		}
	}
	return nil, nil
}

// nadPools returns the SR-IOV pools that NADs name: with those Tenants list, the resources
// a tenant's VF quota counts.
func (c *clusterCaches) nadPools() []string {
	return c.nad.GetIndexer().ListIndexFuncValues(resourceNameIndex)
}

// podsIn lists the pods of namespace, as slimPod keeps them.
func (c *clusterCaches) podsIn(namespace string) []*corev1.Pod {
	objs, _ := c.pods.GetIndexer().ByIndex(cache.NamespaceIndex, namespace)
	out := make([]*corev1.Pod, 0, len(objs))
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok {
			out = append(out, p)
		}
	}
	return out
}

// slimPod keeps of a pod only what the webhook and the tenant status need, so that every
// replica's pod cache stays small: its identity, phase and addresses, its network-status,
// and its containers' extended resources (the VFs a tenant's quota counts).
func slimPod(o any) (any, error) {
	p, ok := o.(*corev1.Pod)
	if !ok {
		return o, nil
	}
	slim := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
			CreationTimestamp: p.CreationTimestamp, DeletionTimestamp: p.DeletionTimestamp,
		},
		Spec:   corev1.PodSpec{Containers: tenants.DeviceContainers(p.Spec.Containers), InitContainers: tenants.DeviceContainers(p.Spec.InitContainers)},
		Status: corev1.PodStatus{Phase: p.Status.Phase, PodIPs: p.Status.PodIPs},
	}
	if v, ok := p.Annotations[nadv1.NetworkStatusAnnot]; ok {
		slim.Annotations = map[string]string{nadv1.NetworkStatusAnnot: v}
	}
	return slim, nil
}

// directory returns the tenants directory of what the caches hold now. It is built again
// only after a namespace or Tenant changed.
func (c *clusterCaches) directory() *tenants.Directory {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Read the generation before the stores: an event during the build leaves the directory
	// marked stale.
	gen := c.gen.Load()
	if c.dir != nil && gen == c.dirGen {
		return c.dir
	}
	namespaces := map[string]map[string]string{}
	for _, o := range c.nss.GetStore().List() {
		if ns, ok := o.(*corev1.Namespace); ok {
			namespaces[ns.Name] = ns.Labels
		}
	}
	var ts []tenants.Tenant
	for _, o := range c.ts.GetStore().List() {
		obj, err := tenants.FromUnstructured(o)
		if err != nil {
			c.log.Warn("ignoring an unreadable Tenant", "error", err)
			continue
		}
		t, _ := tenants.Parse(obj)
		ts = append(ts, t)
	}
	c.dir, c.dirGen = tenants.NewDirectory(ts, namespaces), gen
	return c.dir
}

// namespaceWait bounds how long a request waits for the namespace cache to see a namespace
// the API server already has (one created a moment before the pod).
const namespaceWait = 2 * time.Second

// directoryFor returns the directory once it knows namespace: it waits for the caches to
// sync, and briefly for a namespace they have not seen yet.
func (c *clusterCaches) directoryFor(ctx context.Context, namespace string) (*tenants.Directory, error) {
	if !c.synced() {
		if !c.waitSynced(ctx) {
			return nil, fmt.Errorf("the webhook's caches are not synced yet: %w", ctx.Err())
		}
	}
	deadline := time.Now().Add(namespaceWait)
	for {
		d := c.directory()
		if namespace == "" || d.Known(namespace) {
			return d, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("namespace %s is not in the webhook's cache yet", namespace)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("namespace %s is not in the webhook's cache yet: %w", namespace, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
