package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	nadclient "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/clientset/versioned"
	nadinformers "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/informers/externalversions"
	nadlisters "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/listers/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	ktypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// Cluster is loomd's view of the Kubernetes API: informer caches of the pods on this node, of
// every NetworkAttachmentDefinition and of every pod's VF requests (slimPod), and the pod
// annotation patch. Nothing on the ADD path but the patch talks to the API server.
type Cluster struct {
	client  kubernetes.Interface
	pods    corelisters.PodLister
	allPods cache.Indexer // every node's pods, as slimPod keeps them
	nads    nadlisters.NetworkAttachmentDefinitionLister
	synced  []cache.InformerSynced
	start   []func(stop <-chan struct{})
	podWait time.Duration
	log     *slog.Logger

	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever the pod cache changes
}

// NewCluster prepares the informers; Run starts them.
func NewCluster(client kubernetes.Interface, nads nadclient.Interface, node string, podWait time.Duration, log *slog.Logger) *Cluster {
	c := &Cluster{client: client, podWait: podWait, log: log, changed: make(chan struct{})}
	podFactory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", node).String()
		}))
	podInformer := podFactory.Core().V1().Pods()
	podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.podsChanged() },
		UpdateFunc: func(any, any) { c.podsChanged() },
	})
	c.pods = podInformer.Lister()
	nadFactory := nadinformers.NewSharedInformerFactory(nads, 0)
	nadInformer := nadFactory.K8sCniCncfIo().V1().NetworkAttachmentDefinitions()
	c.nads = nadInformer.Lister()
	allFactory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(slimPod))
	allInformer := allFactory.Core().V1().Pods().Informer()
	c.allPods = allInformer.GetIndexer()
	c.synced = []cache.InformerSynced{podInformer.Informer().HasSynced, nadInformer.Informer().HasSynced, allInformer.HasSynced}
	c.start = []func(<-chan struct{}){podFactory.Start, nadFactory.Start, allFactory.Start}
	return c
}

// PodsIn lists the pods of namespace on every node, as slimPod keeps them: what a tenant's
// VF quota counts.
func (c *Cluster) PodsIn(namespace string) []*corev1.Pod { return podsIn(c.allPods, namespace) }

// Run starts the informers and blocks until ctx ends.
func (c *Cluster) Run(ctx context.Context) {
	for _, start := range c.start {
		start(ctx.Done())
	}
	<-ctx.Done()
}

// Synced reports whether every cache has been filled once.
func (c *Cluster) Synced() bool {
	for _, s := range c.synced {
		if !s() {
			return false
		}
	}
	return true
}

func (c *Cluster) podsChanged() {
	c.mu.Lock()
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// Pod returns the pod the runtime named, from the cache. A pod the cache has not seen yet
// (the runtime can be faster than the watch) is waited for up to the configured time, then
// fetched once from the API server. uid, when given, must match: a pod deleted and created
// again under the same name is a different pod.
func (c *Cluster) Pod(ctx context.Context, namespace, name string, uid ktypes.UID) (*corev1.Pod, error) {
	deadline := time.NewTimer(c.podWait)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		changed := c.changed
		c.mu.Unlock()
		if pod := c.CachedPod(namespace, name, uid); pod != nil {
			return pod, nil
		}
		select {
		case <-changed:
		case <-deadline.C:
			return c.podFromAPI(ctx, namespace, name, uid)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (c *Cluster) podFromAPI(ctx context.Context, namespace, name string, uid ktypes.UID) (*corev1.Pod, error) {
	c.log.Warn("pod not in cache, asking the API server", "namespace", namespace, "pod", name)
	pod, err := c.client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get pod %s/%s: %w", namespace, name, err)
	}
	if uid != "" && pod.UID != uid {
		return nil, fmt.Errorf("get pod %s/%s: it has UID %s, the runtime asked for %s (the pod was deleted and created again)", namespace, name, pod.UID, uid)
	}
	return pod, nil
}

// CachedPod returns the pod from the cache only, or nil: DEL must never wait for the API.
func (c *Cluster) CachedPod(namespace, name string, uid ktypes.UID) *corev1.Pod {
	pod, err := c.pods.Pods(namespace).Get(name)
	if err != nil || (uid != "" && pod.UID != uid) {
		return nil
	}
	return pod
}

// NAD returns a NetworkAttachmentDefinition from the cache; a missing one is an error for
// which apierrors.IsNotFound is true.
func (c *Cluster) NAD(namespace, name string) (*nadv1.NetworkAttachmentDefinition, error) {
	return c.nads.NetworkAttachmentDefinitions(namespace).Get(name)
}

// NADs lists every cached NetworkAttachmentDefinition.
func (c *Cluster) NADs() ([]*nadv1.NetworkAttachmentDefinition, error) {
	return c.nads.List(labels.Everything())
}
