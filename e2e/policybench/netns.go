package main

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/loom-cni/loom/e2e/perf"
	"github.com/loom-cni/loom/fabric/podnet"
)

// namespaces makes network namespaces named prefix+name and removes every one it made.
type namespaces struct {
	prefix string
	made   []string
}

// add makes the namespace prefix+name with its loopback up and returns its path.
func (n *namespaces) add(ctx context.Context, name string) (string, error) {
	full := n.prefix + name
	if err := ipCmd(ctx, "netns", "add", full); err != nil {
		return "", err
	}
	n.made = append(n.made, full)
	if err := ipCmd(ctx, "-n", full, "link", "set", "lo", "up"); err != nil {
		return "", err
	}
	return filepath.Join("/run/netns", full), nil
}

// removeAll removes every namespace made, and with them their links and processes' sockets.
func (n *namespaces) removeAll() {
	for _, name := range n.made {
		// A fresh context: removal must happen even when the run's was cancelled.
		_ = exec.Command("ip", "netns", "del", name).Run()
	}
	n.made = nil
}

func ipCmd(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// endpoint is a pod of the datapath benchmark: where it is measured from and to, and the path
// of its network namespace, which the TCP probe enters.
type endpoint struct {
	perf.Endpoint
	netns string
}

func nsCmd(ctx context.Context, netns string, argv ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + netns, "--"}, argv...)...)
}

// plugPod gives the pod namespace podNetns its interface on the node namespace nodeNetns
// exactly as Loom's primary network does: a veth whose host end is named after the
// container, a /32 in the pod and a route to it on the node.
func plugPod(nodeNetns, podNetns, containerID string, ip netip.Addr) error {
	return ns.WithNetNSPath(nodeNetns, func(ns.NetNS) error {
		_, err := podnet.Add(podNetns, containerID, "eth0", ip, 1500)
		return err
	})
}
