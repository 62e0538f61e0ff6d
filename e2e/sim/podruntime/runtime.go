package podruntime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"
)

// Config says where the node's runtime finds its cluster and its node-local paths. Paths
// are as the node sees them.
type Config struct {
	NodeName string
	NodeIP   netip.Addr
	// PodCIDR is the Node's spec.podCIDR; the zero Prefix leaves it unset.
	PodCIDR netip.Prefix
	Client  kubernetes.Interface
	// CNIConfDir, CNIBinDirs and CNICacheDir are containerd's defaults on a real node:
	// /etc/cni/net.d, /opt/cni/bin, /var/lib/cni.
	CNIConfDir  string
	CNIBinDirs  []string
	CNICacheDir string
	// NetNSDir is where pod namespaces are pinned (/run/netns).
	NetNSDir string
	// StateDir holds the sandbox records.
	StateDir string
	// GCInterval is how often CNI GC runs; it also runs once at start.
	GCInterval time.Duration
	// Schedule, if set, is asked every second whether this runtime should also bind
	// unscheduled pods to Ready nodes in turn; once it says yes, the runtime does so until it
	// stops. One runtime of a cluster should, as one kube-scheduler leads.
	Schedule func() bool
	// Ready, if set, is called once the runtime has synced and queued its reconciliation.
	Ready func()
	Log   *slog.Logger
	// Exec runs CNI plugins; nil means the real thing.
	Exec invoke.Exec
	// Devices allocates the devices of extended resources to pods; nil: none are.
	Devices DeviceManager
}

// UnmanagedAnnotation, set to "true" on a pod, makes the runtime leave the pod's networking to
// someone else: it creates no sandbox and calls no CNI for it, and only completes its deletion.
// Tests and benchmarks that drive the CNI themselves (cnitool, cnibench) use it for the pod
// objects loomd must find in the API.
const UnmanagedAnnotation = "sim.loom.dev/unmanaged"

// Runtime is one node's kubelet and container runtime.
type Runtime struct {
	cfg   Config
	log   *slog.Logger
	cni   *libcni.CNIConfig
	store *Store
	pods  corelisters.PodLister
	queue workqueue.TypedRateLimitingInterface[string]
	// gcMu is held shared while a sandbox is recorded and set up, exclusively by GC, so GC
	// never sees an attachment whose record it did not read.
	gcMu sync.RWMutex
}

// New checks the configuration and opens the sandbox store.
func New(cfg Config) (*Runtime, error) {
	if cfg.NodeName == "" || cfg.Client == nil || cfg.CNIConfDir == "" || len(cfg.CNIBinDirs) == 0 ||
		cfg.CNICacheDir == "" || cfg.NetNSDir == "" || cfg.StateDir == "" {
		return nil, errors.New("podruntime: NodeName, Client, CNIConfDir, CNIBinDirs, CNICacheDir, NetNSDir and StateDir are required")
	}
	if cfg.GCInterval <= 0 {
		cfg.GCInterval = time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	store, err := OpenStore(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	limiter := workqueue.NewTypedItemExponentialFailureRateLimiter[string](200*time.Millisecond, 5*time.Second)
	return &Runtime{
		cfg:   cfg,
		log:   cfg.Log.With("node", cfg.NodeName),
		cni:   libcni.NewCNIConfigWithCacheDir(cfg.CNIBinDirs, cfg.CNICacheDir, cfg.Exec),
		store: store,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(limiter, workqueue.TypedRateLimitingQueueConfig[string]{Name: "pods"}),
	}, nil
}

// Run registers the node, reconciles the recorded sandboxes and runs the node's pods until
// the context ends.
func (r *Runtime) Run(ctx context.Context) error {
	defer r.queue.ShutDown()
	if err := r.registerNode(ctx); err != nil {
		return err
	}
	factory := informers.NewSharedInformerFactoryWithOptions(r.cfg.Client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", r.cfg.NodeName).String()
		}))
	podInformer := factory.Core().V1().Pods()
	if _, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    r.enqueue,
		UpdateFunc: func(_, obj any) { r.enqueue(obj) },
		DeleteFunc: r.enqueue,
	}); err != nil {
		return err
	}
	r.pods = podInformer.Lister()
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), podInformer.Informer().HasSynced) {
		return ctx.Err()
	}
	if err := r.restoreDevices(); err != nil {
		return err
	}
	if err := r.reconcile(); err != nil {
		return err
	}
	var wg sync.WaitGroup
	wg.Go(func() { r.watchNetwork(ctx) })
	wg.Go(func() { r.gcLoop(ctx) })
	if r.cfg.Schedule != nil {
		wg.Go(func() { r.schedule(ctx) })
	}
	for range 4 {
		wg.Go(func() {
			for r.processNext(ctx) {
			}
		})
	}
	if r.cfg.Ready != nil {
		r.cfg.Ready()
	}
	r.log.Info("pod runtime running")
	<-ctx.Done()
	r.queue.ShutDown()
	wg.Wait()
	return nil
}

// schedule runs the scheduler once Config.Schedule says this runtime should, until the
// context ends.
func (r *Runtime) schedule(ctx context.Context) {
	for !r.cfg.Schedule() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	r.log.Info("scheduling unscheduled pods")
	if err := runScheduler(ctx, r.cfg.Client, r.log); err != nil && ctx.Err() == nil {
		r.log.Error("scheduler stopped", "err", err)
	}
}

func (r *Runtime) enqueue(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err == nil {
		r.queue.Add(key)
	}
}

// reconcile queues every recorded sandbox's pod and every pod of the node, so a restarted
// runtime tears down what is gone and keeps what runs.
func (r *Runtime) reconcile() error {
	sandboxes, err := r.store.List()
	if err != nil {
		return err
	}
	for _, sb := range sandboxes {
		r.queue.Add(sb.Namespace + "/" + sb.Pod)
	}
	pods, err := r.pods.List(everything())
	if err != nil {
		return err
	}
	for _, p := range pods {
		r.enqueue(p)
	}
	r.log.Info("reconciling", "sandboxes", len(sandboxes), "pods", len(pods))
	return nil
}

func (r *Runtime) processNext(ctx context.Context) bool {
	key, quit := r.queue.Get()
	if quit {
		return false
	}
	defer r.queue.Done(key)
	if err := r.sync(ctx, key); err != nil {
		r.log.Warn("pod sync failed, retrying", "pod", key, "err", err)
		r.queue.AddRateLimited(key)
		return true
	}
	r.queue.Forget(key)
	return true
}

// sync brings one pod's sandboxes in line with the pod: sandboxes of a pod that is gone,
// deleted, finished or replaced are torn down; a pod that should run gets one.
func (r *Runtime) sync(ctx context.Context, key string) error {
	namespace, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pod, err := r.pods.Pods(namespace).Get(name)
	if apierrors.IsNotFound(err) {
		pod, err = nil, nil
	}
	if err != nil {
		return err
	}
	if pod != nil && pod.Annotations[UnmanagedAnnotation] == "true" {
		if pod.DeletionTimestamp != nil {
			return r.deletePod(ctx, pod)
		}
		return nil
	}
	sandboxes, err := r.store.ForPod(namespace, name)
	if err != nil {
		return err
	}
	wanted := pod != nil && pod.DeletionTimestamp == nil && !terminal(pod)
	var live *Sandbox
	for _, sb := range sandboxes {
		if wanted && live == nil && sb.UID == pod.UID && sb.Ready && netnsPinned(sb.NetNS) {
			live = &sb
			continue
		}
		if err := r.teardown(ctx, sb); err != nil {
			return err
		}
	}
	switch {
	case pod == nil:
		return nil
	case pod.DeletionTimestamp != nil:
		return r.deletePod(ctx, pod)
	case !wanted:
		return nil
	case live != nil:
		return r.reportRunning(ctx, pod, *live)
	default:
		return r.runSandbox(ctx, pod)
	}
}

func terminal(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded
}

// deletePod finishes a graceful deletion as kubelet does once the pod's sandbox is gone.
func (r *Runtime) deletePod(ctx context.Context, pod *corev1.Pod) error {
	zero := int64(0)
	err := r.cfg.Client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: &zero,
		Preconditions:      &metav1.Preconditions{UID: &pod.UID},
	})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	if err == nil {
		r.log.Info("pod deleted", "namespace", pod.Namespace, "pod", pod.Name)
	}
	return err
}

// updateStatus applies mutate to the pod's latest status, retrying on conflicts; it does
// nothing if the pod is gone or was replaced.
func (r *Runtime) updateStatus(ctx context.Context, pod *corev1.Pod, mutate func(*corev1.Pod) corev1.PodStatus) error {
	pods := r.cfg.Client.CoreV1().Pods(pod.Namespace)
	return retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		latest, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) || (err == nil && latest.UID != pod.UID) {
			return nil
		}
		if err != nil {
			return err
		}
		latest.Status = mutate(latest)
		_, err = pods.UpdateStatus(ctx, latest, metav1.UpdateOptions{})
		return err
	})
}

// gcLoop runs CNI GC at start and then every GCInterval.
func (r *Runtime) gcLoop(ctx context.Context) {
	t := time.NewTicker(r.cfg.GCInterval)
	defer t.Stop()
	for {
		if err := r.gc(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("CNI GC failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// gc calls libcni's GC with every recorded sandbox as a valid attachment.
func (r *Runtime) gc(ctx context.Context) error {
	conf, err := loadNetwork(r.cfg.CNIConfDir)
	if err != nil {
		return nil
	}
	r.gcMu.Lock()
	defer r.gcMu.Unlock()
	sandboxes, err := r.store.List()
	if err != nil {
		return err
	}
	valid := make([]types.GCAttachment, 0, len(sandboxes))
	for _, sb := range sandboxes {
		valid = append(valid, types.GCAttachment{ContainerID: sb.ContainerID, IfName: sb.IfName})
	}
	if err := r.cni.GCNetworkList(ctx, conf, &libcni.GCArgs{ValidAttachments: valid}); err != nil {
		return fmt.Errorf("gc network %s: %w", conf.Name, err)
	}
	r.log.Debug("CNI GC done", "network", conf.Name, "valid", len(valid))
	return nil
}
