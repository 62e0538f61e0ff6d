package podruntime

import (
	"context"
	"errors"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/util/retry"
)

func everything() labels.Selector { return labels.Everything() }

// registerNode creates the node's Node object (or takes over an existing one), retrying
// until the API server answers or the context ends.
func (r *Runtime) registerNode(ctx context.Context) error {
	nodes := r.cfg.Client.CoreV1().Nodes()
	delay := 100 * time.Millisecond
	for {
		_, err := nodes.Create(ctx, nodeObject(r.cfg.NodeName, r.cfg.PodCIDR), metav1.CreateOptions{})
		if err == nil || apierrors.IsAlreadyExists(err) {
			_, netErr := loadNetwork(r.cfg.CNIConfDir)
			if err = r.setNodeStatus(ctx, netErr); err == nil {
				r.log.Info("node registered")
				return nil
			}
		}
		r.log.Debug("register node: waiting for the API server", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 2*time.Second)
	}
}

func (r *Runtime) setNodeStatus(ctx context.Context, networkErr error) error {
	nodes := r.cfg.Client.CoreV1().Nodes()
	return retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		n, err := nodes.Get(ctx, r.cfg.NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n.Status = nodeStatus(r.cfg.NodeName, r.cfg.NodeIP, networkErr, metav1.Now())
		_, err = nodes.UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	})
}

// watchNetwork follows the CNI configuration directory as kubelet's network readiness
// does: the Node is Ready only while a configuration exists, and pods that waited for one
// are queued when it appears.
func (r *Runtime) watchNetwork(ctx context.Context) {
	var last error = errors.New("unknown")
	for {
		_, err := loadNetwork(r.cfg.CNIConfDir)
		if (err == nil) != (last == nil) || (err != nil && last != nil && err.Error() != last.Error()) {
			if setErr := r.setNodeStatus(ctx, err); setErr != nil {
				if ctx.Err() != nil {
					return
				}
				r.log.Warn("update node status", "err", setErr)
			} else {
				r.log.Info("network readiness changed", "ready", err == nil, "err", err)
				last = err
				if err == nil {
					r.queueAll()
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (r *Runtime) queueAll() {
	pods, _ := r.pods.List(everything())
	for _, p := range pods {
		if p.Status.Phase == corev1.PodPending {
			r.enqueue(p)
		}
	}
}
