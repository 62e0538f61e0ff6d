package main

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/loom-cni/loom/e2e/perf"
	"github.com/loom-cni/loom/e2e/sim"
)

// startPods creates the pods (name → node) in namespace, pinned to their nodes, waits until
// they run and returns them as endpoints. Pods left by an earlier run on the same cluster are
// used again. They stay when the benchmark ends, with the cluster, so that their deletion does
// not keep the nodes busy during what is measured next.
func startPods(ctx context.Context, c *sim.Cluster, namespace string, pods map[string]string) (map[string]perf.Endpoint, error) {
	cs := c.Client()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("create namespace %s: %w", namespace, err)
	}
	for name, node := range pods {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
			Spec: corev1.PodSpec{
				NodeName:   node,
				Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}},
			},
		}
		if _, err := cs.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create pod %s/%s on %s: %w", namespace, name, node, err)
		}
	}
	eps := map[string]perf.Endpoint{}
	for name, node := range pods {
		p, err := c.WaitPodRunning(ctx, namespace, name)
		if err != nil {
			return nil, err
		}
		if p.Spec.NodeName != node {
			return nil, fmt.Errorf("pod %s/%s runs on %s, not %s: delete it and run again", namespace, name, p.Spec.NodeName, node)
		}
		ip, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil {
			return nil, fmt.Errorf("pod %s/%s: podIP %q: %w", namespace, name, p.Status.PodIP, err)
		}
		eps[name] = perf.Endpoint{
			Name: namespace + "/" + name,
			IP:   ip,
			Cmd: func(ctx context.Context, argv ...string) (*exec.Cmd, error) {
				return c.PodCmd(ctx, namespace, name, argv...)
			},
		}
	}
	return eps, nil
}

// nodeEndpoint returns the node's own network namespace as an endpoint, at its underlay
// address.
func nodeEndpoint(c *sim.Cluster, n sim.Node) perf.Endpoint {
	return perf.Endpoint{
		Name: n.Name,
		IP:   n.UnderlayIP,
		Cmd: func(ctx context.Context, argv ...string) (*exec.Cmd, error) {
			return c.NodeCmd(ctx, n.Name, argv...)
		},
	}
}

// vethAddrs are the veth pair's addresses. The pair's namespaces are connected to nothing
// else, so the addresses cannot collide with anything.
var vethAddrs = [2]netip.Prefix{netip.MustParsePrefix("10.255.255.1/30"), netip.MustParsePrefix("10.255.255.2/30")}

// newVethPair creates network namespaces prefix+"a" and prefix+"b" joined by a veth pair,
// the baseline every path is compared with, and returns them as endpoints with the function
// that removes them. If it fails, it removes what it made.
func newVethPair(ctx context.Context, prefix string) (a, b perf.Endpoint, remove func(), err error) {
	names := [2]string{prefix + "a", prefix + "b"}
	var made []string
	remove = func() {
		for _, n := range made {
			// A fresh context: removal must happen even when ours was cancelled.
			exec.Command("ip", "netns", "del", n).Run()
		}
	}
	ok := false
	defer func() {
		if !ok {
			remove()
		}
	}()
	ip := func(args ...string) error {
		out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	for _, n := range names {
		if err := ip("netns", "add", n); err != nil {
			return a, b, nil, err
		}
		made = append(made, n)
	}
	if err := ip("-n", names[0], "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", names[1]); err != nil {
		return a, b, nil, err
	}
	var eps [2]perf.Endpoint
	for i, n := range names {
		for _, args := range [][]string{
			{"-n", n, "addr", "add", vethAddrs[i].String(), "dev", "eth0"},
			{"-n", n, "link", "set", "lo", "up"},
			{"-n", n, "link", "set", "eth0", "up"},
		} {
			if err := ip(args...); err != nil {
				return a, b, nil, err
			}
		}
		eps[i] = perf.InNetns(n, filepath.Join("/run/netns", n), vethAddrs[i].Addr())
	}
	ok = true
	return eps[0], eps[1], remove, nil
}
