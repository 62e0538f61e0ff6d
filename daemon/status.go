package daemon

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ktypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/workqueue"
)

// PodKey names one pod; the UID keeps an annotation meant for a pod off another created
// later under the same name.
type PodKey struct {
	Namespace, Name string
	UID             ktypes.UID
}

// Annotator writes pod annotations off the CNI path. ADD hands it the network-status and
// returns: the attachment is done whatever the API server's mood, and the annotation follows
// within milliseconds, or, if the API server is away, once it is back. Only the latest value
// for a pod is written.
type Annotator struct {
	client kubernetes.Interface
	key    string
	queue  workqueue.TypedRateLimitingInterface[PodKey]
	log    *slog.Logger

	mu      sync.Mutex
	pending map[PodKey]string
}

// maxAnnotateRetries bounds the retries for one value (the back-off reaches a minute well
// before): a pod whose API writes fail that long is broken in a way loomd cannot fix.
const maxAnnotateRetries = 20

// NewAnnotator returns an annotator for the annotation key; Run starts its workers.
func NewAnnotator(client kubernetes.Interface, key string, log *slog.Logger) *Annotator {
	limiter := workqueue.NewTypedItemExponentialFailureRateLimiter[PodKey](100*time.Millisecond, time.Minute)
	return &Annotator{
		client:  client,
		key:     key,
		queue:   workqueue.NewTypedRateLimitingQueueWithConfig(limiter, workqueue.TypedRateLimitingQueueConfig[PodKey]{Name: "annotations"}),
		log:     log,
		pending: map[PodKey]string{},
	}
}

// Set queues value for the pod, replacing a value not yet written.
func (a *Annotator) Set(pod PodKey, value string) {
	a.mu.Lock()
	a.pending[pod] = value
	a.mu.Unlock()
	a.queue.Add(pod)
}

// Run writes queued annotations with the given number of workers until ctx ends.
func (a *Annotator) Run(ctx context.Context, workers int) {
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for a.next(ctx) {
			}
		})
	}
	<-ctx.Done()
	a.queue.ShutDown()
	wg.Wait()
}

func (a *Annotator) next(ctx context.Context) bool {
	pod, quit := a.queue.Get()
	if quit {
		return false
	}
	defer a.queue.Done(pod)
	a.mu.Lock()
	value, ok := a.pending[pod]
	a.mu.Unlock()
	if !ok {
		a.queue.Forget(pod)
		return true
	}
	err := a.patch(ctx, pod, value)
	switch {
	case err == nil || gone(err):
		a.done(pod, value)
	case a.queue.NumRequeues(pod) >= maxAnnotateRetries:
		a.log.Error("annotate pod: giving up", "namespace", pod.Namespace, "pod", pod.Name, "error", err)
		a.done(pod, value)
	default:
		a.log.Warn("annotate pod: will retry", "namespace", pod.Namespace, "pod", pod.Name, "error", err)
		a.queue.AddRateLimited(pod)
	}
	return true
}

// done forgets a written value, unless a newer one arrived meanwhile.
func (a *Annotator) done(pod PodKey, value string) {
	a.queue.Forget(pod)
	a.mu.Lock()
	if a.pending[pod] == value {
		delete(a.pending, pod)
	}
	a.mu.Unlock()
}

// patchTimeout bounds one attempt.
const patchTimeout = 10 * time.Second

// patch writes the annotation with a merge patch that carries the pod's UID, so it fails
// rather than annotate another pod of the same name.
func (a *Annotator) patch(ctx context.Context, pod PodKey, value string) error {
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"uid":         pod.UID,
		"annotations": map[string]string{a.key: value},
	}})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, patchTimeout)
	defer cancel()
	_, err = a.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, ktypes.MergePatchType, body, metav1.PatchOptions{})
	return err
}

// gone reports errors after which patching the pod is pointless: it no longer exists, or the
// name now belongs to another pod.
func gone(err error) bool {
	return apierrors.IsNotFound(err) || apierrors.IsConflict(err) || apierrors.IsInvalid(err)
}
