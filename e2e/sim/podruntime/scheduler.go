package podruntime

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// scheduler binds pods created without spec.nodeName to Ready nodes in turn, honouring
// spec.nodeSelector, through the pods/binding subresource as kube-scheduler does.
type scheduler struct {
	client kubernetes.Interface
	log    *slog.Logger
	pods   corelisters.PodLister
	nodes  corelisters.NodeLister
	queue  workqueue.TypedRateLimitingInterface[string]
	mu     sync.Mutex
	next   int
}

func runScheduler(ctx context.Context, client kubernetes.Interface, log *slog.Logger) error {
	s := &scheduler{
		client: client,
		log:    log.With("component", "scheduler"),
		queue: workqueue.NewTypedRateLimitingQueue(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](200*time.Millisecond, 5*time.Second)),
	}
	defer s.queue.ShutDown()
	unscheduled := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", "").String()
		}))
	podInformer := unscheduled.Core().V1().Pods()
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    s.enqueue,
		UpdateFunc: func(_, obj any) { s.enqueue(obj) },
	}
	if _, err := podInformer.Informer().AddEventHandler(handler); err != nil {
		return err
	}
	all := informers.NewSharedInformerFactory(client, 0)
	nodeInformer := all.Core().V1().Nodes()
	s.pods, s.nodes = podInformer.Lister(), nodeInformer.Lister()
	unscheduled.Start(ctx.Done())
	all.Start(ctx.Done())
	defer unscheduled.Shutdown()
	defer all.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), podInformer.Informer().HasSynced, nodeInformer.Informer().HasSynced) {
		return ctx.Err()
	}
	go func() {
		<-ctx.Done()
		s.queue.ShutDown()
	}()
	for {
		key, quit := s.queue.Get()
		if quit {
			return nil
		}
		if err := s.schedule(ctx, key); err != nil {
			s.log.Warn("schedule pod, retrying", "pod", key, "err", err)
			s.queue.AddRateLimited(key)
		} else {
			s.queue.Forget(key)
		}
		s.queue.Done(key)
	}
}

func (s *scheduler) enqueue(obj any) {
	if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
		s.queue.Add(key)
	}
}

func (s *scheduler) schedule(ctx context.Context, key string) error {
	namespace, name, _ := cache.SplitMetaNamespaceKey(key)
	pod, err := s.pods.Pods(namespace).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if pod.Spec.NodeName != "" || pod.DeletionTimestamp != nil || terminal(pod) {
		return nil
	}
	node, err := s.pick(pod)
	if err != nil {
		return err
	}
	binding := &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: node},
	}
	err = s.client.CoreV1().Pods(pod.Namespace).Bind(ctx, binding, metav1.CreateOptions{})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil
	}
	if err == nil {
		s.log.Info("pod bound", "namespace", pod.Namespace, "pod", pod.Name, "boundTo", node)
	}
	return err
}

// pick returns the next Ready node, in name order, whose labels match the pod's node
// selector.
func (s *scheduler) pick(pod *corev1.Pod) (string, error) {
	nodes, err := s.nodes.List(labels.Everything())
	if err != nil {
		return "", err
	}
	selector := labels.SelectorFromSet(pod.Spec.NodeSelector)
	var fit []string
	for _, n := range nodes {
		if nodeReady(n) && selector.Matches(labels.Set(n.Labels)) {
			fit = append(fit, n.Name)
		}
	}
	if len(fit) == 0 {
		return "", fmt.Errorf("0/%d nodes are available: no Ready node matches the pod's node selector", len(nodes))
	}
	sort.Strings(fit)
	s.mu.Lock()
	defer s.mu.Unlock()
	n := fit[s.next%len(fit)]
	s.next++
	return n, nil
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
