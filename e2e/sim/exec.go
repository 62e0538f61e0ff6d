package sim

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"

	"github.com/loom-cni/loom/e2e/sim/podruntime"
)

// PodSandbox returns the running sandbox of a pod and the node it runs on, read from the
// nodes' sandbox records (so it works while the API server is down).
func (c *Cluster) PodSandbox(namespace, pod string) (podruntime.Sandbox, Node, error) {
	var found podruntime.Sandbox
	var on Node
	for _, n := range c.st.Nodes {
		sandboxes, err := podruntime.ListSandboxes(n.SandboxDir())
		if err != nil {
			return found, on, err
		}
		for _, sb := range sandboxes {
			if sb.Namespace == namespace && sb.Pod == pod && sb.Ready && sb.Created.After(found.Created) {
				found, on = sb, n
			}
		}
	}
	if on.Name == "" {
		return found, on, fmt.Errorf("pod %s/%s has no running sandbox on any node", namespace, pod)
	}
	return found, on, nil
}

// PodCmd returns a command that runs argv in the pod's network namespace (and its node's
// mount namespace); the caller wires its input and output and runs it.
func (c *Cluster) PodCmd(ctx context.Context, namespace, pod string, argv ...string) (*exec.Cmd, error) {
	sb, n, err := c.PodSandbox(namespace, pod)
	if err != nil {
		return nil, err
	}
	// nsenter opens every namespace file before entering any: the pod's pin exists only
	// inside the node's mount namespace, so a second nsenter opens it from there.
	o := c.st.Options
	args := append([]string{"--mount=" + c.slot.nsPin(n.Name), "--", o.Nsenter, "--net=" + sb.NetNS, "--"}, argv...)
	return exec.CommandContext(ctx, o.Nsenter, args...), nil
}

// NodeCmd returns a command that runs argv in the node's network and mount namespaces, where
// it sees the node's /etc/cni/net.d, /var/lib/cni, /run/netns….
func (c *Cluster) NodeCmd(ctx context.Context, node string, argv ...string) (*exec.Cmd, error) {
	n, err := c.Node(node)
	if err != nil {
		return nil, err
	}
	o := c.st.Options
	args := append([]string{"--mount=" + c.slot.nsPin(n.Name), "--net=" + filepath.Join("/run/netns", n.NetNS), "--"}, argv...)
	return exec.CommandContext(ctx, o.Nsenter, args...), nil
}

// PodExec runs argv in the pod's network namespace and returns its combined output.
func (c *Cluster) PodExec(ctx context.Context, namespace, pod string, argv ...string) (string, error) {
	cmd, err := c.PodCmd(ctx, namespace, pod, argv...)
	if err != nil {
		return "", err
	}
	return run(cmd, fmt.Sprintf("in pod %s/%s", namespace, pod))
}

// NodeExec runs argv in the node's namespaces and returns its combined output.
func (c *Cluster) NodeExec(ctx context.Context, node string, argv ...string) (string, error) {
	cmd, err := c.NodeCmd(ctx, node, argv...)
	if err != nil {
		return "", err
	}
	return run(cmd, "on node "+node)
}

func run(cmd *exec.Cmd, where string) (string, error) {
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%v %s: %w: %s", cmd.Args[len(cmd.Args)-countArgs(cmd.Args):], where, err, out)
	}
	return string(out), nil
}

// countArgs counts the arguments after the last "--", the command the caller asked for.
func countArgs(args []string) int {
	for i := len(args) - 1; i >= 0; i-- {
		if args[i] == "--" {
			return len(args) - i - 1
		}
	}
	return len(args)
}
