package podruntime

import (
	"context"
	"errors"
	"maps"
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

// nodeDevices are the device plugin resources a Node reports.
type nodeDevices struct{ capacity, allocatable map[string]int }

func (d nodeDevices) equal(o nodeDevices) bool {
	return maps.Equal(d.capacity, o.capacity) && maps.Equal(d.allocatable, o.allocatable)
}

// devices reads the device manager's counts.
func (r *Runtime) devices() nodeDevices {
	if r.cfg.Devices == nil {
		return nodeDevices{}
	}
	c, a := r.cfg.Devices.Capacity()
	return nodeDevices{c, a}
}

func (r *Runtime) setNodeStatus(ctx context.Context, networkErr error) error {
	nodes := r.cfg.Client.CoreV1().Nodes()
	devices := r.devices()
	return retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		n, err := nodes.Get(ctx, r.cfg.NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n.Status = nodeStatus(r.cfg.NodeName, r.cfg.NodeIP, networkErr, devices, metav1.Now())
		_, err = nodes.UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	})
}

// watchNetwork follows the CNI configuration directory as kubelet's network readiness
// does: the Node is Ready only while a configuration exists, and pods that waited for one
// are queued when it appears. It also keeps the Node's capacity of device plugin resources
// current, as the kubelet's device manager does.
func (r *Runtime) watchNetwork(ctx context.Context) {
	var last error = errors.New("unknown")
	var lastDevices nodeDevices
	for {
		_, err := loadNetwork(r.cfg.CNIConfDir)
		devices := r.devices()
		if (err == nil) != (last == nil) || (err != nil && last != nil && err.Error() != last.Error()) || !devices.equal(lastDevices) {
			if setErr := r.setNodeStatus(ctx, err); setErr != nil {
				if ctx.Err() != nil {
					return
				}
				r.log.Warn("update node status", "err", setErr)
			} else {
				r.log.Info("node status changed", "networkReady", err == nil, "err", err, "devices", devices.allocatable)
				last, lastDevices = err, devices
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
