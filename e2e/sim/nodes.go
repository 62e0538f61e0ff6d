package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NodeStatus is what a node's supervisor reports in DIR/nodes/NAME/status.json.
type NodeStatus struct {
	// SupervisorPID is the supervisor's process id.
	SupervisorPID int `json:"supervisorPID"`
	// RuntimeReady is set once the pod runtime has synced its caches and reconciled the
	// sandboxes it found.
	RuntimeReady bool `json:"runtimeReady"`
	// Loomd is the state of the node's loomd.
	Loomd LoomdStatus `json:"loomd"`
}

// LoomdStatus is the state of a node's loomd.
type LoomdStatus struct {
	// State is one of starting, ready, exited (it will be restarted) and held (it stays
	// down until the hold file goes).
	State    string    `json:"state"`
	PID      int       `json:"pid,omitempty"`
	Since    time.Time `json:"since"`
	Restarts int       `json:"restarts"`
	// Message says why loomd last exited.
	Message string `json:"message,omitempty"`
}

// Loomd states.
const (
	LoomdStarting = "starting"
	LoomdReady    = "ready"
	LoomdExited   = "exited"
	LoomdHeld     = "held"
)

func readNodeStatus(n Node) (NodeStatus, error) {
	var st NodeStatus
	b, err := os.ReadFile(n.statusFile())
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(b, &st)
}

// NodeStatus reads what the node's supervisor last reported.
func (c *Cluster) NodeStatus(node string) (NodeStatus, error) {
	n, err := c.Node(node)
	if err != nil {
		return NodeStatus{}, err
	}
	return readNodeStatus(n)
}

// startSupervisor starts the node's supervisor inside the node's network namespace and its
// persistent mount namespace, creating (and pinning) the latter the first time.
func (c *Cluster) startSupervisor(n Node) error {
	o := c.st.Options
	pin := c.slot.nsPin(n.Name)
	if !isNamespacePin(pin) {
		if err := os.WriteFile(pin, nil, 0o444); err != nil {
			return err
		}
		out, err := exec.Command(o.Unshare, "--mount="+pin, "--propagation=slave", "true").CombinedOutput()
		if err != nil {
			return fmt.Errorf("create the mount namespace of %s: %s: %w", n.Name, strings.TrimSpace(string(out)), err)
		}
	}
	argv := append([]string{o.Nsenter, "--mount=" + pin, "--net=" + filepath.Join("/run/netns", n.NetNS), "--"},
		o.SupervisorCommand...)
	argv = append(argv, "--dir", c.l.dir, "--node", n.Name)
	if err := os.MkdirAll(n.Dir, 0o755); err != nil {
		return err
	}
	_, err := startDetached(argv, os.Environ(), filepath.Join(n.Dir, "supervisor.log"), c.slot.pidFile("node-"+n.Name))
	return err
}

// StopSupervisor kills the node's supervisor as a crash would; loomd dies with it. The
// node's namespaces, pods and sandbox records stay.
func (c *Cluster) StopSupervisor(node string) error {
	if _, err := c.Node(node); err != nil {
		return err
	}
	ref, err := readPidFile(c.slot.pidFile("node-" + node))
	if err != nil {
		return fmt.Errorf("stop the supervisor of %s: %w", node, err)
	}
	ref.signal(syscall.SIGKILL)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return waitGone(ctx, []procRef{ref})
}

// StartSupervisor starts the node's supervisor again and waits until its pod runtime has
// reconciled and loomd is ready.
func (c *Cluster) StartSupervisor(ctx context.Context, node string) error {
	n, err := c.Node(node)
	if err != nil {
		return err
	}
	if ref, err := readPidFile(c.slot.pidFile("node-" + node)); err == nil && ref.alive() {
		return fmt.Errorf("start the supervisor of %s: it runs (pid %d)", node, ref.PID)
	}
	if err := os.Remove(n.statusFile()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := c.startSupervisor(n); err != nil {
		return err
	}
	return c.waitNodeStatus(ctx, n, 30*time.Second, func(st NodeStatus) bool {
		return st.RuntimeReady && st.Loomd.State == LoomdReady
	})
}

// StopLoomd stops the node's loomd and holds it down until StartLoomd.
func (c *Cluster) StopLoomd(node string) error {
	n, err := c.Node(node)
	if err != nil {
		return err
	}
	if err = os.WriteFile(n.holdFile(), nil, 0o644); err != nil {
		return err
	}
	st, err := readNodeStatus(n)
	if err != nil {
		return fmt.Errorf("stop loomd on %s: %w", node, err)
	}
	if st.Loomd.PID > 0 {
		if ref, err := refOf(st.Loomd.PID); err == nil {
			if err := stopProcs(context.Background(), []procRef{ref}, 5*time.Second); err != nil {
				return fmt.Errorf("stop loomd on %s: %w", node, err)
			}
		}
	}
	return c.waitNodeStatus(context.Background(), n, 10*time.Second, func(st NodeStatus) bool {
		return st.Loomd.State == LoomdHeld
	})
}

// StartLoomd lets the node's supervisor start loomd again and waits until it is ready.
func (c *Cluster) StartLoomd(ctx context.Context, node string) error {
	n, err := c.Node(node)
	if err != nil {
		return err
	}
	if err := os.Remove(n.holdFile()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return c.waitNodeStatus(ctx, n, 30*time.Second, func(st NodeStatus) bool {
		return st.Loomd.State == LoomdReady
	})
}

func (c *Cluster) waitNodeStatus(ctx context.Context, n Node, timeout time.Duration, ok func(NodeStatus) bool) error {
	var last NodeStatus
	err := poll(ctx, timeout, func() (bool, error) {
		st, err := readNodeStatus(n)
		if err != nil {
			return false, nil
		}
		last = st
		return ok(st), nil
	})
	if err != nil {
		return fmt.Errorf("%s: supervisor reports runtimeReady=%v loomd=%s (%s): see %s: %w",
			n.Name, last.RuntimeReady, last.Loomd.State, last.Loomd.Message, n.Dir, err)
	}
	return nil
}

// waitNodesReady waits until every node's pod runtime runs, and the node has a CNI
// configuration and is Ready in the API.
func (c *Cluster) waitNodesReady(ctx context.Context) error {
	for _, n := range c.st.Nodes {
		err := poll(ctx, 60*time.Second, func() (bool, error) {
			if ref, err := readPidFile(c.slot.pidFile("node-" + n.Name)); err == nil && !ref.alive() {
				return false, fmt.Errorf("its supervisor exited: %s", lastLine(filepath.Join(n.Dir, "supervisor.log")))
			}
			if st, err := readNodeStatus(n); err != nil || !st.RuntimeReady || !hasCNIConfig(n.HostPath("/etc/cni/net.d")) {
				return false, nil
			}
			node, err := c.cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			for _, cond := range node.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			st, _ := readNodeStatus(n)
			return fmt.Errorf("%s not ready (loomd %s: %s): see %s/supervisor.log and loomd.log: %w",
				n.Name, st.Loomd.State, st.Loomd.Message, n.Dir, err)
		}
		c.p.printf("%s ready: pod runtime running, CNI configuration in place, Node Ready", n.Name)
	}
	return nil
}

// hasCNIConfig says whether a CNI configuration directory holds a configuration file.
func hasCNIConfig(dir string) bool {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		switch filepath.Ext(e.Name()) {
		case ".conf", ".conflist", ".json":
			if !e.IsDir() {
				return true
			}
		}
	}
	return false
}

// lastLine returns the last line of a log file, for error messages.
func lastLine(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}
