package sim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/loom-cni/loom/e2e/sim/podruntime"
)

// errPodFailed stops a wait for a pod to run once it has failed.
var errPodFailed = errors.New("pod failed")

// WaitPod polls the pod until done says it is there, returns an error, or timeout passes.
// A pod that does not exist yet, or an API server that does not answer, is waited for.
func (c *Cluster) WaitPod(ctx context.Context, namespace, name string, timeout time.Duration, done func(*corev1.Pod) (bool, error)) (*corev1.Pod, error) {
	var last *corev1.Pod
	err := poll(ctx, timeout, func() (bool, error) {
		p, err := c.cs.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = p
		return done(p)
	})
	if err != nil {
		if last != nil {
			return last, fmt.Errorf("pod %s/%s (phase %s, reason %q, message %q): %w",
				namespace, name, last.Status.Phase, last.Status.Reason, last.Status.Message, err)
		}
		return nil, fmt.Errorf("pod %s/%s: %w", namespace, name, err)
	}
	return last, nil
}

// WaitPodRunning waits until the pod is Running with an IP; it fails at once if the pod
// fails.
func (c *Cluster) WaitPodRunning(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	return c.WaitPod(ctx, namespace, name, time.Minute, func(p *corev1.Pod) (bool, error) {
		if p.Status.Phase == corev1.PodFailed {
			return false, errPodFailed
		}
		return p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "", nil
	})
}

// WaitPodFailed waits until the pod has failed.
func (c *Cluster) WaitPodFailed(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	return c.WaitPod(ctx, namespace, name, time.Minute, func(p *corev1.Pod) (bool, error) {
		return p.Status.Phase == corev1.PodFailed, nil
	})
}

// WaitPodGone waits until the pod object no longer exists.
func (c *Cluster) WaitPodGone(ctx context.Context, namespace, name string) error {
	return poll(ctx, time.Minute, func() (bool, error) {
		_, err := c.cs.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
}

// Leftovers lists what a node still holds for pods: sandbox records, pinned pod
// namespaces, libcni cache entries and host-local address reservations of any
// network. After every pod is gone it should be empty.
func (n Node) Leftovers() ([]string, error) {
	var left []string
	sandboxes, err := podruntime.ListSandboxes(n.SandboxDir())
	if err != nil {
		return nil, err
	}
	for _, sb := range sandboxes {
		left = append(left, fmt.Sprintf("sandbox record %s (%s/%s)", sb.ContainerID[:12], sb.Namespace, sb.Pod))
	}
	list := func(dir, what string, keep func(string) bool) {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if keep(e.Name()) {
				left = append(left, what+" "+filepath.Join(dir, e.Name()))
			}
		}
	}
	all := func(string) bool { return true }
	list(n.NetNSDir(), "netns pin", all)
	list(filepath.Join(n.CNIStateDir(), "results"), "libcni cache entry", all)
	networks, _ := os.ReadDir(filepath.Join(n.CNIStateDir(), "networks"))
	for _, network := range networks {
		list(filepath.Join(n.CNIStateDir(), "networks", network.Name()), "host-local reservation", func(name string) bool {
			return name != "lock" && !strings.HasPrefix(name, "last_reserved_ip")
		})
	}
	return left, nil
}
